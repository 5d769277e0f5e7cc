// Messages above the eager limit end to end on the test device, every byte
// checked: in parts up to the rendezvous threshold, above it by rendezvous
// (the receiver pulls them with RDMA READ). Sizes around both limits up to
// 1 GiB from library and application memory, several segments (crossing the
// parts' boundaries), small and large interleaved in order, a receiver that
// does not pop under a small memory cap, and a peer killed mid-transfer.
//
// Runs as a gtest binary; with --sender/--receiver it is the peer process of
// the peer-death tests, and with DEMI_TEST_CAPPED=1 the child of the cap
// test (each started by the test itself).

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

constexpr size_t kMiB = 1 << 20;
constexpr size_t kEagerLimit = 8192;      // larger: in parts
constexpr size_t kThreshold = 64 * 1024;  // larger: by rendezvous
constexpr timespec kTwoMinutes = {120, 0};

// Memory for one segment: from demi_sgaalloc or from mmap.
struct Buffer {
  bool library = false;
  demi_sgarray_t sga{};
  void* data = nullptr;
  size_t length = 0;

  static Buffer Make(bool library, size_t length) {
    Buffer b;
    b.library = library;
    b.length = length;
    if (library) {
      b.sga = demi_sgaalloc(length);
      b.data = b.sga.sga_numsegs == 1 ? b.sga.sga_segs[0].sgaseg_buf : nullptr;
    } else {
      void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      b.data = p == MAP_FAILED ? nullptr : p;
    }
    return b;
  }
  void Release() {
    if (data == nullptr) return;
    if (library) {
      EXPECT_EQ(demi_sgafree(&sga), 0);
    } else {
      munmap(data, length);
    }
    data = nullptr;
  }
};

demi_qtoken_t PushOne(int qd, const Buffer& buffer) {
  demi_sgarray_t sga{};
  sga.sga_buf = buffer.library ? buffer.sga.sga_buf : nullptr;
  sga.sga_numsegs = 1;
  sga.sga_segs[0] = {buffer.data, static_cast<uint32_t>(buffer.length)};
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, qd, &sga), 0);
  return qt;
}

demi_qresult_t Wait(demi_qtoken_t qt) { return WaitResult(qt, kTwoMinutes); }

// Pops one message and checks it is one segment of `length` bytes of
// pattern `seed`.
void PopAndCheck(int qd, size_t length, uint64_t seed) {
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_pop(&qt, qd), 0);
  demi_qresult_t result = Wait(qt);
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP) << result.qr_ret;
  demi_sgarray_t& sga = result.qr_value.sga;
  ASSERT_EQ(sga.sga_numsegs, 1u);
  ASSERT_EQ(sga.sga_segs[0].sgaseg_len, length);
  EXPECT_EQ(FindPatternMismatch(sga.sga_segs[0].sgaseg_buf, length, seed), -1)
      << length << "-byte message " << seed;
  EXPECT_EQ(demi_sgafree(&sga), 0);
}

class LargeMessageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ConnectPair(&client_, &server_, &listener_));
  }
  void TearDown() override { CloseQueues({client_, server_, listener_}); }

  int client_ = -1, server_ = -1, listener_ = -1;
};

TEST_F(LargeMessageTest, SizesAroundTheThresholdUpToOneGiB) {
  const size_t sizes[] = {kEagerLimit - 1, kEagerLimit, kEagerLimit + 1,
                          kThreshold - 1,  kThreshold,  kThreshold + 1,
                          1 * kMiB,        64 * kMiB,   1024 * kMiB};
  uint64_t seed = 1;
  for (bool library : {true, false}) {
    for (size_t size : sizes) {
      Buffer buffer = Buffer::Make(library, size);
      ASSERT_NE(buffer.data, nullptr) << size << " bytes";
      FillPattern(buffer.data, size, seed);
      const auto start = std::chrono::steady_clock::now();
      demi_qtoken_t push = PushOne(client_, buffer);
      ASSERT_NO_FATAL_FAILURE(PopAndCheck(server_, size, seed));
      demi_qresult_t pushed = Wait(push);
      EXPECT_EQ(pushed.qr_opcode, DEMI_OPC_PUSH) << pushed.qr_ret;
      const double seconds = std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
      std::printf("%s memory, %zu bytes: ok (%.2f s with the check)\n",
                  library ? "library" : "application", size, seconds);
      buffer.Release();
      ++seed;
    }
  }
}

