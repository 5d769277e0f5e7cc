#include "tests/pattern.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace demi::testing {
namespace {

TEST(PatternTest, FillMatchesPatternByteAtAnyOffsetAndLength) {
  for (size_t offset : {0, 1, 7, 8, 13}) {
    for (size_t length : {0, 1, 5, 8, 9, 64, 1001}) {
      std::vector<uint8_t> bytes(length);
      FillPattern(bytes.data(), length, 42, offset);
      for (size_t i = 0; i < length; ++i) {
        ASSERT_EQ(bytes[i], PatternByte(42, offset + i)) << offset << " " << i;
      }
      EXPECT_EQ(FindPatternMismatch(bytes.data(), length, 42, offset), -1);
    }
  }
}

TEST(PatternTest, MismatchNamesTheFirstBadByte) {
  std::vector<uint8_t> bytes(100);
  FillPattern(bytes.data(), bytes.size(), 7, 3);
  bytes[37] ^= 1;
  bytes[90] ^= 1;
  EXPECT_EQ(FindPatternMismatch(bytes.data(), bytes.size(), 7, 3), 37);
  EXPECT_EQ(FindPatternMismatch(bytes.data(), bytes.size(), 8, 3), 0)
      << "another seed";
}

TEST(PatternTest, ChunksMovedBy256BytesShow) {
  std::vector<uint8_t> bytes(4096);
  FillPattern(bytes.data(), bytes.size(), 1);
  std::vector<uint8_t> moved(bytes.begin() + 256, bytes.begin() + 512);
  std::copy(moved.begin(), moved.end(), bytes.begin());
  EXPECT_EQ(FindPatternMismatch(bytes.data(), bytes.size(), 1), 0);
}

}  // namespace
}  // namespace demi::testing
