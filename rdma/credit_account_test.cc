#include "rdma/credit_account.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace demi::rdma {
namespace {

CreditAccount Make(uint32_t peer, uint32_t local) {
  std::optional<CreditAccount> account = CreditAccount::Create(peer, local);
  EXPECT_TRUE(account.has_value()) << peer << " " << local;
  return account.value();
}

// Receives `n` messages returning no credits and re-posts their buffers.
void ReceiveAndRepost(CreditAccount& account, int n) {
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(account.OnMessageReceived(0));
    ASSERT_TRUE(account.OnReceiveReposted());
  }
}

// ---- Unit tests of each rule ----------------------------------------------

TEST(CreditAccountTest, CreateRejectsTooFewOrTooManyBuffers) {
  EXPECT_EQ(CreditAccount::kMinReceiveBuffers, 3u);
  for (uint32_t bad : {0u, 1u, 2u, 65536u, UINT32_MAX}) {
    EXPECT_FALSE(CreditAccount::Create(bad, 8).has_value()) << bad;
    EXPECT_FALSE(CreditAccount::Create(8, bad).has_value()) << bad;
  }
  EXPECT_TRUE(CreditAccount::Create(3, 3).has_value());
  EXPECT_TRUE(CreditAccount::Create(65535, 65535).has_value());
}

TEST(CreditAccountTest, StartsWithThePeersReceiveCount) {
  CreditAccount account = Make(7, 5);
  EXPECT_EQ(account.peer_receive_buffers(), 7u);
  EXPECT_EQ(account.local_receive_buffers(), 5u);
  EXPECT_EQ(account.credits(), 7u);
  EXPECT_EQ(account.owed(), 0u);
  EXPECT_EQ(account.unreposted(), 0u);
  EXPECT_EQ(account.threshold(), 2u);
  EXPECT_TRUE(account.CanSendData());
  EXPECT_FALSE(account.ShouldSendCreditUpdate());
}

TEST(CreditAccountTest, ThresholdIsBetweenTwoAndOneLessThanTheBuffers) {
  EXPECT_EQ(CreditAccount::ThresholdFor(3), 2u);
  EXPECT_EQ(CreditAccount::ThresholdFor(5), 2u);
  EXPECT_EQ(CreditAccount::ThresholdFor(6), 3u);
  EXPECT_EQ(CreditAccount::ThresholdFor(64), 32u);
  for (uint32_t n = CreditAccount::kMinReceiveBuffers;
       n <= CreditAccount::kMaxReceiveBuffers; ++n) {
    ASSERT_GE(CreditAccount::ThresholdFor(n), 2u) << n;
    ASSERT_LE(CreditAccount::ThresholdFor(n), n - 1) << n;
  }
}

TEST(CreditAccountTest, DataNeverTakesTheLastCredit) {
  CreditAccount account = Make(3, 3);
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  EXPECT_EQ(account.credits(), 1u);
  EXPECT_FALSE(account.CanSendData());
  EXPECT_EQ(account.ConsumeForData(), std::nullopt);
  EXPECT_EQ(account.credits(), 1u);
  EXPECT_EQ(account.data_messages_sent(), 2u);
}

TEST(CreditAccountTest, CreditUpdateOnlyAtThreshold) {
  CreditAccount account = Make(8, 8);
  ASSERT_EQ(account.threshold(), 4u);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(account.OnMessageReceived(0));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(account.OnReceiveReposted());
    EXPECT_FALSE(account.ShouldSendCreditUpdate()) << i;
    EXPECT_EQ(account.ConsumeForCreditUpdate(), std::nullopt);
  }
  ASSERT_TRUE(account.OnReceiveReposted());
  EXPECT_TRUE(account.ShouldSendCreditUpdate());
  EXPECT_EQ(account.ConsumeForCreditUpdate(), 4);
  EXPECT_EQ(account.owed(), 0u);
  EXPECT_EQ(account.credits(), 7u);
  EXPECT_EQ(account.credit_updates_sent(), 1u);
  EXPECT_FALSE(account.ShouldSendCreditUpdate());
}