TEST_F(LargeMessageTest, ThreeSegmentsOfFiveMiB) {
  std::vector<Buffer> buffers;
  demi_sgarray_t sga{};
  for (int s = 0; s < 3; ++s) {
    // Mixed: the middle one from the library.
    buffers.push_back(Buffer::Make(s == 1, 5 * kMiB));
    ASSERT_NE(buffers.back().data, nullptr);
    FillPattern(buffers.back().data, 5 * kMiB, 100 + s);
    sga.sga_segs[s] = {buffers.back().data, static_cast<uint32_t>(5 * kMiB)};
  }
  sga.sga_buf = buffers[1].sga.sga_buf;
  sga.sga_numsegs = 3;
  demi_qtoken_t push = 0;
  ASSERT_EQ(demi_push(&push, client_, &sga), 0);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server_), 0);
  demi_qresult_t result = Wait(pop);
  ASSERT_EQ(result.qr_value.sga.sga_numsegs, 3u);
  for (int s = 0; s < 3; ++s) {
    ASSERT_EQ(result.qr_value.sga.sga_segs[s].sgaseg_len, 5 * kMiB);
    EXPECT_EQ(FindPatternMismatch(result.qr_value.sga.sga_segs[s].sgaseg_buf,
                                  5 * kMiB, 100 + s),
              -1)
        << "segment " << s;
  }
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  EXPECT_EQ(Wait(push).qr_opcode, DEMI_OPC_PUSH);
  for (Buffer& b : buffers) b.Release();
}

// Sixteen segments whose boundaries fall inside parts, and parts whose
// boundaries fall inside segments: a message of 16 x 3001 bytes (six parts)
// from library and application memory alternately.
TEST_F(LargeMessageTest, SixteenSegmentsAcrossTheParts) {
  constexpr size_t kSegment = 3001;
  std::vector<Buffer> buffers;
  demi_sgarray_t sga{};
  for (int s = 0; s < 16; ++s) {
    buffers.push_back(Buffer::Make(s == 5, kSegment));
    ASSERT_NE(buffers.back().data, nullptr);
    FillPattern(buffers.back().data, kSegment, 200 + s);
    sga.sga_segs[s] = {buffers.back().data, static_cast<uint32_t>(kSegment)};
  }
  sga.sga_buf = buffers[5].sga.sga_buf;
  sga.sga_numsegs = 16;
  demi_qtoken_t push = 0;
  ASSERT_EQ(demi_push(&push, client_, &sga), 0);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server_), 0);
  demi_qresult_t result = Wait(pop);
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP) << result.qr_ret;
  ASSERT_EQ(result.qr_value.sga.sga_numsegs, 16u);
  for (int s = 0; s < 16; ++s) {
    ASSERT_EQ(result.qr_value.sga.sga_segs[s].sgaseg_len, kSegment);
    EXPECT_EQ(FindPatternMismatch(result.qr_value.sga.sga_segs[s].sgaseg_buf,
                                  kSegment, 200 + s),
              -1)
        << "segment " << s;
  }
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  EXPECT_EQ(Wait(push).qr_opcode, DEMI_OPC_PUSH);
  for (Buffer& b : buffers) b.Release();
}

TEST_F(LargeMessageTest, SmallAndLargeInterleavedArriveInOrder) {
  const size_t pattern[] = {100,        2 * kMiB,       5000,
                            300 * 1024, kThreshold + 1, 1,
                            kThreshold, 3 * kMiB,       20000};
  constexpr int kMessages = 48, kWindow = 16;
  std::vector<Buffer> buffers(kMessages);
  std::vector<demi_qtoken_t> pushes(kMessages);
  int popped = 0;
  for (int i = 0; i < kMessages; ++i) {
    const size_t size = pattern[i % std::size(pattern)];
    buffers[i] = Buffer::Make(i % 3 == 0, size);
    ASSERT_NE(buffers[i].data, nullptr);
    FillPattern(buffers[i].data, size, 1000 + i);
    pushes[i] = PushOne(client_, buffers[i]);
    if (i + 1 - popped == kWindow || i + 1 == kMessages) {
      for (; popped <= i; ++popped) {
        ASSERT_NO_FATAL_FAILURE(PopAndCheck(
            server_, pattern[popped % std::size(pattern)], 1000 + popped));
        EXPECT_EQ(Wait(pushes[popped]).qr_opcode, DEMI_OPC_PUSH);
        buffers[popped].Release();
      }
    }
  }
  std::printf("interleaved: %d messages in order\n", kMessages);
}

