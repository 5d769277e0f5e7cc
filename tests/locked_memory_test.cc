// The library inside a container's locked-memory limit, on the test device:
// main() lowers RLIMIT_MEMLOCK to 64 MiB and drops CAP_IPC_LOCK (which makes
// the kernel ignore the limit, and which the guest's root has) before
// anything registers memory. Both ends of every connection live in this one
// process, so it pins twice what either end of a real deployment would.
//  - A few connections work with the default settings: eager and rendezvous
//    messages up to 8 MiB from library and application memory, over more
//    application memory than the limit lets stay pinned at once.
//  - A push needing more than the limit fails (ENOMEM), and its connection
//    carries on.
//  - The refused registration's error names the limit and the settings.

#include "rdma/locked_memory.h"

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/device_context.h"
#include "rdma/memory_region.h"
#include "rdma/protection_domain.h"
#include "tests/libos_test_util.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

constexpr size_t kMiB = 1 << 20;
constexpr size_t kLimit = 64 * kMiB;

// Application memory: `bytes` of fresh anonymous pages.
struct AppBuffer {
  explicit AppBuffer(size_t bytes) : size(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~AppBuffer() {
    if (data != nullptr) munmap(data, size);
  }
  AppBuffer(const AppBuffer&) = delete;
  AppBuffer& operator=(const AppBuffer&) = delete;
  uint8_t* data = nullptr;
  size_t size = 0;
};

uint8_t Byte(uint64_t seed, size_t offset) {
  return static_cast<uint8_t>((seed * 131 + offset * 7 + (offset >> 12)) &
                              0xff);
}

// Pushes `bytes` of `buffer` on `client`, pops them on `server` and checks
// every byte; the push's own result must be `push_errno` (0: success).
void Exchange(int client, int server, AppBuffer& buffer, size_t bytes,
              uint64_t seed) {
  for (size_t i = 0; i < bytes; ++i) buffer.data[i] = Byte(seed, i);
  demi_sgarray_t sga{};
  sga.sga_numsegs = 1;
  sga.sga_segs[0].sgaseg_buf = buffer.data;
  sga.sga_segs[0].sgaseg_len = static_cast<uint32_t>(bytes);
  demi_qtoken_t push = 0, pop = 0;
  ASSERT_EQ(demi_push(&push, client, &sga), 0);
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t popped = WaitResult(pop);
  ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP) << "qr_ret " << popped.qr_ret;
  size_t offset = 0;
  for (uint32_t s = 0; s < popped.qr_value.sga.sga_numsegs; ++s) {
    const auto* data =
        static_cast<const uint8_t*>(popped.qr_value.sga.sga_segs[s].sgaseg_buf);
    for (uint32_t i = 0; i < popped.qr_value.sga.sga_segs[s].sgaseg_len; ++i) {
      ASSERT_EQ(data[i], Byte(seed, offset + i)) << "byte " << offset + i;
    }
    offset += popped.qr_value.sga.sga_segs[s].sgaseg_len;
  }
  EXPECT_EQ(offset, bytes);
  EXPECT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
  demi_qresult_t pushed = WaitResult(push);
  EXPECT_EQ(pushed.qr_opcode, DEMI_OPC_PUSH) << "qr_ret " << pushed.qr_ret;
}

class LockedMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }
};

TEST_F(LockedMemoryTest, TheLimitApplies) {
  std::optional<size_t> limit = rdma::LockedMemoryLimit();
  ASSERT_TRUE(limit.has_value())
      << "no locked-memory limit: CAP_IPC_LOCK kept?";
  EXPECT_EQ(*limit, kLimit);
}

