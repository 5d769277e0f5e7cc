// CreditAccount between two simulated sides: random schedules, stalls.

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
#include "rdma/credit_account.h"
#include "rdma/credit_account_test_util.h"

namespace demi::rdma {
namespace {

// ---- Simulation of two connected sides ------------------------------------
//
// Models what the libOS does around an account: each side keeps
// `receive_buffers` receives posted; a message in flight is in the receiving
// side's FIFO `inbound` (RC delivers in order); a delivered data message holds
// its buffer until the consumer frees it; a delivered credit update has its
// buffer re-posted at once. Every action checks the RNR condition and the
// conservation of credits.

struct Side {
  explicit Side(CreditAccount a, uint32_t n)
      : account(a), receive_buffers(n), posted(n) {}

  CreditAccount account;
  uint32_t receive_buffers;
  uint32_t posted;                  // receives currently posted
  uint32_t held = 0;                // delivered data the consumer has not freed
  uint64_t queued = 0;              // pushed data waiting for a credit
  uint64_t pushed = 0;              // data messages the application pushed
  uint64_t sent_seq = 0;            // next data sequence number to send
  uint64_t delivered = 0;           // data messages received, in order
  uint64_t stall_left = 0;          // steps the consumer still stalls (random)
  bool stalled = false;             // consumer frees nothing while set
  std::deque<SentMessage> inbound;  // messages in flight toward this side
};

class Simulation {
 public:
  Simulation(uint32_t a_buffers, uint32_t b_buffers) {
    sides_.emplace_back(MakeAccount(b_buffers, a_buffers), a_buffers);
    sides_.emplace_back(MakeAccount(a_buffers, b_buffers), b_buffers);
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
    SentMessage m = s.inbound.front();
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
      for (const SentMessage& m : sx.inbound)
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

// One step of side `i`: 0 pushes (`pushes()` messages), 1 sends data, 2
// a credit update, 3 delivers, 4 frees.
template <typename Pushes>
void Act(Simulation& sim, int i, int action, Pushes pushes) {
  switch (action) {
    case 0:
      sim.Push(i, pushes());
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
}

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
      Act(sim, i, kind, [&] { return uniform(1, 4); });
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
      Act(sim, i, static_cast<int>(uniform(0, 4)),
          [&] { return uniform(1, 3); });
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

}  // namespace
}  // namespace demi::rdma
