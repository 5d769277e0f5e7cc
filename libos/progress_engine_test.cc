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

}  // namespace
}  // namespace demi::libos