TEST(CreditAccountTest, CreditUpdateMayTakeTheLastCreditButNeedsOne) {
  CreditAccount account = Make(3, 4);
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ReceiveAndRepost(account, 2);
  ASSERT_FALSE(account.CanSendData());
  ASSERT_TRUE(account.ShouldSendCreditUpdate());
  EXPECT_EQ(account.ConsumeForCreditUpdate(), 2);
  EXPECT_EQ(account.credits(), 0u);
  // Owing again, but no credit left to tell the peer with.
  ReceiveAndRepost(account, 2);
  EXPECT_FALSE(account.ShouldSendCreditUpdate());
  EXPECT_EQ(account.ConsumeForCreditUpdate(), std::nullopt);
  EXPECT_EQ(account.owed(), 2u);
}

TEST(CreditAccountTest, ReturnsArePiggybackedAndReset) {
  CreditAccount account = Make(8, 8);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(account.OnMessageReceived(0));
  ASSERT_TRUE(account.OnReceiveReposted());
  ASSERT_TRUE(account.OnReceiveReposted());
  // Only re-posted buffers are owed; the third is still with the app.
  EXPECT_EQ(account.ConsumeForData(), 2);
  EXPECT_EQ(account.owed(), 0u);
  EXPECT_EQ(account.ConsumeForData(), 0);
  ASSERT_TRUE(account.OnReceiveReposted());
  EXPECT_EQ(account.ConsumeForData(), 1);
  EXPECT_EQ(account.unreposted(), 0u);
}

TEST(CreditAccountTest, ReturnedCreditsComeBack) {
  CreditAccount account = Make(4, 4);
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_EQ(account.credits(), 1u);
  ASSERT_TRUE(account.OnMessageReceived(2));
  EXPECT_EQ(account.credits(), 3u);
  ASSERT_TRUE(account.OnMessageReceived(1));
  EXPECT_EQ(account.credits(), 4u);
  EXPECT_EQ(account.messages_received(), 2u);
}

TEST(CreditAccountTest, ReturningMoreThanOutstandingIsRejected) {
  CreditAccount account = Make(5, 5);
  EXPECT_FALSE(account.OnMessageReceived(1));  // none outstanding
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  EXPECT_FALSE(account.OnMessageReceived(3));
  EXPECT_FALSE(account.OnMessageReceived(UINT16_MAX));
  // A rejected message changes nothing.
  EXPECT_EQ(account.credits(), 3u);
  EXPECT_EQ(account.unreposted(), 0u);
  EXPECT_EQ(account.messages_received(), 0u);
  EXPECT_TRUE(account.OnMessageReceived(2));
  EXPECT_EQ(account.credits(), 5u);
}

