#include "tests/rdma_env.h"

#include <arpa/inet.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demi::testing {

absl::StatusOr<sockaddr_in> RdmaTestAddress(uint16_t port) {
  const char* text = std::getenv("DEMI_RDMA_ADDR");
  if (text == nullptr || *text == '\0') {
    return absl::FailedPreconditionError(
        "DEMI_RDMA_ADDR is not set: run RDMA tests through tools/softroce/run "
        "or set it to the IPv4 address of an RDMA-capable interface");
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (inet_pton(AF_INET, text, &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("DEMI_RDMA_ADDR is not an IPv4 address: ", text));
  }
  return address;
}

std::string RdmaTestDevice() {
  const char* name = std::getenv("DEMI_RDMA_DEVICE");
  return name == nullptr ? "" : name;
}

}  // namespace demi::testing
