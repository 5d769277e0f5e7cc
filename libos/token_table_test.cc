#include "libos/token_table.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "libos/token_table_test_util.h"

namespace demi::libos {
namespace {

TEST(TokenTableTest, AllocateCompleteTakeRoundTrip) {
  TokenTable table(4);
  EXPECT_EQ(table.capacity(), 4u);
  absl::StatusOr<demi_qtoken_t> qt = table.Allocate(7, DEMI_OPC_PUSH);
  ASSERT_TRUE(qt.ok()) << qt.status();
  EXPECT_NE(*qt, 0u);
  EXPECT_EQ(table.StateOf(*qt), TokenState::kPending);
  EXPECT_EQ(table.pending_count(), 1u);
  EXPECT_EQ(table.ready_count(), 0u);
  ASSERT_TRUE(table.QueueOf(*qt).ok());
  EXPECT_EQ(*table.QueueOf(*qt), 7);
  ASSERT_TRUE(table.OpcodeOf(*qt).ok());
  EXPECT_EQ(*table.OpcodeOf(*qt), DEMI_OPC_PUSH);

  const demi_qresult_t r = MakeResult(DEMI_OPC_PUSH, 0, 42);
  table.Complete(*qt, r);
  EXPECT_EQ(table.StateOf(*qt), TokenState::kDone);
  EXPECT_EQ(table.pending_count(), 0u);
  EXPECT_EQ(table.ready_count(), 1u);
  EXPECT_EQ(*table.QueueOf(*qt), 7);

  absl::StatusOr<demi_qresult_t> got = table.Take(*qt);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(SameResult(*got, Expected(r, *qt, 7)));
  EXPECT_EQ(got->qr_qt, *qt);
  EXPECT_EQ(got->qr_qd, 7);
  EXPECT_EQ(got->qr_opcode, DEMI_OPC_PUSH);
  EXPECT_EQ(got->qr_value.sga.sga_numsegs, 42u);

  EXPECT_EQ(table.StateOf(*qt), TokenState::kInvalid);
  EXPECT_EQ(table.pending_count(), 0u);
  EXPECT_EQ(table.ready_count(), 0u);
  EXPECT_EQ(ErrnoOf(table.QueueOf(*qt)), EINVAL);
  EXPECT_EQ(ErrnoOf(table.OpcodeOf(*qt)), EINVAL);
}

TEST(TokenTableTest, TakeOfPendingIsEagainAndTokenStaysValid) {
  TokenTable table(2);
  demi_qtoken_t qt = *table.Allocate(3, DEMI_OPC_POP);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<demi_qresult_t> got = table.Take(qt);
    EXPECT_EQ(ErrnoOf(got), EAGAIN);
    EXPECT_EQ(table.StateOf(qt), TokenState::kPending);
    EXPECT_EQ(table.pending_count(), 1u);
  }
  table.Complete(qt, MakeResult(DEMI_OPC_POP, 0, 1));
  EXPECT_TRUE(table.Take(qt).ok());
}

TEST(TokenTableTest, TakeDoneTakesOnlyDoneTokens) {
  TokenTable table(2);
  demi_qtoken_t qt = *table.Allocate(5, DEMI_OPC_PUSH);
  demi_qresult_t out{};
  out.qr_ret = 99;
  EXPECT_FALSE(table.TakeDone(qt, &out));  // pending: nothing changes
  EXPECT_EQ(table.TakeIfDone(qt, &out), TokenState::kPending);
  EXPECT_EQ(table.TakeIfDone(qt + 1, &out), TokenState::kInvalid);
  EXPECT_EQ(out.qr_ret, 99);
  EXPECT_EQ(table.StateOf(qt), TokenState::kPending);
  EXPECT_FALSE(table.TakeDone(qt + 1, &out));  // not a token of ours
  table.Complete(qt, MakeResult(DEMI_OPC_PUSH, 7, 1));
  ASSERT_TRUE(table.TakeDone(qt, &out));
  EXPECT_EQ(out.qr_qt, qt);
  EXPECT_EQ(out.qr_qd, 5);
  EXPECT_EQ(out.qr_opcode, DEMI_OPC_PUSH);
  EXPECT_EQ(table.StateOf(qt), TokenState::kInvalid);  // consumed
  EXPECT_FALSE(table.TakeDone(qt, &out));
  EXPECT_EQ(table.ready_count(), 0u);
}

TEST(TokenTableTest, TakeTwiceIsEinval) {
  TokenTable table(2);
  demi_qtoken_t qt = *table.Allocate(3, DEMI_OPC_CONNECT);
  table.Complete(qt, MakeResult(DEMI_OPC_CONNECT, 0, 1));
  ASSERT_TRUE(table.Take(qt).ok());
  EXPECT_EQ(ErrnoOf(table.Take(qt)), EINVAL);
  // Completing or releasing a consumed token is a bug: counted, no change.
  EXPECT_EQ(table.unmatched(), 0u);
  table.Complete(qt, MakeResult(DEMI_OPC_CONNECT, 0, 2));
  table.Release(qt);
  EXPECT_EQ(table.unmatched(), 2u);
  EXPECT_EQ(table.StateOf(qt), TokenState::kInvalid);
  EXPECT_EQ(table.ready_count(), 0u);
  EXPECT_EQ(table.pending_count(), 0u);
}

// The path issue 18 asks a test for: a completion that finds no pending
// token is counted (and logged), and the first result is never overwritten.
TEST(TokenTableTest, CompleteTwiceIsCountedAndKeepsFirstResult) {
  TokenTable table(2);
  demi_qtoken_t qt = *table.Allocate(5, DEMI_OPC_POP);
  const demi_qresult_t first = MakeResult(DEMI_OPC_POP, 0, 1);
  table.Complete(qt, first);
  EXPECT_EQ(table.unmatched(), 0u);
  table.Complete(qt, MakeResult(DEMI_OPC_FAILED, 9, 2));
  table.Fail(qt, ECANCELED);
  EXPECT_EQ(table.CompleteInPlace(qt, DEMI_OPC_POP), nullptr);
  EXPECT_EQ(table.unmatched(), 3u);
  // A caller's own record missing (a push completion without its push
  // record, SocketContext::FinishPush) counts the same way.
  table.ReportUnmatched("finishing a push", qt);
  EXPECT_EQ(table.unmatched(), 4u);
  EXPECT_EQ(table.ready_count(), 1u);
  absl::StatusOr<demi_qresult_t> got = table.Take(qt);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(SameResult(*got, Expected(first, qt, 5)));
}

TEST(TokenTableTest, GarbageTokensAreEinval) {
  TokenTable table(8);
  demi_qtoken_t live = *table.Allocate(1, DEMI_OPC_PUSH);
  const demi_qtoken_t next_gen = live + (uint64_t{1} << 32);
  const demi_qtoken_t prev_gen = live - (uint64_t{1} << 32);
  const std::vector<demi_qtoken_t> garbage = {0,
                                              UINT64_MAX,
                                              1,
                                              2,
                                              7,
                                              8,
                                              next_gen,
                                              prev_gen,
                                              live ^ 1,
                                              live + 100,
                                              uint64_t{0xFFFFFFFF},
                                              uint64_t{1} << 63};
  for (demi_qtoken_t qt : garbage) {
    SCOPED_TRACE(qt);
    EXPECT_EQ(table.StateOf(qt), TokenState::kInvalid);
    EXPECT_EQ(ErrnoOf(table.Take(qt)), EINVAL);
    const uint64_t unmatched = table.unmatched();
    table.Complete(qt, MakeResult(DEMI_OPC_PUSH, 0, 0));
    table.Fail(qt, ECANCELED);
    table.Release(qt);
    EXPECT_EQ(table.unmatched(), unmatched + 3);
    EXPECT_EQ(ErrnoOf(table.QueueOf(qt)), EINVAL);
    EXPECT_EQ(ErrnoOf(table.OpcodeOf(qt)), EINVAL);
  }
  // None of that touched the live token.
  EXPECT_EQ(table.StateOf(live), TokenState::kPending);
  EXPECT_EQ(table.pending_count(), 1u);
  EXPECT_EQ(table.ready_count(), 0u);
}

TEST(TokenTableTest, StaleTokenOfReusedSlotIsEinval) {
  TokenTable table(1);
  demi_qtoken_t old_qt = *table.Allocate(1, DEMI_OPC_POP);
  table.Complete(old_qt, MakeResult(DEMI_OPC_POP, 0, 1));
  ASSERT_TRUE(table.Take(old_qt).ok());
  demi_qtoken_t new_qt = *table.Allocate(1, DEMI_OPC_POP);
  EXPECT_NE(new_qt, old_qt);
  EXPECT_EQ(table.StateOf(old_qt), TokenState::kInvalid);
  EXPECT_EQ(ErrnoOf(table.Take(old_qt)), EINVAL);
  table.Complete(old_qt, MakeResult(DEMI_OPC_POP, 0, 2));
  EXPECT_EQ(table.unmatched(), 1u);
  EXPECT_EQ(table.StateOf(new_qt), TokenState::kPending);
}

TEST(TokenTableTest, TokensAreUniqueAndNonZeroOverManyCycles) {
  constexpr int kCycles = 100000;
  TokenTable table(8);
  std::unordered_set<demi_qtoken_t> seen;
  std::vector<demi_qtoken_t> recent;  // consumed, still checked for staleness
  std::deque<demi_qtoken_t> live;
  std::mt19937 rng(1);
  for (int i = 0; i < kCycles; ++i) {
    // Keep between 1 and 8 tokens live so slots are reused in varied orders.
    while (live.size() < 1 + rng() % 8) {
      absl::StatusOr<demi_qtoken_t> qt = table.Allocate(i, DEMI_OPC_PUSH);
      ASSERT_TRUE(qt.ok()) << qt.status();
      ASSERT_NE(*qt, 0u);
      ASSERT_TRUE(seen.insert(*qt).second) << "token repeated: " << *qt;
      live.push_back(*qt);
    }
    const size_t pick = rng() % live.size();
    const demi_qtoken_t qt = live[pick];
    live.erase(live.begin() + pick);
    table.Complete(qt, MakeResult(DEMI_OPC_PUSH, 0, 0));
    ASSERT_TRUE(table.Take(qt).ok());
    recent.push_back(qt);
    if (recent.size() > 64) recent.erase(recent.begin());
    for (demi_qtoken_t stale : recent) {
      ASSERT_EQ(table.StateOf(stale), TokenState::kInvalid);
    }
  }
  EXPECT_GE(seen.size(), static_cast<size_t>(kCycles));
}

TEST(TokenTableTest, CapacityExhaustionIsEagainAndRecovers) {
  TokenTable table(3);
  std::vector<demi_qtoken_t> qts;
  for (int i = 0; i < 3; ++i) qts.push_back(*table.Allocate(i, DEMI_OPC_POP));
  EXPECT_EQ(ErrnoOf(table.Allocate(9, DEMI_OPC_POP)), EAGAIN);

  // Completed but not taken results still hold their slot.
  table.Complete(qts[1], MakeResult(DEMI_OPC_POP, 0, 1));
  EXPECT_EQ(ErrnoOf(table.Allocate(9, DEMI_OPC_POP)), EAGAIN);
  EXPECT_EQ(table.pending_count() + table.ready_count(), 3u);

  ASSERT_TRUE(table.Take(qts[1]).ok());
  absl::StatusOr<demi_qtoken_t> again = table.Allocate(9, DEMI_OPC_POP);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ErrnoOf(table.Allocate(9, DEMI_OPC_POP)), EAGAIN);

