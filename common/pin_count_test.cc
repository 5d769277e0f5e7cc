#include "common/pin_count.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace demi {
namespace {

TEST(PinCountTest, ReleaseWithoutPinsFreesAtOnce) {
  PinCount pins;
  EXPECT_FALSE(pins.released());
  EXPECT_EQ(pins.Release(), PinCount::kFreeNow);
  EXPECT_TRUE(pins.released());
  EXPECT_EQ(pins.Release(), PinCount::kAlreadyReleased);
  EXPECT_FALSE(pins.Pin());
  EXPECT_EQ(pins.pins(), 0u);
}

TEST(PinCountTest, TheLastUnpinAfterAReleaseFrees) {
  PinCount pins;
  ASSERT_TRUE(pins.Pin());
  ASSERT_TRUE(pins.Pin());
  EXPECT_EQ(pins.Release(), PinCount::kDeferred);
  EXPECT_FALSE(pins.Pin());  // released: no new reader
  EXPECT_FALSE(pins.Unpin());
  EXPECT_TRUE(pins.Unpin());
  EXPECT_EQ(pins.Release(), PinCount::kAlreadyReleased);
}

TEST(PinCountTest, UnpinsWithoutAReleaseNeverFree) {
  PinCount pins;
  ASSERT_TRUE(pins.Pin());
  EXPECT_FALSE(pins.Unpin());
  EXPECT_EQ(pins.Release(), PinCount::kFreeNow);
  pins.Reset();
  EXPECT_FALSE(pins.released());
  EXPECT_TRUE(pins.Pin());
}

// Readers on several threads pin and unpin while the owner releases: exactly
// one party is told to free, every round.
TEST(PinCountTest, ExactlyOneFreesUnderRaces) {
  constexpr int kRounds = 2000;
  constexpr int kReaders = 3;
  for (int round = 0; round < kRounds; ++round) {
    PinCount pins;
    std::atomic<int> frees{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < kReaders; ++r) {
      readers.emplace_back([&] {
        for (int k = 0; k < 20; ++k) {
          if (!pins.Pin()) break;
          if (pins.Unpin()) frees.fetch_add(1);
        }
      });
    }
    if (pins.Release() == PinCount::kFreeNow) frees.fetch_add(1);
    for (std::thread& t : readers) t.join();
    ASSERT_EQ(frees.load(), 1) << "round " << round;
  }
}

}  // namespace
}  // namespace demi