TEST_F(LockedMemoryTest, FewConnectionsWorkWithTheDefaults) {
  constexpr int kPairs = 4;
  int clients[kPairs], servers[kPairs], listeners[kPairs];
  for (int p = 0; p < kPairs; ++p) {
    ConnectPair(&clients[p], &servers[p], &listeners[p]);
    if (HasFatalFailure()) return;
  }
  // Library memory: eager and rendezvous, on every connection.
  uint64_t index = 0;
  for (uint32_t size : {64u, 8192u, 1u << 20, 8u << 20}) {
    for (int p = 0; p < kPairs; ++p) {
      demi_qtoken_t push = PushMessage(clients[p], index, size, 1);
      ASSERT_NE(push, 0u);
      demi_qtoken_t pop = 0;
      ASSERT_EQ(demi_pop(&pop, servers[p]), 0);
      demi_qresult_t popped = WaitResult(pop);
      ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP) << "qr_ret " << popped.qr_ret;
      EXPECT_EQ(CheckMessage(popped, index, size, 1), size);
      CompletePush(push);
      ++index;
    }
  }
  // Application memory: twelve 8 MiB buffers (96 MiB, more than the limit),
  // each pushed whole and in part, round the connections.
  std::vector<std::unique_ptr<AppBuffer>> buffers;
  for (int b = 0; b < 12; ++b) {
    buffers.push_back(std::make_unique<AppBuffer>(8 * kMiB));
    ASSERT_NE(buffers.back()->data, nullptr);
  }
  for (int round = 0; round < 2; ++round) {
    for (size_t b = 0; b < buffers.size(); ++b) {
      const int p = static_cast<int>(b % kPairs);
      const size_t bytes = round == 0 ? 8 * kMiB : 4096 + b * 1000;
      SCOPED_TRACE(::testing::Message()
                   << "round " << round << " buffer " << b << " pinned "
                   << rdma::PinnedBytes() << " bytes");
      Exchange(clients[p], servers[p], *buffers[b], bytes, ++index);
      if (HasFatalFailure()) return;
    }
  }
  for (int p = 0; p < kPairs; ++p) {
    CloseQueues({clients[p], servers[p], listeners[p]});
  }
}

TEST_F(LockedMemoryTest, APushPastTheLimitFailsAndTheConnectionCarriesOn) {
  int client = -1, server = -1, listener = -1;
  ConnectPair(&client, &server, &listener);
  if (HasFatalFailure()) return;
  AppBuffer huge(kLimit + 16 * kMiB);
  ASSERT_NE(huge.data, nullptr);
  memset(huge.data, 1, huge.size);
  demi_sgarray_t sga{};
  sga.sga_numsegs = 1;
  sga.sga_segs[0].sgaseg_buf = huge.data;
  sga.sga_segs[0].sgaseg_len = static_cast<uint32_t>(huge.size);
  demi_qtoken_t push = 0;
  const int pushed = demi_push(&push, client, &sga);
  if (pushed == 0) {
    demi_qresult_t result = WaitResult(push);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
    EXPECT_EQ(result.qr_ret, ENOMEM);
  } else {
    EXPECT_EQ(pushed, ENOMEM);
  }
  AppBuffer small(64 * 1024);
  ASSERT_NE(small.data, nullptr);
  Exchange(client, server, small, small.size, 7);
  CloseQueues({client, server, listener});
}

TEST_F(LockedMemoryTest, TheRefusalNamesTheLimitAndTheSettings) {
  absl::StatusOr<rdma::DeviceContext> device =
      rdma::DeviceContext::Open(RdmaTestDevice());
  ASSERT_TRUE(device.ok()) << device.status();
  absl::StatusOr<rdma::ProtectionDomain> pd =
      rdma::ProtectionDomain::Create(device->get());
  ASSERT_TRUE(pd.ok()) << pd.status();
  AppBuffer huge(kLimit + kMiB);
  ASSERT_NE(huge.data, nullptr);
  absl::StatusOr<rdma::MemoryRegion> region = rdma::MemoryRegion::Register(
      pd->get(), huge.data, huge.size, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_FALSE(region.ok());
  const std::string message(region.status().message());
  EXPECT_EQ(ErrnoFromStatus(region.status()), ENOMEM) << message;
  EXPECT_NE(message.find("RLIMIT_MEMLOCK is 67108864 bytes"), std::string::npos)
      << message;
  EXPECT_NE(message.find("DEMI_MR_CACHE_MAX_BYTES"), std::string::npos)
      << message;
}

}  // namespace
}  // namespace demi::testing

// Lowers the limit and gives up CAP_IPC_LOCK for good, then runs the tests.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const rlimit limit{demi::testing::kLimit, demi::testing::kLimit};
  if (setrlimit(RLIMIT_MEMLOCK, &limit) != 0) {
    std::perror("setrlimit(RLIMIT_MEMLOCK)");
    return 1;
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, caps) != 0) {
    std::perror("capget");
    return 1;
  }
  const uint32_t bit = 1u << (CAP_IPC_LOCK % 32);
  caps[CAP_IPC_LOCK / 32].effective &= ~bit;
  caps[CAP_IPC_LOCK / 32].permitted &= ~bit;
  caps[CAP_IPC_LOCK / 32].inheritable &= ~bit;
  if (syscall(SYS_capset, &header, caps) != 0) {
    std::perror("capset");
    return 1;
  }
  return RUN_ALL_TESTS();
}
