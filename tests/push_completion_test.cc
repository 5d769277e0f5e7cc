// When pushes complete, on the test device: a push whose bytes go inline in
// the work request (small messages) completes as demi_push returns, since
// the device holds a copy; its memory may be rewritten or freed at once and
// the peer still gets the bytes as pushed. Library and application memory.

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"

namespace demi::testing {
namespace {

uint8_t Byte(uint64_t index, size_t offset) {
  return static_cast<uint8_t>(index * 29 + offset * 3 + 1);
}

class PushCompletionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }
};

// Pops message `index` (64 bytes) on `qd` and checks its bytes.
void ExpectMessage(int qd, uint64_t index, uint32_t size) {
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_pop(&qt, qd), 0);
  demi_qresult_t result = WaitResult(qt);
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
  ASSERT_EQ(result.qr_value.sga.sga_numsegs, 1u);
  ASSERT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_len, size);
  auto* data =
      static_cast<const uint8_t*>(result.qr_value.sga.sga_segs[0].sgaseg_buf);
  for (uint32_t j = 0; j < size; ++j) {
    ASSERT_EQ(data[j], Byte(index, j)) << "message " << index << " byte " << j;
  }
  ASSERT_EQ(demi_sgafree(&result.qr_value.sga), 0);
}

TEST_F(PushCompletionTest, SmallPushesCompleteAtOnceAndKeepTheirBytes) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  constexpr int kPushes = 100;
  int at_once = 0;
  std::vector<uint8_t> application(64);
  for (int i = 0; i < kPushes; ++i) {
    const bool library = i % 2 == 0;
    demi_sgarray_t sga{};
    if (library) {
      sga = demi_sgaalloc(64);
      ASSERT_EQ(sga.sga_numsegs, 1u);
    } else {
      sga.sga_numsegs = 1;
      sga.sga_segs[0].sgaseg_buf = application.data();
      sga.sga_segs[0].sgaseg_len = 64;
    }
    auto* data = static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf);
    for (int j = 0; j < 64; ++j) data[j] = Byte(i, j);
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_push(&qt, client, &sga), 0);
    demi_qresult_t result{};
    // Done before any progress: the wait's first look finds it.
    int rc = demi_wait(&result, qt, &kZero);
    if (rc == 0) {
      ++at_once;
      EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH);
      EXPECT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_buf, data);
    } else {
      ASSERT_EQ(rc, ETIMEDOUT);
      result = WaitResult(qt);
      ASSERT_EQ(result.qr_opcode, DEMI_OPC_PUSH);
    }
    // The memory is the application's again: rewrite it, free it.
    std::memset(data, 0xee, 64);
    if (library) {
      ASSERT_EQ(demi_sgafree(&sga), 0);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectMessage(server, i, 64));
  }
  EXPECT_GE(at_once, kPushes * 9 / 10);
  printf("small pushes done when demi_push returned: %d of %d\n", at_once,
         kPushes);
  CloseQueues({client, server, listener});
}

// A burst larger than the peer's receive buffers: the pushes without a
// credit wait (pending) and complete when the peer frees buffers; nothing is
// lost or reordered.
TEST_F(PushCompletionTest, BurstBeyondCreditsCompletesInOrder) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  constexpr int kPushes = 120;
  std::vector<demi_qtoken_t> tokens;
  for (int i = 0; i < kPushes; ++i) {
    demi_sgarray_t sga = demi_sgaalloc(64);
    ASSERT_EQ(sga.sga_numsegs, 1u);
    auto* data = static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf);
    for (int j = 0; j < 64; ++j) data[j] = Byte(i, j);
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_push(&qt, client, &sga), 0) << i;
    tokens.push_back(qt);
  }
  for (int i = 0; i < kPushes; ++i) {
    ASSERT_NO_FATAL_FAILURE(ExpectMessage(server, i, 64));
  }
  for (demi_qtoken_t qt : tokens) CompletePush(qt);
  CloseQueues({client, server, listener});
}

// A burst of pushes without a wait between them: all but the first go
// together at the next wait, small ones several to a SEND (a batch), behind
// a large one (rendezvous) that the receiver must read first. Every push
// completes; the peer pops one message per push, in order, each intact while
// it holds it, whatever it frees around it and whatever arrives meanwhile.
TEST_F(PushCompletionTest, BurstBehindALargePushPopsOneByOneInOrder) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  auto size_of = [](uint64_t i) -> uint32_t {
    return i == 0 ? 20000 : 1 + static_cast<uint32_t>(i * 37 % 200);
  };
  auto segments_of = [](uint64_t i) -> uint32_t { return 1 + i % 3; };
  constexpr uint64_t kFirst = 41;  // the large one and 40 small
  std::vector<demi_qtoken_t> pushes;
  for (uint64_t i = 0; i < kFirst; ++i) {
    pushes.push_back(PushMessage(client, i, size_of(i), segments_of(i)));
    ASSERT_NE(pushes.back(), 0u);
  }
  std::vector<demi_qresult_t> held;
  for (uint64_t i = 0; i < kFirst; ++i) {
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pop(&qt, server), 0);
    held.push_back(WaitResult(qt));
    ASSERT_EQ(held.back().qr_opcode, DEMI_OPC_POP) << "message " << i;
  }
  // Free every other one (checked first), then take a second burst through
  // the same buffers while the rest are still held.
  for (uint64_t i = 0; i < kFirst; i += 2) {
    EXPECT_EQ(CheckMessage(held[i], i, size_of(i), segments_of(i)), size_of(i));
  }
  constexpr uint64_t kSecond = 40;
  for (uint64_t i = kFirst; i < kFirst + kSecond; ++i) {
    pushes.push_back(PushMessage(client, i, size_of(i), segments_of(i)));
  }
  for (uint64_t i = kFirst; i < kFirst + kSecond; ++i) {
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pop(&qt, server), 0);
    demi_qresult_t result = WaitResult(qt);
    EXPECT_EQ(CheckMessage(result, i, size_of(i), segments_of(i)), size_of(i));
  }
  for (uint64_t i = 1; i < kFirst; i += 2) {
    EXPECT_EQ(CheckMessage(held[i], i, size_of(i), segments_of(i)), size_of(i))
        << "message " << i << " changed while held";
  }
  for (demi_qtoken_t qt : pushes) CompletePush(qt);
  CloseQueues({client, server, listener});
}

}  // namespace
}  // namespace demi::testing