TEST(CreditAccountTest, PeerUsingMoreBuffersThanPostedIsRejected) {
  CreditAccount account = Make(4, 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(account.OnMessageReceived(0));
  EXPECT_FALSE(account.OnMessageReceived(0));
  // Re-posted but not yet returned: the peer does not know, so may not use it.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(account.OnReceiveReposted());
  EXPECT_FALSE(account.OnMessageReceived(0));
  EXPECT_EQ(account.ConsumeForData(), 3);
  EXPECT_TRUE(account.OnMessageReceived(0));
}

TEST(CreditAccountTest, RepostWithoutReceivedMessageIsRejected) {
  CreditAccount account = Make(3, 3);
  EXPECT_FALSE(account.OnReceiveReposted());
  ASSERT_TRUE(account.OnMessageReceived(0));
  EXPECT_TRUE(account.OnReceiveReposted());
  EXPECT_FALSE(account.OnReceiveReposted());
  EXPECT_EQ(account.owed(), 1u);
}

TEST(CreditAccountTest, LargestWindowsReturnsFitTheHeader) {
  CreditAccount account = Make(65535, 65535);
  ReceiveAndRepost(account, 65535);
  EXPECT_EQ(account.ConsumeForData(), 65535);
  EXPECT_EQ(account.owed(), 0u);
}

// ---- Simulation of two connected sides ------------------------------------
//
// Models what the libOS does around an account: each side keeps
// `receive_buffers` receives posted; a message in flight is in the receiving
// side's FIFO `inbound` (RC delivers in order); a delivered data message holds
// its buffer until the consumer frees it; a delivered credit update has its
// buffer re-posted at once. Every action checks the RNR condition and the
// conservation of credits.

struct Message {
  bool data = false;
  uint16_t credits_returned = 0;
  uint64_t seq = 0;  // data only
};

struct Side {
  explicit Side(CreditAccount a, uint32_t n)
      : account(a), receive_buffers(n), posted(n) {}

  CreditAccount account;
  uint32_t receive_buffers;
  uint32_t posted;              // receives currently posted
  uint32_t held = 0;            // delivered data the consumer has not freed
  uint64_t queued = 0;          // pushed data waiting for a credit
  uint64_t pushed = 0;          // data messages the application pushed
  uint64_t sent_seq = 0;        // next data sequence number to send
  uint64_t delivered = 0;       // data messages received, in order
  uint64_t stall_left = 0;      // steps the consumer still stalls (random)
  bool stalled = false;         // consumer frees nothing while set
  std::deque<Message> inbound;  // messages in flight toward this side
};

class Simulation {
 public:
  Simulation(uint32_t a_buffers, uint32_t b_buffers) {
    sides_.emplace_back(Make(b_buffers, a_buffers), a_buffers);
    sides_.emplace_back(Make(a_buffers, b_buffers), b_buffers);
  }

  Side& side(int i) { return sides_[i]; }
  const std::string& error() const { return error_; }
  uint64_t actions() const { return actions_; }

  void Push(int i, uint64_t n) {
    sides_[i].queued += n;
    sides_[i].pushed += n;
  }

  bool SendData(int i) {
    Side& s = sides_[i];
    if (s.queued == 0) return false;
    const bool can = s.account.CanSendData();
    std::optional<uint16_t> returned = s.account.ConsumeForData();
    if (returned.has_value() != can) Fail(i, "data rule inconsistent");
    if (!returned.has_value()) return false;
    --s.queued;
    sides_[1 - i].inbound.push_back(
        {.data = true, .credits_returned = *returned, .seq = s.sent_seq++});
    return Acted();
  }

  bool SendCreditUpdate(int i) {
    Side& s = sides_[i];
    const bool should = s.account.ShouldSendCreditUpdate();
    std::optional<uint16_t> returned = s.account.ConsumeForCreditUpdate();
    if (returned.has_value() != should) Fail(i, "update rule inconsistent");
    if (!returned.has_value()) return false;
    sides_[1 - i].inbound.push_back(
        {.data = false, .credits_returned = *returned, .seq = 0});
    return Acted();
  }

  // Delivers the oldest message in flight toward side i.
  bool Deliver(int i) {
    Side& s = sides_[i];
    if (s.inbound.empty()) return false;
    Message m = s.inbound.front();
    s.inbound.pop_front();
    if (s.posted == 0) {
      Fail(i, "receiver not ready: message arrived with no receive posted");
      return false;
    }
    --s.posted;
    if (!s.account.OnMessageReceived(m.credits_returned)) {
      Fail(i, "OnMessageReceived rejected a well-behaved peer");
    }
    if (m.data) {
      if (m.seq != s.delivered) Fail(i, "data out of order or lost");
      ++s.delivered;
      ++s.held;
    } else {
      Repost(i);  // header only: re-posted while handling the completion
    }
    return Acted();
  }

  // The consumer frees one popped buffer, which is re-posted.
  bool Free(int i) {
    Side& s = sides_[i];
    if (s.stalled || s.held == 0) return false;
    --s.held;
    Repost(i);
    return Acted();
  }

  // A libOS that sends whatever it may and a consumer that frees whatever it
  // holds (unless stalled), until nothing can happen. Returns false if that
  // takes more than `max_actions` actions (a livelock).
  bool RunToQuiescence(uint64_t max_actions) {
    const uint64_t start = actions_;
    bool progress = true;
    while (progress && error_.empty()) {
      if (actions_ - start > max_actions) return false;
      progress = false;
      for (int i = 0; i < 2; ++i) {
        while (SendData(i)) progress = true;
        if (SendCreditUpdate(i)) progress = true;
      }
      for (int i = 0; i < 2; ++i) {
        if (Deliver(i)) progress = true;
        if (Free(i)) progress = true;
      }
    }
    return true;
  }

  uint64_t TotalData() const {
    return sides_[0].account.data_messages_sent() +
           sides_[1].account.data_messages_sent();
  }
  uint64_t TotalUpdates() const {
    return sides_[0].account.credit_updates_sent() +
           sides_[1].account.credit_updates_sent();
  }

 private:
  void Repost(int i) {
    Side& s = sides_[i];
    ++s.posted;
    if (!s.account.OnReceiveReposted()) Fail(i, "OnReceiveReposted rejected");
  }

  bool Acted() {
    ++actions_;
    Check();
    return true;
  }

  void Fail(int i, const std::string& what) {
    if (error_.empty()) {
      error_ = "side " + std::to_string(i) + " after " +
               std::to_string(actions_) + " actions: " + what;
    }
  }

  // Invariants, for each direction x -> y.
  void Check() {
    for (int x = 0; x < 2; ++x) {
      const Side& sx = sides_[x];
      const Side& sy = sides_[1 - x];
      uint64_t returns_in_flight = 0;  // y's returns travelling to x
      for (const Message& m : sx.inbound)
        returns_in_flight += m.credits_returned;
      // Every one of y's buffers is exactly one of: a credit of x, under a
      // message in flight, held un-reposted, owed, or a return in flight.
      if (sx.account.credits() + sy.inbound.size() + sy.account.unreposted() +
              sy.account.owed() + returns_in_flight !=
          sy.receive_buffers) {
        Fail(x, "credits not conserved");
      }
      // Safety: x can never have more SENDs under way than y has posted.
      if (sx.account.credits() + sy.inbound.size() > sy.posted) {
        Fail(x, "credits exceed the peer's posted receives");
      }
      if (sy.posted + sy.held != sy.receive_buffers ||
          sy.account.unreposted() != sy.held) {
        Fail(1 - x, "buffer bookkeeping");
      }
      // Data leaves the last buffer free for credit updates.
      if (sy.held + sy.inbound.size() > sy.receive_buffers) {
        Fail(1 - x, "more than the posted buffers used");
      }
      // No ping-pong: an update spends >= 2 returns, each return is one
      // message received, so 2 * updates(x) <= messages x received.
      if (2 * sx.account.credit_updates_sent() >
          sx.account.messages_received()) {
        Fail(x, "credit updates exceed half the messages received");
      }
    }
    if (TotalUpdates() > TotalData()) Fail(0, "more updates than data");
  }

  std::vector<Side> sides_;
  std::string error_;
  uint64_t actions_ = 0;
};

void ExpectAllDelivered(Simulation& sim) {
  for (int i = 0; i < 2; ++i) {
    const Side& s = sim.side(i);
    EXPECT_EQ(s.queued, 0u) << "side " << i;
    EXPECT_TRUE(s.inbound.empty()) << "side " << i;
    EXPECT_EQ(s.held, 0u) << "side " << i;
    EXPECT_EQ(s.posted, s.receive_buffers) << "side " << i;
    EXPECT_EQ(sim.side(1 - i).delivered, s.pushed) << "side " << i;
  }
}

// Buffer counts (side A, side B) the simulations run with.
const std::vector<std::pair<uint32_t, uint32_t>> kWindows = {
    {3, 3}, {3, 4},  {4, 3}, {3, 64},  {64, 3},  {4, 4},  {5, 5},
    {6, 6}, {7, 11}, {8, 8}, {16, 16}, {33, 17}, {64, 64}};

class CreditSimulationTest
    : public ::testing::TestWithParam<std::pair<uint32_t, uint32_t>> {};

// Random schedules: bursts of pushes, sends and deliveries in any order,
// consumers that free at random and stall for long stretches. Then everyone
// behaves and everything must arrive.
TEST_P(CreditSimulationTest, RandomSchedulesAreSafeAndLive) {
  const auto [a_buffers, b_buffers] = GetParam();
  constexpr int kSeeds = 40;
  constexpr int kSteps = 20000;
  for (int seed = 0; seed < kSeeds; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed * 1000003 + a_buffers * 101 + b_buffers);
    auto uniform = [&rng](uint64_t lo, uint64_t hi) {
      return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    };
    Simulation sim(a_buffers, b_buffers);
    // Per-run rates: some runs are one-way, some push faster than they free.
    uint64_t weight[2][5];  // push, send data, send update, deliver, free
    for (auto& w : weight) {
      w[0] = uniform(0, 3) == 0 ? 0 : uniform(1, 8);
      for (int k = 1; k < 5; ++k) w[k] = uniform(1, 8);
    }
    const uint64_t stall_chance = uniform(0, 3) == 0 ? 0 : uniform(1, 500);
    for (int step = 0; step < kSteps; ++step) {
      for (int i = 0; i < 2; ++i) {
        Side& s = sim.side(i);
        if (s.stall_left > 0) {
          --s.stall_left;
        } else if (stall_chance > 0 && uniform(1, stall_chance * 10) == 1) {
          s.stall_left = uniform(1, 4000);
        }
        s.stalled = s.stall_left > 0;
      }
      const int i = static_cast<int>(uniform(0, 1));
      const uint64_t* w = weight[i];
      uint64_t pick = uniform(0, w[0] + w[1] + w[2] + w[3] + w[4] - 1);
      int kind = 0;
      while (pick >= w[kind]) pick -= w[kind++];
      switch (kind) {
        case 0:
          sim.Push(i, uniform(1, 4));
          break;
        case 1:
          sim.SendData(i);
          break;
        case 2:
          sim.SendCreditUpdate(i);
          break;
        case 3:
          sim.Deliver(i);
          break;
        case 4:
          sim.Free(i);
          break;
      }
      ASSERT_EQ(sim.error(), "") << "step " << step;
    }
    for (int i = 0; i < 2; ++i) sim.side(i).stalled = false;
    ASSERT_TRUE(sim.RunToQuiescence(100'000'000)) << "livelock";
    ASSERT_EQ(sim.error(), "");
    ExpectAllDelivered(sim);
    if (HasFailure()) return;
  }
}

