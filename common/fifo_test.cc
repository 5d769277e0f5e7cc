#include "common/fifo.h"

#include <deque>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace demi {
namespace {

TEST(FifoTest, StartsEmptyWithNoSlots) {
  Fifo<int> fifo;
  EXPECT_TRUE(fifo.empty());
  EXPECT_EQ(fifo.size(), 0u);
  EXPECT_EQ(fifo.capacity(), 0u);
  EXPECT_FALSE(fifo.begin() != fifo.end());
}

TEST(FifoTest, KeepsOrderAcrossGrowthWhileWrapped) {
  Fifo<int> fifo;
  // Wrap the ring first (head in the middle), then grow it twice.
  for (int i = 0; i < 6; ++i) fifo.push_back(i);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(fifo.front(), i);
    fifo.pop_front();
  }
  for (int i = 6; i < 40; ++i) fifo.push_back(i);
  EXPECT_EQ(fifo.size(), 35u);
  EXPECT_EQ(fifo.capacity(), 64u);
  int expected = 5;
  for (int value : fifo) EXPECT_EQ(value, expected++);
  EXPECT_EQ(expected, 40);
  for (int i = 5; i < 40; ++i) {
    ASSERT_FALSE(fifo.empty());
    EXPECT_EQ(fifo.front(), i);
    fifo.pop_front();
  }
  EXPECT_TRUE(fifo.empty());
}

TEST(FifoTest, ASteadyDepthNeverGrows) {
  Fifo<uint64_t> fifo;
  for (uint64_t i = 0; i < 3; ++i) fifo.push_back(i);
  const size_t capacity = fifo.capacity();
  for (uint64_t i = 3; i < 100000; ++i) {
    fifo.push_back(i);
    EXPECT_EQ(fifo.front(), i - 3);
    fifo.pop_front();
  }
  EXPECT_EQ(fifo.capacity(), capacity);
  EXPECT_EQ(fifo.size(), 3u);
}

TEST(FifoTest, ClearKeepsTheSlots) {
  Fifo<int> fifo;
  for (int i = 0; i < 20; ++i) fifo.push_back(i);
  const size_t capacity = fifo.capacity();
  fifo.clear();
  EXPECT_TRUE(fifo.empty());
  EXPECT_EQ(fifo.capacity(), capacity);
  fifo.push_back(7);
  EXPECT_EQ(fifo.front(), 7);
  EXPECT_EQ(fifo.size(), 1u);
}

TEST(FifoTest, MatchesADequeUnderRandomUse) {
  std::mt19937 random(12345);
  Fifo<int> fifo;
  std::deque<int> model;
  int next = 0;
  for (int step = 0; step < 200000; ++step) {
    // Pushes slightly more likely than pops: the depth drifts up and down.
    if (model.empty() || random() % 100 < 52) {
      fifo.push_back(next);
      model.push_back(next);
      ++next;
    } else {
      ASSERT_EQ(fifo.front(), model.front());
      fifo.pop_front();
      model.pop_front();
    }
    ASSERT_EQ(fifo.size(), model.size());
  }
  std::vector<int> left(fifo.begin(), fifo.end());
  EXPECT_EQ(left, std::vector<int>(model.begin(), model.end()));
}

TEST(FifoTest, MovesItsContents) {
  Fifo<int> a;
  a.push_back(1);
  a.push_back(2);
  Fifo<int> b = std::move(a);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b.front(), 1);
}

}  // namespace
}  // namespace demi
