#include "tests/rdma_env.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace demi::testing {

namespace {

// True if an interface of this host has the IPv4 address `address`.
bool IsLocal(in_addr address) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i != nullptr && !found; i = i->ifa_next) {
    if (i->ifa_addr != nullptr && i->ifa_addr->sa_family == AF_INET) {
      found = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr ==
              address.s_addr;
    }
  }
  freeifaddrs(list);
  return found;
}

}  // namespace

absl::StatusOr<sockaddr_in> RdmaTestAddress(uint16_t port) {
  const char* text = std::getenv("DEMI_RDMA_ADDR");
  const bool set = text != nullptr && *text != '\0';
  if (!set) text = kDefaultRdmaTestAddress;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (inet_pton(AF_INET, text, &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("DEMI_RDMA_ADDR is not an IPv4 address: ", text));
  }
  if (!set && !IsLocal(address.sin_addr)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "DEMI_RDMA_ADDR is not set and its default, ", kDefaultRdmaTestAddress,
        " (the Soft-RoCE guest's), is on no interface here: run RDMA tests "
        "with tools/rdma_test (plain bazel test skips them), or set "
        "DEMI_RDMA_ADDR to the IPv4 address of an RDMA-capable interface"));
  }
  return address;
}

sockaddr_in NextTestAddress() {
  // A window of 100 ports per process id (20000 to 64999). A process that
  // takes more reaches into the next window; the binds of the test library
  // take the next port when one is in use (libos_test_util.cc).
  static std::atomic<uint16_t> next_port{
      static_cast<uint16_t>(20000 + (getpid() % 450) * 100)};
  absl::StatusOr<sockaddr_in> base = RdmaTestAddress(0);
  EXPECT_TRUE(base.ok()) << base.status();
  sockaddr_in address = base.ok() ? *base : sockaddr_in{};
  address.sin_port = htons(next_port.fetch_add(1));
  return address;
}

std::string RdmaTestDevice() {
  const char* name = std::getenv("DEMI_RDMA_DEVICE");
  return name == nullptr ? "" : name;
}

}  // namespace demi::testing