// A consumer that never frees stops only the pushes toward it; its own pushes
// keep going, whatever state the random prefix left behind.
TEST_P(CreditSimulationTest, StalledConsumerStopsOnlyThePeer) {
  const auto [a_buffers, b_buffers] = GetParam();
  for (int seed = 0; seed < 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed + 7 * a_buffers + 13 * b_buffers);
    auto uniform = [&rng](uint64_t lo, uint64_t hi) {
      return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    };
    Simulation sim(a_buffers, b_buffers);
    sim.side(0).stalled = true;  // A's consumer never frees
    for (int step = 0; step < 5000; ++step) {
      const int i = static_cast<int>(uniform(0, 1));
      switch (uniform(0, 4)) {
        case 0:
          sim.Push(i, uniform(1, 3));
          break;
        case 1:
          sim.SendData(i);
          break;
        case 2:
          sim.SendCreditUpdate(i);
          break;
        case 3:
          sim.Deliver(i);
          break;
        case 4:
          sim.Free(i);
          break;
      }
      ASSERT_EQ(sim.error(), "") << "step " << step;
    }
    sim.Push(0, 500);
    sim.Push(1, 500);
    ASSERT_TRUE(sim.RunToQuiescence(10'000'000)) << "livelock";
    ASSERT_EQ(sim.error(), "");
    const Side& a = sim.side(0);
    const Side& b = sim.side(1);
    // A -> B: everything arrived although A frees nothing.
    EXPECT_EQ(a.queued, 0u);
    EXPECT_EQ(b.delivered, a.pushed);
    // B -> A: stopped short of A's last buffer.
    EXPECT_GT(b.queued, 0u);
    EXPECT_FALSE(b.account.CanSendData());
    EXPECT_LE(a.held, a_buffers - 1);
    // Quiescent means quiet: nothing more happens, no update ping-pong.
    const uint64_t before = sim.actions();
    ASSERT_TRUE(sim.RunToQuiescence(0));
    EXPECT_EQ(sim.actions(), before);
    // A's consumer resumes; B's pushes drain.
    sim.side(0).stalled = false;
    ASSERT_TRUE(sim.RunToQuiescence(10'000'000)) << "livelock";
    ASSERT_EQ(sim.error(), "");
    ExpectAllDelivered(sim);
    if (HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Windows, CreditSimulationTest, ::testing::ValuesIn(kWindows),
    [](const ::testing::TestParamInfo<std::pair<uint32_t, uint32_t>>& info) {
      return "A" + std::to_string(info.param.first) + "_B" +
             std::to_string(info.param.second);
    });

TEST(CreditSimulationTest, SenderStallsWithoutRnrAndResumes) {
  for (const auto& [a_buffers, b_buffers] : kWindows) {
    SCOPED_TRACE(std::to_string(a_buffers) + "/" + std::to_string(b_buffers));
    Simulation sim(a_buffers, b_buffers);
    sim.side(1).stalled = true;  // B's consumer stops popping
    sim.Push(0, 1000);
    ASSERT_TRUE(sim.RunToQuiescence(1'000'000));
    ASSERT_EQ(sim.error(), "");
    const Side& a = sim.side(0);
    const Side& b = sim.side(1);
    EXPECT_FALSE(a.account.CanSendData());
    EXPECT_EQ(a.queued, 1000u - (b_buffers - 1));
    EXPECT_EQ(b.delivered, b_buffers - 1);
    EXPECT_EQ(b.held, b_buffers - 1);
    EXPECT_EQ(sim.TotalUpdates(), 0u);
    // Stays stalled, quietly.
    const uint64_t before = sim.actions();
    ASSERT_TRUE(sim.RunToQuiescence(0));
    EXPECT_EQ(sim.actions(), before);
    // B pops one: after enough frees for an update, A resumes.
    sim.side(1).stalled = false;
    ASSERT_TRUE(sim.Free(1));
    ASSERT_TRUE(sim.RunToQuiescence(1'000'000));
    ASSERT_EQ(sim.error(), "");
    ExpectAllDelivered(sim);
  }
}

TEST(CreditSimulationTest, OneWayStreamSendsOneUpdatePerThreshold) {
  for (uint32_t n : {3u, 4u, 8u, 16u, 64u}) {
    SCOPED_TRACE(n);
    Simulation sim(n, n);
    sim.Push(0, 10000);
    ASSERT_TRUE(sim.RunToQuiescence(1'000'000));
    ASSERT_EQ(sim.error(), "");
    ExpectAllDelivered(sim);
    const CreditAccount& b = sim.side(1).account;
    EXPECT_EQ(sim.side(0).account.credit_updates_sent(), 0u);
    EXPECT_LE(b.credit_updates_sent(), 10000 / b.threshold() + 1);
  }
}

TEST(CreditSimulationTest, BothConsumersStalledIsQuiet) {
  for (const auto& [a_buffers, b_buffers] : kWindows) {
    Simulation sim(a_buffers, b_buffers);
    sim.side(0).stalled = true;
    sim.side(1).stalled = true;
    sim.Push(0, 100);
    sim.Push(1, 100);
    ASSERT_TRUE(sim.RunToQuiescence(1'000'000));
    ASSERT_EQ(sim.error(), "");
    EXPECT_EQ(sim.side(0).held, a_buffers - 1);
    EXPECT_EQ(sim.side(1).held, b_buffers - 1);
    EXPECT_EQ(sim.TotalUpdates(), 0u);
    sim.side(0).stalled = false;
    sim.side(1).stalled = false;
    ASSERT_TRUE(sim.RunToQuiescence(1'000'000));
    ASSERT_EQ(sim.error(), "");
    ExpectAllDelivered(sim);
  }
}

// ---- Exhaustive check of small windows ------------------------------------
//
// Every state two connected sides can reach, for small windows, with an eager
// libOS (after every event each side sends data while it has some and may,
// then a credit update if it should) and any interleaving of deliveries,
// frees, and applications starting or stopping to have data to push. Checks:
//  * no receiver-not-ready and no rejected message, ever;
//  * no deadlock: no state where nothing is in flight, nothing is held, and
//    a side still has data it cannot send;
//  * no starvation: no cycle a fair scheduler could repeat forever (every
//    direction with messages in flight delivers, the peer's consumer frees
//    what it holds) in which side v has data all along but never sends
//    any. v's own consumer need not free: its pushes must not depend on it;
//  * no endless exchange of credit updates while no data moves.

enum Event {
  kDeliver0,
  kDeliver1,
  kFree0,
  kFree1,
  kPush0,
  kPush1,
  kStop0,
  kStop1,
  kNumEvents
};

struct ModelState {
  std::vector<CreditAccount> accounts;  // [side]
  bool has_data[2] = {false, false};
  std::vector<Message> inbound[2];

  std::string Key() const {
    std::string key;
    auto put = [&key](uint32_t v) {
      EXPECT_LT(v, 256u);
      key.push_back(static_cast<char>(v));
    };
    for (int i = 0; i < 2; ++i) {
      put(accounts[i].credits());
      put(accounts[i].owed());
      put(accounts[i].unreposted());
      put(has_data[i]);
      put(static_cast<uint32_t>(inbound[i].size()));
      for (const Message& m : inbound[i]) {
        put(m.data);
        put(m.credits_returned);
      }
    }
    return key;
  }
};

struct ModelEdge {
  Event event;
  int target;
  bool sent_data[2];
};

class Model {
 public:
  Model(uint32_t a_buffers, uint32_t b_buffers)
      : buffers_{a_buffers, b_buffers} {
    ModelState initial;
    initial.accounts = {Make(b_buffers, a_buffers), Make(a_buffers, b_buffers)};
    bool sent[2] = {false, false};
    Settle(initial, sent);
    Add(initial);
    for (size_t s = 0; s < states_.size() && error_.empty(); ++s) {
      for (int e = 0; e < kNumEvents; ++e) {
        ModelState next = states_[s];
        bool sent_data[2] = {false, false};
        if (!Apply(static_cast<Event>(e), next)) continue;
        Settle(next, sent_data);
        const int target = Add(next);  // may grow edges_
        edges_[s].push_back(
            {static_cast<Event>(e), target, {sent_data[0], sent_data[1]}});
      }
    }
  }

  const std::string& error() const { return error_; }
  size_t size() const { return states_.size(); }

  // A state where nothing can happen any more but someone has data queued.
  std::string FindDeadlock() const {
    for (const ModelState& s : states_) {
      const bool idle = s.inbound[0].empty() && s.inbound[1].empty() &&
                        s.accounts[0].unreposted() == 0 &&
                        s.accounts[1].unreposted() == 0;
      if (idle && (s.has_data[0] || s.has_data[1])) return Describe(s);
    }
    return "";
  }

  // A fair cycle in which side v has data all along and sends none.
  std::string FindStarvation(int v) const {
    auto in_subgraph = [&](int s, const ModelEdge& e) {
      return states_[s].has_data[v] && states_[e.target].has_data[v] &&
             !e.sent_data[v] && e.event != (v == 0 ? kStop0 : kStop1);
    };
    auto fairness = [&](const ModelState& st) {
      uint32_t needs = 0;
      for (int i = 0; i < 2; ++i) {
        if (!st.inbound[i].empty()) needs |= 1u << (kDeliver0 + i);
      }
      if (st.accounts[1 - v].unreposted() > 0) {
        needs |= 1u << (v == 0 ? kFree1 : kFree0);
      }
      return needs;
    };
    return FindCycle(in_subgraph, fairness);
  }

  // A cycle of credit updates alone: control traffic that never stops
  // although no application pushes anything.
  std::string FindUpdateLoop() const {
    auto in_subgraph = [](int, const ModelEdge& e) {
      return e.event <= kFree1 && !e.sent_data[0] && !e.sent_data[1];
    };
    return FindCycle(in_subgraph, [](const ModelState&) { return 0u; });
  }

 private:
  // A cycle within the edges `in_subgraph` accepts that contains every event
  // `fairness` demands in any of its states. Strongly connected components
  // (iterative Tarjan): one can be cycled through taking every internal edge.
  template <typename InSubgraph, typename Fairness>
  std::string FindCycle(InSubgraph in_subgraph, Fairness fairness) const {
    const int n = static_cast<int>(states_.size());
    std::vector<int> index(n, -1), low(n, 0), component(n, -1);
    std::vector<bool> on_stack(n, false);
    std::vector<int> stack;
    std::vector<std::pair<int, size_t>> call;  // (state, next edge)
    int counter = 0, components = 0;
    for (int root = 0; root < n; ++root) {
      if (index[root] != -1) continue;
      call.push_back({root, 0});
      while (!call.empty()) {
        auto& [s, next] = call.back();
        if (next == 0 && index[s] == -1) {
          index[s] = low[s] = counter++;
          stack.push_back(s);
          on_stack[s] = true;
        }
        bool descended = false;
        while (next < edges_[s].size()) {
          const ModelEdge& e = edges_[s][next++];
          if (!in_subgraph(s, e)) continue;
          if (index[e.target] == -1) {
            call.push_back({e.target, 0});  // invalidates s and next
            descended = true;
            break;
          }
          if (on_stack[e.target]) low[s] = std::min(low[s], index[e.target]);
        }
        if (descended) continue;
        const int done = s;
        if (low[done] == index[done]) {
          int x;
          do {
            x = stack.back();
            stack.pop_back();
            on_stack[x] = false;
            component[x] = components;
          } while (x != done);
          ++components;
        }
        call.pop_back();
        if (!call.empty()) {
          const int parent = call.back().first;
          low[parent] = std::min(low[parent], low[done]);
        }
      }
    }
    constexpr uint32_t kHasEdge = 1u << kNumEvents;
    std::vector<uint32_t> has(components, 0), needs(components, 0);
    for (int s = 0; s < n; ++s) {
      for (const ModelEdge& e : edges_[s]) {
        if (in_subgraph(s, e) && component[e.target] == component[s]) {
          has[component[s]] |= 1u << e.event | kHasEdge;
        }
      }
      needs[component[s]] |= fairness(states_[s]);
    }
    for (int s = 0; s < n; ++s) {
      const int c = component[s];
      if ((has[c] & kHasEdge) && (needs[c] & ~has[c]) == 0) {
        return Describe(states_[s]);
      }
    }
    return "";
  }

  // Applies an event the scheduler chose; false if it cannot happen.
  bool Apply(Event event, ModelState& s) {
    const int i = event % 2;
    switch (event) {
      case kDeliver0:
      case kDeliver1: {
        if (s.inbound[i].empty()) return false;
        const Message m = s.inbound[i].front();
        s.inbound[i].erase(s.inbound[i].begin());
        CreditAccount& account = s.accounts[i];
        if (account.unreposted() >= buffers_[i]) {
          Fail("receiver not ready", s);
        }
        if (!account.OnMessageReceived(m.credits_returned)) {
          Fail("message rejected", s);
        }
        // Header only: re-posted while handling the completion.
        if (!m.data && !account.OnReceiveReposted()) Fail("repost", s);
        return true;
      }
      case kFree0:
      case kFree1:
        if (s.accounts[i].unreposted() == 0) return false;
        if (!s.accounts[i].OnReceiveReposted()) Fail("repost", s);
        return true;
      case kPush0:
      case kPush1:
        if (s.has_data[i]) return false;
        s.has_data[i] = true;
        return true;
      case kStop0:
      case kStop1:
        if (!s.has_data[i]) return false;
        s.has_data[i] = false;
        return true;
      default:
        return false;
    }
  }

  // The eager libOS: sends everything the rules allow.
  static void Settle(ModelState& s, bool sent_data[2]) {
    bool progress = true;
    while (progress) {
      progress = false;
      for (int i = 0; i < 2; ++i) {
        CreditAccount& account = s.accounts[i];
        while (s.has_data[i] && account.CanSendData()) {
          s.inbound[1 - i].push_back(
              {.data = true, .credits_returned = *account.ConsumeForData()});
          sent_data[i] = progress = true;
        }
        if (account.ShouldSendCreditUpdate()) {
          s.inbound[1 - i].push_back(
              {.data = false,
               .credits_returned = *account.ConsumeForCreditUpdate()});
          progress = true;
        }
      }
    }
  }

  int Add(const ModelState& s) {
    auto [it, inserted] =
        index_.emplace(s.Key(), static_cast<int>(states_.size()));
    if (inserted) {
      states_.push_back(s);
      edges_.emplace_back();
    }
    return it->second;
  }

  void Fail(const std::string& what, const ModelState& s) {
    if (error_.empty()) error_ = what + " in " + Describe(s);
  }

  static std::string Describe(const ModelState& s) {
    std::string out;
    for (int i = 0; i < 2; ++i) {
      const CreditAccount& a = s.accounts[i];
      out += std::string(i == 0 ? "A" : " B") +
             "{credits=" + std::to_string(a.credits()) +
             " owed=" + std::to_string(a.owed()) +
             " held=" + std::to_string(a.unreposted()) +
             " data=" + std::to_string(s.has_data[i]) + " inbound=";
      for (const Message& m : s.inbound[i]) {
        out += (m.data ? "D" : "U") + std::to_string(m.credits_returned);
      }
      out += "}";
    }
    return out;
  }

  uint32_t buffers_[2];
  std::vector<ModelState> states_;
  std::vector<std::vector<ModelEdge>> edges_;
  std::unordered_map<std::string, int> index_;
  std::string error_;
};

TEST(CreditModelTest, SmallWindowsAreSafeDeadlockFreeAndStarvationFree) {
  for (const auto& [a_buffers, b_buffers] :
       std::vector<std::pair<uint32_t, uint32_t>>{
           {3, 3}, {3, 4}, {4, 3}, {4, 4}, {3, 6}, {6, 3}, {5, 5}, {6, 6}}) {
    SCOPED_TRACE(std::to_string(a_buffers) + "/" + std::to_string(b_buffers));
    Model model(a_buffers, b_buffers);
    ASSERT_EQ(model.error(), "");
    EXPECT_GT(model.size(), 100u);
    EXPECT_EQ(model.FindDeadlock(), "");
    EXPECT_EQ(model.FindStarvation(0), "");
    EXPECT_EQ(model.FindStarvation(1), "");
    EXPECT_EQ(model.FindUpdateLoop(), "");
  }
}

}  // namespace
}  // namespace demi::rdma
