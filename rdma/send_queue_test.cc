#include "rdma/send_queue.h"

#include <errno.h>

#include <utility>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"

namespace demi::rdma {
namespace {

// A post that accepts everything and remembers what it was given.
struct Accepting {
  std::vector<ibv_send_wr*>* seen;
  absl::Status operator()(ibv_send_wr* first, ibv_send_wr** bad) const {
    for (ibv_send_wr* wr = first; wr != nullptr; wr = wr->next) {
      seen->push_back(wr);
    }
    *bad = nullptr;
    return absl::OkStatus();
  }
};

// Builds a chain of `n` SENDs from the next free slot; returns first, last.
std::pair<ibv_send_wr*, ibv_send_wr*> Chain(SendQueue& sends, uint32_t n,
                                            uint64_t first_cookie) {
  ibv_send_wr* first = nullptr;
  ibv_send_wr* last = nullptr;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t slot = sends.SlotAfterPosted(i);
    ibv_send_wr& wr =
        sends.Start(slot, 1000 + slot, sends.sges(slot), 1, IBV_WR_SEND);
    sends.record(slot) = PostedSend{.cookie = first_cookie + i};
    if (last != nullptr) last->next = &wr;
    if (first == nullptr) first = &wr;
    last = &wr;
  }
  return {first, last};
}

TEST(SendQueueTest, AChainSignalsOnlyItsLastAndJoinsTheRingInOrder) {
  SendQueue sends(/*depth=*/8, /*sges_per_request=*/3, /*signal_interval=*/2);
  EXPECT_EQ(sends.room(), 8u);
  std::vector<ibv_send_wr*> seen;
  auto [first, last] = Chain(sends, 3, 10);
  absl::Status error;
  EXPECT_EQ(
      sends.Post(first, last, 3, /*signal=*/true, Accepting{&seen}, &error),
      3u);
  EXPECT_TRUE(error.ok());
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0]->send_flags & IBV_SEND_SIGNALED, 0u);
  EXPECT_EQ(seen[1]->send_flags & IBV_SEND_SIGNALED, 0u);
  EXPECT_NE(seen[2]->send_flags & IBV_SEND_SIGNALED, 0u);
  EXPECT_EQ(seen[2]->wr_id, 1000u + sends.SlotOf(seen[2]));
  EXPECT_EQ(seen[1]->sg_list, sends.sges(sends.SlotOf(seen[1])));
  EXPECT_EQ(sends.size(), 3u);
  EXPECT_EQ(sends.room(), 5u);
  EXPECT_EQ(sends.doorbells(), 1u);
  // The last slot's completion retires all three, oldest first.
  EXPECT_EQ(sends.PlacesAfterFront(sends.SlotOf(seen[2])), 2u);
  EXPECT_EQ(sends.TakeFront().cookie, 10u);
  EXPECT_EQ(sends.TakeFront().cookie, 11u);
  EXPECT_EQ(sends.TakeFront().cookie, 12u);
  EXPECT_TRUE(sends.empty());
  // A slot that is not posted is at least size() away.
  EXPECT_GE(sends.PlacesAfterFront(sends.SlotAfterPosted(0)), sends.size());
}

TEST(SendQueueTest, UnsignaledRequestsCountUntilASignaledOneIsDue) {
  SendQueue sends(/*depth=*/16, /*sges_per_request=*/1, /*signal_interval=*/3);
  std::vector<ibv_send_wr*> seen;
  absl::Status error;
  EXPECT_FALSE(sends.SignalDue());
  auto [a, a_last] = Chain(sends, 1, 0);
  sends.Post(a, a_last, 1, /*signal=*/false, Accepting{&seen}, &error);
  EXPECT_EQ(sends.unsignaled(), 1u);
  EXPECT_FALSE(sends.SignalDue());
  auto [b, b_last] = Chain(sends, 1, 1);
  sends.Post(b, b_last, 1, /*signal=*/false, Accepting{&seen}, &error);
  EXPECT_EQ(sends.unsignaled(), 2u);
  EXPECT_TRUE(sends.SignalDue());  // the third in a row must be signaled
  auto [c, c_last] = Chain(sends, 1, 2);
  sends.Post(c, c_last, 1, /*signal=*/true, Accepting{&seen}, &error);
  EXPECT_EQ(sends.unsignaled(), 0u);
  EXPECT_EQ(sends.doorbells(), 3u);
  EXPECT_EQ(sends.size(), 3u);
}

TEST(SendQueueTest, ARejectedRequestLeavesThoseBeforeItPosted) {
  SendQueue sends(/*depth=*/8, /*sges_per_request=*/1, /*signal_interval=*/1);
  auto [first, last] = Chain(sends, 4, 20);
  absl::Status error;
  const uint32_t posted = sends.Post(
      first, last, 4, /*signal=*/true,
      [](ibv_send_wr* chain, ibv_send_wr** bad) {
        *bad = chain->next->next;  // the third is refused
        return ErrnoError(ENOMEM, "send queue full");
      },
      &error);
  EXPECT_EQ(posted, 2u);
  EXPECT_EQ(sends.size(), 2u);
  EXPECT_EQ(ErrnoFromStatus(error), ENOMEM);
  EXPECT_EQ(sends.TakeFront().cookie, 20u);
  EXPECT_EQ(sends.TakeFront().cookie, 21u);
  // The next chain starts where the refused one did.
  EXPECT_EQ(sends.SlotAfterPosted(0), 2u);
}

TEST(SendQueueTest, SlotsWrapAroundTheRing) {
  SendQueue sends(/*depth=*/4, /*sges_per_request=*/1, /*signal_interval=*/1);
  std::vector<ibv_send_wr*> seen;
  absl::Status error;
  for (uint64_t round = 0; round < 3; ++round) {
    auto [first, last] = Chain(sends, 3, round * 10);
    ASSERT_EQ(sends.Post(first, last, 3, true, Accepting{&seen}, &error), 3u);
    EXPECT_TRUE(sends.full() == false && sends.room() == 1u);
    for (uint64_t i = 0; i < 3; ++i) {
      EXPECT_EQ(sends.TakeFront().cookie, round * 10 + i);
    }
  }
  // 9 posted in a ring of 4: the next free slot is 9 mod 4.
  EXPECT_EQ(sends.SlotAfterPosted(0), 1u);
}

}  // namespace
}  // namespace demi::rdma
