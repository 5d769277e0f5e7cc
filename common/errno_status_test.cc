#include "common/errno_status.h"

#include <cerrno>

#include "gtest/gtest.h"

namespace demi {
namespace {

TEST(ErrnoStatusTest, KeepsTheExactErrno) {
  absl::Status status = ErrnoStatus(ECONNREFUSED, "rdma_connect");
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(ErrnoFromStatus(status), ECONNREFUSED);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("rdma_connect: "), absl::string_view::npos);
  EXPECT_NE(status.message().find("refused"), absl::string_view::npos);
}

TEST(ErrnoStatusTest, ErrnoErrorKeepsMessageAndErrno) {
  absl::Status status = ErrnoError(EBADF, "no such queue");
  EXPECT_EQ(status.message(), "no such queue");
  EXPECT_EQ(ErrnoFromStatus(status), EBADF);
}

TEST(ErrnoStatusTest, OkIsZero) {
  EXPECT_EQ(ErrnoFromStatus(absl::OkStatus()), 0);
}

TEST(ErrnoStatusTest, PlainStatusesMapFromTheirCode) {
  EXPECT_EQ(ErrnoFromStatus(absl::InvalidArgumentError("x")), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(absl::ResourceExhaustedError("x")), ENOMEM);
  EXPECT_EQ(ErrnoFromStatus(absl::DeadlineExceededError("x")), ETIMEDOUT);
  EXPECT_EQ(ErrnoFromStatus(absl::CancelledError("x")), ECANCELED);
  EXPECT_EQ(ErrnoFromStatus(absl::InternalError("x")), EIO);
}

}  // namespace
}  // namespace demi