  // Release frees a slot as well.
  table.Release(qts[0]);
  EXPECT_TRUE(table.Allocate(9, DEMI_OPC_POP).ok());
  EXPECT_EQ(table.pending_count(), 3u);
}

TEST(TokenTableTest, AllocateDoneIsBornDoneInCompletionOrder) {
  TokenTable table(3);
  const demi_qtoken_t pending = *table.Allocate(4, DEMI_OPC_POP);
  table.Complete(pending, MakeResult(DEMI_OPC_POP, 0, 1));
  demi_qtoken_t qt = 0;
  demi_qresult_t* result = table.AllocateDone(7, DEMI_OPC_PUSH, &qt);
  ASSERT_NE(result, nullptr);
  EXPECT_NE(qt, 0u);
  EXPECT_EQ(result->qr_opcode, DEMI_OPC_PUSH);
  EXPECT_EQ(result->qr_qt, qt);
  EXPECT_EQ(result->qr_qd, 7);
  EXPECT_EQ(result->qr_ret, 0);
  result->qr_value.sga.sga_numsegs = 1;
  result->qr_value.sga.sga_segs[0].sgaseg_len = 64;
  EXPECT_EQ(table.StateOf(qt), TokenState::kDone);
  EXPECT_EQ(table.pending_count(), 0u);
  EXPECT_EQ(table.ready_count(), 2u);
  EXPECT_EQ(*table.QueueOf(qt), 7);
  EXPECT_EQ(*table.OpcodeOf(qt), DEMI_OPC_PUSH);
  // Behind the result completed before it, then taken like any other.
  demi_qresult_t out[3];
  ASSERT_EQ(table.TakeReady(absl::MakeSpan(out)), 2u);
  EXPECT_EQ(out[0].qr_qt, pending);
  EXPECT_EQ(out[1].qr_qt, qt);
  EXPECT_EQ(out[1].qr_value.sga.sga_segs[0].sgaseg_len, 64u);
  EXPECT_EQ(table.StateOf(qt), TokenState::kInvalid);
  // A full table gives none and changes nothing.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(table.Allocate(i, DEMI_OPC_POP).ok());
  EXPECT_FALSE(table.has_free_slot());
  qt = 0;
  EXPECT_EQ(table.AllocateDone(7, DEMI_OPC_PUSH, &qt), nullptr);
  EXPECT_EQ(qt, 0u);
  EXPECT_EQ(table.pending_count(), 3u);
  EXPECT_EQ(table.ready_count(), 0u);
}

