#include "libos/progress_engine.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace demi::libos {
namespace {

TEST(ProgressEngineTest, EachSourceIsPolledAtItsInterval) {
  ProgressEngine engine;
  int every = 0, fourth = 0, eighth = 0;
  engine.Add(1, [&] { ++every; });
  engine.Add(4, [&] { ++fourth; });
  engine.Add(5, [&] { ++eighth; });  // rounded up to 8
  for (int i = 0; i < 64; ++i) engine.Round();
  EXPECT_EQ(every, 64);
  EXPECT_EQ(fourth, 16);
  EXPECT_EQ(eighth, 8);
  EXPECT_EQ(engine.rounds(), 64u);
}

TEST(ProgressEngineTest, ZeroIntervalMeansEveryRound) {
  ProgressEngine engine;
  int polls = 0;
  engine.Add(0, [&] { ++polls; });
  engine.Round();
  engine.Round();
  EXPECT_EQ(polls, 2);
}

TEST(ProgressEngineTest, EveryRoundSourcesComeFirstThenRegistrationOrder) {
  ProgressEngine engine;
  std::vector<std::string> order;
  engine.Add(2, [&] { order.push_back("periodic a"); });
  engine.Add(1, [&] { order.push_back("every a"); });
  engine.Add(2, [&] { order.push_back("periodic b"); });
  engine.Add(1, [&] { order.push_back("every b"); });
  engine.Round();  // round 1: only the every-round sources
  engine.Round();  // round 2: all
  EXPECT_EQ(order,
            (std::vector<std::string>{"every a", "every b", "every a",
                                      "every b", "periodic a", "periodic b"}));
}

uint64_t fake_ticks = 0;
uint64_t FakeTicks() { return fake_ticks; }

TEST(ProgressEngineTest, ACatchUpRoundPollsAPeriodicSourceLeftIdleTooLong) {
  fake_ticks = 1000;
  ProgressEngine engine(&FakeTicks);
  int polls = 0;
  engine.Add(1024, [&] { ++polls; });
  // Not yet long enough: a catch-up round polls nothing early.
  fake_ticks += kCatchUpTicks - 1;
  engine.Round(/*catch_up=*/true);
  EXPECT_EQ(polls, 0);
  // Long enough, but an ordinary round does not read the clock.
  fake_ticks += 1;
  engine.Round();
  EXPECT_EQ(polls, 0);
  engine.Round(/*catch_up=*/true);
  EXPECT_EQ(polls, 1);
  // Polled just now: the next catch-up rounds wait for the interval again.
  engine.Round(/*catch_up=*/true);
  EXPECT_EQ(polls, 1);
  // The count still makes it due every 1024th round.
  while (engine.rounds() % 1024 != 0) engine.Round();
  EXPECT_EQ(polls, 2);
  EXPECT_EQ(engine.rounds(), 1024u);
}

TEST(ProgressEngineTest, CatchUpRoundsStillPollEveryRoundSources) {
  ProgressEngine engine(&FakeTicks);
  int every = 0;
  engine.Add(1, [&] { ++every; });
  engine.Round(/*catch_up=*/true);
  engine.Round();
  EXPECT_EQ(every, 2);
}

}  // namespace
}  // namespace demi::libos