// Started by ReceiverThatDoesNotPopStaysUnderTheCap in a child process with a
// pool cap of 8 MiB: eight 2 MiB pushes; while the server does not pop, at
// most four can have been pulled (their pushes completed), the others wait;
// popping lets them all through.
void RunCappedReceiver(int client, int server) {
  constexpr int kPushes = 8;
  std::vector<Buffer> buffers(kPushes);
  std::vector<demi_qtoken_t> pushes(kPushes);
  for (int i = 0; i < kPushes; ++i) {
    buffers[i] = Buffer::Make(false, 2 * kMiB);
    FillPattern(buffers[i].data, 2 * kMiB, 500 + i);
    pushes[i] = PushOne(client, buffers[i]);
  }
  // Drive progress for a while without popping.
  int completed = 0;
  std::vector<bool> done(kPushes, false);
  const timespec slice = {0, 100 * 1000 * 1000};
  for (int round = 0; round < 30; ++round) {
    for (int i = 0; i < kPushes; ++i) {
      if (done[i]) continue;
      demi_qresult_t result{};
      const int rc = demi_wait(&result, pushes[i], &slice);
      if (rc == 0) {
        EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH);
        done[i] = true;
        ++completed;
      } else {
        EXPECT_EQ(rc, ETIMEDOUT);
      }
    }
  }
  std::printf("capped: %d of %d pushes pulled while the receiver waits\n",
              completed, kPushes);
  EXPECT_GE(completed, 1);
  EXPECT_LE(completed, 4) << "more received than the 8 MiB cap holds";
  for (int i = 0; i < kPushes; ++i) {
    ASSERT_NO_FATAL_FAILURE(PopAndCheck(server, 2 * kMiB, 500 + i));
  }
  for (int i = 0; i < kPushes; ++i) {
    if (!done[i]) {
      EXPECT_EQ(Wait(pushes[i]).qr_opcode, DEMI_OPC_PUSH);
    }
    buffers[i].Release();
  }
}

// Then, under the same cap: four 2 MiB messages popped and kept take all of
// it; eight messages in parts (48 KiB: six parts each, each pushed on an
// idle connection, so in parts) arrive with no memory to go to: their
// buffers are held and none can be popped. Freeing the four lets every one
// through, each byte in place.
void RunCappedParts(int client, int server) {
  std::vector<Buffer> large(4);
  std::vector<demi_sgarray_t> kept;
  for (size_t i = 0; i < large.size(); ++i) {
    large[i] = Buffer::Make(false, 2 * kMiB);  // the cap is the receiver's
    ASSERT_NE(large[i].data, nullptr);
    FillPattern(large[i].data, 2 * kMiB, 700 + i);
    demi_qtoken_t push = PushOne(client, large[i]);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    demi_qresult_t popped = Wait(pop);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP) << popped.qr_ret;
    EXPECT_EQ(FindPatternMismatch(popped.qr_value.sga.sga_segs[0].sgaseg_buf,
                                  2 * kMiB, 700 + i),
              -1);
    kept.push_back(popped.qr_value.sga);
    EXPECT_EQ(Wait(push).qr_opcode, DEMI_OPC_PUSH);
  }
  constexpr size_t kParts = 48 * 1024;
  std::vector<Buffer> small(8);
  for (size_t i = 0; i < small.size(); ++i) {
    small[i] = Buffer::Make(false, kParts);
    ASSERT_NE(small[i].data, nullptr);
    FillPattern(small[i].data, kParts, 800 + i);
    // Done once its parts are at the peer's device, memory or not.
    EXPECT_EQ(Wait(PushOne(client, small[i])).qr_opcode, DEMI_OPC_PUSH);
  }
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t early{};
  const timespec moment = {0, 300 * 1000 * 1000};
  EXPECT_EQ(demi_wait(&early, pop, &moment), ETIMEDOUT)
      << "a message in parts was complete with no memory for it";
  for (demi_sgarray_t& sga : kept) EXPECT_EQ(demi_sgafree(&sga), 0);
  demi_qresult_t first = Wait(pop);
  ASSERT_EQ(first.qr_opcode, DEMI_OPC_POP) << first.qr_ret;
  ASSERT_EQ(first.qr_value.sga.sga_segs[0].sgaseg_len, kParts);
  EXPECT_EQ(FindPatternMismatch(first.qr_value.sga.sga_segs[0].sgaseg_buf,
                                kParts, 800),
            -1);
  EXPECT_EQ(demi_sgafree(&first.qr_value.sga), 0);
  for (size_t i = 1; i < small.size(); ++i) {
    ASSERT_NO_FATAL_FAILURE(PopAndCheck(server, kParts, 800 + i));
  }
  for (Buffer& b : large) b.Release();
  for (Buffer& b : small) b.Release();
}