TEST(TokenTableTest, ZeroCapacityAlwaysEagain) {
  TokenTable table(0);
  EXPECT_EQ(table.capacity(), 0u);
  EXPECT_EQ(ErrnoOf(table.Allocate(1, DEMI_OPC_PUSH)), EAGAIN);
  EXPECT_EQ(table.StateOf(0), TokenState::kInvalid);
  EXPECT_EQ(table.StateOf(uint64_t{1} << 32), TokenState::kInvalid);
  demi_qresult_t out[2];
  EXPECT_EQ(table.TakeReady(absl::MakeSpan(out)), 0u);
}

TEST(TokenTableTest, TakeReadyReturnsCompletionOrder) {
  TokenTable table(8);
  std::vector<demi_qtoken_t> qts;
  for (int i = 0; i < 6; ++i) {
    qts.push_back(*table.Allocate(10 + i, DEMI_OPC_POP));
  }
  // Complete in an order different from allocation order.
  const std::vector<int> order = {3, 0, 5, 1, 4, 2};
  for (int i : order) {
    table.Complete(qts[i], MakeResult(DEMI_OPC_POP, 0, uint8_t(i)));
  }
  EXPECT_EQ(table.ready_count(), 6u);

  demi_qresult_t empty[1];
  EXPECT_EQ(table.TakeReady(absl::Span<demi_qresult_t>(empty, 0)), 0u);

  demi_qresult_t out[4];
  ASSERT_EQ(table.TakeReady(absl::MakeSpan(out)), 4u);
  for (int k = 0; k < 4; ++k) {
    const int i = order[k];
    EXPECT_EQ(out[k].qr_qt, qts[i]);
    EXPECT_EQ(out[k].qr_qd, 10 + i);
    EXPECT_EQ(out[k].qr_value.sga.sga_numsegs, uint32_t(i));
    EXPECT_EQ(table.StateOf(qts[i]), TokenState::kInvalid);
  }
  EXPECT_EQ(table.ready_count(), 2u);
  ASSERT_EQ(table.TakeReady(absl::MakeSpan(out)), 2u);
  EXPECT_EQ(out[0].qr_qt, qts[order[4]]);
  EXPECT_EQ(out[1].qr_qt, qts[order[5]]);
  EXPECT_EQ(table.TakeReady(absl::MakeSpan(out)), 0u);
  EXPECT_EQ(table.ready_count(), 0u);
}

