#include "libos/deadline.h"

#include "gtest/gtest.h"

namespace demi::libos {
namespace {

// A clock the test moves by hand, counting its reads.
absl::Time fake_now = absl::UnixEpoch();
int reads = 0;
absl::Time FakeNow() {
  ++reads;
  return fake_now;
}

class DeadlineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_now = absl::UnixEpoch();
    reads = 0;
  }
};

TEST_F(DeadlineTest, InfiniteNeverPassesAndNeverReadsTheClock) {
  Deadline deadline(absl::InfiniteDuration(), &FakeNow);
  for (int i = 0; i < 1000; ++i) {
    fake_now += absl::Hours(1);
    EXPECT_FALSE(deadline.Passed());
  }
  EXPECT_EQ(reads, 0);
}

TEST_F(DeadlineTest, ZeroAndNegativePassAfterOneRoundWithoutAClockRead) {
  Deadline zero(absl::ZeroDuration(), &FakeNow);
  EXPECT_TRUE(zero.Passed());
  Deadline negative(-absl::Seconds(1), &FakeNow);
  EXPECT_TRUE(negative.Passed());
  EXPECT_EQ(reads, 0);
}

TEST_F(DeadlineTest, AQuickAnswerReadsNoClock) {
  Deadline deadline(absl::Milliseconds(5), &FakeNow);
  for (uint32_t i = 1; i < Deadline::kClockInterval; ++i) {
    EXPECT_FALSE(deadline.Passed());
  }
  EXPECT_EQ(reads, 0);
}

TEST_F(DeadlineTest, TheTimeoutCountsFromTheFirstClockRead) {
  Deadline deadline(absl::Milliseconds(5), &FakeNow);
  // Time spent before the first read is not counted.
  fake_now += absl::Seconds(10);
  for (uint32_t i = 0; i < Deadline::kClockInterval; ++i) {
    EXPECT_FALSE(deadline.Passed());
  }
  EXPECT_EQ(reads, 1);
  fake_now += absl::Milliseconds(4);
  for (uint32_t i = 0; i < Deadline::kClockInterval; ++i) {
    EXPECT_FALSE(deadline.Passed());
  }
  EXPECT_EQ(reads, 2);
  fake_now += absl::Milliseconds(1);
  bool passed = false;
  for (uint32_t i = 0; i < Deadline::kClockInterval && !passed; ++i) {
    passed = deadline.Passed();
  }
  EXPECT_TRUE(passed);
  EXPECT_EQ(reads, 3);
}

TEST_F(DeadlineTest, TheRealClockEventuallyPasses) {
  Deadline deadline(absl::Milliseconds(2));
  const absl::Time start = absl::Now();
  while (!deadline.Passed()) {
    ASSERT_LT(absl::Now() - start, absl::Seconds(10));
  }
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(2));
}

TEST_F(DeadlineTest, RemainingCountsFromTheFirstReadAndNeverGoesNegative) {
  Deadline infinite(absl::InfiniteDuration(), &FakeNow);
  EXPECT_EQ(infinite.Remaining(), absl::InfiniteDuration());
  Deadline zero(absl::ZeroDuration(), &FakeNow);
  EXPECT_EQ(zero.Remaining(), absl::ZeroDuration());
  EXPECT_EQ(reads, 0);

  Deadline second(absl::Seconds(1), &FakeNow);
  EXPECT_EQ(second.Remaining(), absl::Seconds(1));  // starts the timeout
  fake_now += absl::Milliseconds(300);
  EXPECT_EQ(second.Remaining(), absl::Milliseconds(700));
  // Passed() compares with the same deadline.
  for (uint32_t i = 0; i < Deadline::kClockInterval; ++i) {
    EXPECT_FALSE(second.Passed());
  }
  fake_now += absl::Seconds(5);
  EXPECT_EQ(second.Remaining(), absl::ZeroDuration());
  bool passed = false;
  for (uint32_t i = 0; i < Deadline::kClockInterval; ++i) {
    passed |= second.Passed();
  }
  EXPECT_TRUE(passed);
}

}  // namespace
}  // namespace demi::libos