TEST_F(LargeMessageTest, ReceiverThatDoesNotPopStaysUnderTheCap) {
  if (getenv("DEMI_TEST_CAPPED") != nullptr) {
    RunCappedReceiver(client_, server_);
    RunCappedParts(client_, server_);
    return;
  }
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("DEMI_TEST_CAPPED", "1", 1);
    setenv("DEMI_LARGE_POOL_MAX_BYTES", std::to_string(8 * kMiB).c_str(), 1);
    setenv("GTEST_FILTER",
           "LargeMessageTest.ReceiverThatDoesNotPopStaysUnderTheCap", 1);
    execl("/proc/self/exe", "large_message_test", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the capped run failed (see above)";
}

// The peer processes of the peer-death tests. Writes a byte to `ready_fd`
// once its push or pop is under way.
int RunPeer(bool sender, uint16_t port, int ready_fd) {
  absl::StatusOr<sockaddr_in> address = RdmaTestAddress(port);
  if (!address.ok() || demi_init(nullptr) != 0) return 11;
  int qd = -1;
  demi_qtoken_t qt = 0;
  if (demi_socket(&qd, AF_INET, SOCK_STREAM, 0) != 0) return 12;
  if (demi_connect(&qt, qd, reinterpret_cast<const sockaddr*>(&*address),
                   sizeof(*address)) != 0) {
    return 13;
  }
  demi_qresult_t result{};
  if (demi_wait(&result, qt, &kTenSeconds) != 0 ||
      result.qr_opcode != DEMI_OPC_CONNECT) {
    return 14;
  }
  if (sender) {
    Buffer buffer = Buffer::Make(false, 64 * kMiB);
    FillPattern(buffer.data, 64 * kMiB, 7);
    qt = PushOne(qd, buffer);
  } else if (demi_pop(&qt, qd) != 0) {
    return 15;
  }
  if (write(ready_fd, "x", 1) != 1) return 16;
  for (;;) demi_wait(&result, qt, nullptr);  // until SIGKILL
}

// Starts this binary as the peer, accepts its connection and returns it;
// *ready_fd becomes readable when the peer's push or pop is under way.
pid_t StartPeer(bool sender, int listener, uint16_t port, int* qd,
                int* ready_fd) {
  int ready[2];
  EXPECT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    execl("/proc/self/exe", "large_message_test",
          sender ? "--sender" : "--receiver", std::to_string(port).c_str(),
          std::to_string(ready[1]).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(ready[1]);
  *ready_fd = ready[0];
  demi_qtoken_t accept = 0;
  EXPECT_EQ(demi_accept(&accept, listener), 0);
  demi_qresult_t accepted = WaitResult(accept);
  EXPECT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT);
  *qd = accepted.qr_value.ares.qd;
  return child;
}

TEST_F(LargeMessageTest, SenderKilledWithA64MiBTransferAnnounced) {
  sockaddr_in address;
  const int listener = ListenOnTestAddress(&address);
  int qd = -1, ready = -1;
  const pid_t child =
      StartPeer(true, listener, ntohs(address.sin_port), &qd, &ready);
  ASSERT_GT(child, 0);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, qd), 0);
  char byte;
  ASSERT_EQ(read(ready, &byte, 1), 1);  // the 64 MiB push is announced
  close(ready);
  // Killed before this side pulled it (rxe pulls 64 MiB in well under a
  // second, so waiting first would race the kill): the pulls that follow
  // find no peer.
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  demi_qresult_t result = WaitResult(pop);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNRESET);
  CloseQueues({qd, listener});
  // This process still moves large messages.
  Buffer buffer = Buffer::Make(false, kMiB);
  FillPattern(buffer.data, kMiB, 9);
  demi_qtoken_t push = PushOne(client_, buffer);
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(server_, kMiB, 9));
  EXPECT_EQ(Wait(push).qr_opcode, DEMI_OPC_PUSH);
  buffer.Release();
}

TEST_F(LargeMessageTest, ReceiverKilledDuringA64MiBTransfer) {
  sockaddr_in address;
  const int listener = ListenOnTestAddress(&address);
  int qd = -1, ready = -1;
  const pid_t child =
      StartPeer(false, listener, ntohs(address.sin_port), &qd, &ready);
  ASSERT_GT(child, 0);
  char byte;
  ASSERT_EQ(read(ready, &byte, 1), 1);  // the peer's pop is pending
  close(ready);
  Buffer buffer = Buffer::Make(false, 64 * kMiB);
  FillPattern(buffer.data, 64 * kMiB, 8);
  demi_qtoken_t push = PushOne(qd, buffer);
  // One round of progress sends the announcement; the peer is killed while
  // it takes memory for the message or pulls it.
  demi_qresult_t result{};
  const timespec zero = {0, 0};
  EXPECT_EQ(demi_wait(&result, push, &zero), ETIMEDOUT);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  result = WaitResult(push);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNRESET);
  buffer.Release();
  CloseQueues({qd, listener});
}

}  // namespace
}  // namespace demi::testing

int main(int argc, char** argv) {
  if (argc == 4 && (std::string(argv[1]) == "--sender" ||
                    std::string(argv[1]) == "--receiver")) {
    return demi::testing::RunPeer(std::string(argv[1]) == "--sender",
                                  static_cast<uint16_t>(atoi(argv[2])),
                                  atoi(argv[3]));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