TEST(TokenTableTest, TakeRemovesFromTheMiddleOfTheReadyFifo) {
  TokenTable table(4);
  demi_qtoken_t a = *table.Allocate(1, DEMI_OPC_PUSH);
  demi_qtoken_t b = *table.Allocate(1, DEMI_OPC_PUSH);
  demi_qtoken_t c = *table.Allocate(1, DEMI_OPC_PUSH);
  for (demi_qtoken_t qt : {a, b, c}) {
    table.Complete(qt, MakeResult(DEMI_OPC_PUSH, 0, 0));
  }
  ASSERT_TRUE(table.Take(b).ok());
  demi_qresult_t out[4];
  ASSERT_EQ(table.TakeReady(absl::MakeSpan(out)), 2u);
  EXPECT_EQ(out[0].qr_qt, a);
  EXPECT_EQ(out[1].qr_qt, c);
}

TEST(TokenTableTest, PendingOfListsExactlyThePendingTokensOfAQueue) {
  TokenTable table(16);
  demi_qtoken_t a1 = *table.Allocate(1, DEMI_OPC_POP);
  demi_qtoken_t b1 = *table.Allocate(2, DEMI_OPC_POP);
  demi_qtoken_t a2 = *table.Allocate(1, DEMI_OPC_PUSH);
  demi_qtoken_t a3 = *table.Allocate(1, DEMI_OPC_PUSH);
  demi_qtoken_t a4 = *table.Allocate(1, DEMI_OPC_CLOSE);
  table.Complete(a2, MakeResult(DEMI_OPC_PUSH, 0, 0));
  table.Release(a4);

  std::vector<demi_qtoken_t> out = {12345};  // replaced, not appended to
  table.PendingOf(1, &out);
  EXPECT_EQ(std::set<demi_qtoken_t>(out.begin(), out.end()),
            (std::set<demi_qtoken_t>{a1, a3}));
  EXPECT_EQ(out.size(), 2u);

  table.PendingOf(2, &out);
  EXPECT_EQ(out, std::vector<demi_qtoken_t>{b1});
  table.PendingOf(3, &out);
  EXPECT_TRUE(out.empty());

  // What the libOS does on close: fail them all with ECANCELED.
  table.PendingOf(1, &out);
  for (demi_qtoken_t qt : out) table.Fail(qt, ECANCELED);
  table.PendingOf(1, &out);
  EXPECT_TRUE(out.empty());
  absl::StatusOr<demi_qresult_t> r = table.Take(a3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(r->qr_ret, ECANCELED);
  EXPECT_EQ(r->qr_qd, 1);
  EXPECT_EQ(r->qr_qt, a3);
}

TEST(TokenTableTest, ReleaseOfCompletedIsCountedAndKeepsResult) {
  TokenTable table(2);
  demi_qtoken_t qt = *table.Allocate(4, DEMI_OPC_ACCEPT);
  const demi_qresult_t r = MakeResult(DEMI_OPC_ACCEPT, 0, 3);
  table.Complete(qt, r);
  table.Release(qt);
  EXPECT_EQ(table.unmatched(), 1u);
  EXPECT_EQ(table.StateOf(qt), TokenState::kDone);
  absl::StatusOr<demi_qresult_t> got = table.Take(qt);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(SameResult(*got, Expected(r, qt, 4)));
}

}  // namespace
}  // namespace demi::libos
