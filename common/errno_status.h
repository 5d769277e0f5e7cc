// Statuses that remember the errno they came from.
//
// Inside the project every failure is an absl::Status. The C API must return a
// positive errno, so a status made from an errno carries that exact value as a
// payload, and ErrnoFromStatus() gives it back at the boundary. A status that
// never had an errno maps from its canonical code.
//
// Thread-safety: all functions are pure and safe from any thread.

#ifndef DEMI_COMMON_ERRNO_STATUS_H_
#define DEMI_COMMON_ERRNO_STATUS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace demi {

// Returns a status for `errnum` (> 0) whose message is "`what`: strerror".
// The code is absl::ErrnoToStatusCode(errnum); the errno is kept as payload.
absl::Status ErrnoStatus(int errnum, absl::string_view what);

// Returns an error status carrying `errnum` with a message of the caller's
// choosing, for errors detected by the project itself (bad arguments...).
absl::Status ErrnoError(int errnum, absl::string_view message);

// Returns 0 for an OK status, the errno carried by `status` if it has one, and
// otherwise a positive errno chosen from its canonical code (EIO at worst).
// Inline for the OK case, which every successful API call takes.
int ErrnoFromError(const absl::Status& status);  // the non-OK case
inline int ErrnoFromStatus(const absl::Status& status) {
  return status.ok() ? 0 : ErrnoFromError(status);
}

}  // namespace demi

#endif  // DEMI_COMMON_ERRNO_STATUS_H_
