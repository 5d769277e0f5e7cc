#include "common/reserved_range.h"

#include <unistd.h>

#include "common/errno_status.h"
#include "gtest/gtest.h"

namespace demi {
namespace {

TEST(ReservedRangeTest, GrowsByWholePagesUpToItsSize) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  absl::StatusOr<ReservedRange> range = ReservedRange::Reserve(3 * page - 1);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->size(), 3 * page);
  EXPECT_EQ(range->writable(), 0u);
  ASSERT_TRUE(range->Grow(10).ok());
  EXPECT_EQ(range->writable(), page);
  range->base()[page - 1] = 7;  // writable now
  ASSERT_TRUE(range->Grow(page + 1).ok());
  EXPECT_EQ(range->writable(), 2 * page);
  EXPECT_EQ(range->base()[page - 1], 7);  // kept
  ASSERT_TRUE(range->Grow(5).ok());       // never shrinks
  EXPECT_EQ(range->writable(), 2 * page);
  absl::Status too_far = range->Grow(3 * page + 1);
  EXPECT_EQ(ErrnoFromStatus(too_far), ENOMEM);
  EXPECT_EQ(range->writable(), 2 * page);
}

TEST(ReservedRangeTest, MovesAndRejectsZero) {
  EXPECT_EQ(ErrnoFromStatus(ReservedRange::Reserve(0).status()), EINVAL);
  absl::StatusOr<ReservedRange> range = ReservedRange::Reserve(1);
  ASSERT_TRUE(range.ok());
  char* base = range->base();
  ReservedRange moved = *std::move(range);
  EXPECT_EQ(moved.base(), base);
  EXPECT_EQ(range->base(), nullptr);  // NOLINT: moved-from is empty
  ASSERT_TRUE(moved.Grow(1).ok());
  moved.base()[0] = 1;
}

}  // namespace
}  // namespace demi
