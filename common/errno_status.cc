#include "common/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace demi {
namespace {

constexpr absl::string_view kErrnoPayloadUrl = "demi.errno";

int ErrnoFromCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return EINVAL;
    case absl::StatusCode::kNotFound:
      return ENOENT;
    case absl::StatusCode::kAlreadyExists:
      return EEXIST;
    case absl::StatusCode::kPermissionDenied:
      return EPERM;
    case absl::StatusCode::kResourceExhausted:
      return ENOMEM;
    case absl::StatusCode::kFailedPrecondition:
      return EINVAL;
    case absl::StatusCode::kUnavailable:
      return EAGAIN;
    case absl::StatusCode::kDeadlineExceeded:
      return ETIMEDOUT;
    case absl::StatusCode::kCancelled:
      return ECANCELED;
    case absl::StatusCode::kUnimplemented:
      return ENOTSUP;
    default:
      return EIO;
  }
}

}  // namespace

absl::Status ErrnoError(int errnum, absl::string_view message) {
  absl::Status status(absl::ErrnoToStatusCode(errnum), message);
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(absl::StrCat(errnum)));
  return status;
}

absl::Status ErrnoStatus(int errnum, absl::string_view what) {
  char buffer[128];
  // GNU strerror_r returns the message, which may or may not be `buffer`.
  const char* text = strerror_r(errnum, buffer, sizeof(buffer));
  return ErrnoError(errnum, absl::StrCat(what, ": ", text));
}

int ErrnoFromError(const absl::Status& status) {
  if (status.ok()) return 0;
  auto payload = status.GetPayload(kErrnoPayloadUrl);
  int errnum = 0;
  if (payload.has_value() && absl::SimpleAtoi(std::string(*payload), &errnum) &&
      errnum > 0) {
    return errnum;
  }
  return ErrnoFromCode(status.code());
}

}  // namespace demi
