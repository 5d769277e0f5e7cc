#include "common/fixed_ring.h"

#include <deque>
#include <random>

#include "gtest/gtest.h"

namespace demi {
namespace {

TEST(FixedRingTest, PushPopInOrderAndRefusesWhenFull) {
  FixedRing<int> ring(3);
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.capacity(), 3u);
  EXPECT_TRUE(ring.push_back(1));
  EXPECT_TRUE(ring.push_back(2));
  EXPECT_TRUE(ring.push_back(3));
  EXPECT_TRUE(ring.full());
  EXPECT_FALSE(ring.push_back(4));  // refused, nothing changed
  EXPECT_EQ(ring.size(), 3u);
  EXPECT_EQ(ring.front(), 1);
  EXPECT_EQ(ring[2], 3);
  ring.pop_front();
  EXPECT_TRUE(ring.push_back(4));  // wraps
  EXPECT_EQ(ring[0], 2);
  EXPECT_EQ(ring[1], 3);
  EXPECT_EQ(ring[2], 4);
  ring.pop_front(2);
  EXPECT_EQ(ring.front(), 4);
  ring.clear();
  EXPECT_TRUE(ring.empty());
}

// Filling in place, as a connection does with its send records: the slots
// after the back are written, then Extend makes them elements; PlacesAfterFront
// finds how far a completed slot is from the oldest.
TEST(FixedRingTest, FillInPlaceAndFindSlots) {
  FixedRing<int> ring(4);
  ring.push_back(10);
  ring.push_back(11);
  ring.pop_front(2);  // head now at slot 2
  EXPECT_EQ(ring.SlotAfterBack(0), 2u);
  EXPECT_EQ(ring.SlotAfterBack(1), 3u);
  EXPECT_EQ(ring.SlotAfterBack(2), 0u);  // wraps
  EXPECT_EQ(ring.SlotAfterBack(3), 1u);
  for (uint32_t i = 0; i < 3; ++i) ring.slot(ring.SlotAfterBack(i)) = 20 + i;
  ring.Extend(3);
  EXPECT_EQ(ring.size(), 3u);
  EXPECT_EQ(ring.front_slot(), 2u);
  EXPECT_EQ(ring[0], 20);
  EXPECT_EQ(ring[2], 22);
  EXPECT_EQ(ring.PlacesAfterFront(2), 0u);
  EXPECT_EQ(ring.PlacesAfterFront(0), 2u);
  EXPECT_EQ(ring.PlacesAfterFront(1), 3u);  // past the back: >= size()
  EXPECT_EQ(ring.PlacesAfterFront(9), 4u);  // past the capacity
}

// Random operations against std::deque with a bound.
TEST(FixedRingTest, BehavesLikeABoundedDeque) {
  std::mt19937 rng(7);
  for (uint32_t capacity : {1u, 2u, 5u, 64u}) {
    FixedRing<uint32_t> ring(capacity);
    std::deque<uint32_t> model;
    for (int step = 0; step < 20000; ++step) {
      const uint32_t op = rng() % 4;
      if (op <= 1) {
        const uint32_t value = rng();
        const bool pushed = ring.push_back(value);
        ASSERT_EQ(pushed, model.size() < capacity);
        if (pushed) model.push_back(value);
      } else if (op == 2 && !model.empty()) {
        const uint32_t n = 1 + rng() % model.size();
        ring.pop_front(n);
        model.erase(model.begin(), model.begin() + n);
      } else if (op == 3 && model.size() < capacity) {
        const uint32_t n = 1 + rng() % (capacity - model.size());
        for (uint32_t i = 0; i < n; ++i) {
          ring.slot(ring.SlotAfterBack(i)) = step + i;
          model.push_back(step + i);
        }
        ring.Extend(n);
      }
      ASSERT_EQ(ring.size(), model.size());
      for (uint32_t i = 0; i < model.size(); ++i) ASSERT_EQ(ring[i], model[i]);
    }
  }
}

}  // namespace
}  // namespace demi
