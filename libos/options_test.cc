#include "libos/options.h"

#include "gtest/gtest.h"

namespace demi::libos {
namespace {

TEST(ParseSpinMicrosTest, CountsInfinityAndNegatives) {
  absl::Duration spin = absl::ZeroDuration();
  EXPECT_TRUE(ParseSpinMicros("250", &spin));
  EXPECT_EQ(spin, absl::Microseconds(250));
  EXPECT_TRUE(ParseSpinMicros("0", &spin));
  EXPECT_EQ(spin, absl::ZeroDuration());
  EXPECT_TRUE(ParseSpinMicros("inf", &spin));
  EXPECT_EQ(spin, absl::InfiniteDuration());
  spin = absl::ZeroDuration();
  EXPECT_TRUE(ParseSpinMicros("infinite", &spin));
  EXPECT_EQ(spin, absl::InfiniteDuration());
  spin = absl::ZeroDuration();
  EXPECT_TRUE(ParseSpinMicros("-1", &spin));
  EXPECT_EQ(spin, absl::InfiniteDuration());
}

TEST(ParseSpinMicrosTest, RefusesAnythingElseAndKeepsTheValue) {
  absl::Duration spin = absl::Milliseconds(1);
  for (const char* bad : {"", "abc", "12us", "1.5", " 7", "7 ", "0x10",
                          "99999999999999999999999", "Inf"}) {
    EXPECT_FALSE(ParseSpinMicros(bad, &spin)) << bad;
    EXPECT_EQ(spin, absl::Milliseconds(1)) << bad;
  }
  EXPECT_FALSE(ParseSpinMicros(nullptr, &spin));
}

}  // namespace
}  // namespace demi::libos
