// Early-return helpers for absl::Status and absl::StatusOr.
//
//   DEMI_RETURN_IF_ERROR(qp.PostSend(&wr));
//   DEMI_ASSIGN_OR_RETURN(ProtectionDomain pd, ProtectionDomain::Create(ctx));
//
// Both return the error status from the enclosing function, which must return
// absl::Status or absl::StatusOr<T>.

#ifndef DEMI_COMMON_STATUS_MACROS_H_
#define DEMI_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DEMI_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status demi_status_ = (expr);        \
    if (!demi_status_.ok()) return demi_status_; \
  } while (0)

#define DEMI_STATUS_CONCAT_INNER(a, b) a##b
#define DEMI_STATUS_CONCAT(a, b) DEMI_STATUS_CONCAT_INNER(a, b)

#define DEMI_ASSIGN_OR_RETURN(lhs, expr) \
  DEMI_ASSIGN_OR_RETURN_IMPL(DEMI_STATUS_CONCAT(demi_or_, __LINE__), lhs, expr)

#define DEMI_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(*tmp)

#endif  // DEMI_COMMON_STATUS_MACROS_H_
