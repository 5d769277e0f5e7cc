// ReservedRange: address space reserved up front (mapped PROT_NONE, no
// memory behind it), made readable and writable from its start as it fills.
//
// For tables whose objects must never move and whose "is this pointer one of
// ours?" must be answered by arithmetic alone: every object lies in one
// range, so a pointer is checked by its offset from base() before anything
// it points to is read (BufferPool's descriptors, the LibOS's receive
// handles). Pages made writable stay so until the range goes.
//
// Thread-safety: none; the owner serializes Grow(). Move-only; unmaps on
// destruction (logging a failure).

#ifndef DEMI_COMMON_RESERVED_RANGE_H_
#define DEMI_COMMON_RESERVED_RANGE_H_

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace demi {

class ReservedRange {
 public:
  // Reserves at least `bytes` (> 0; rounded up to whole pages). ENOMEM if
  // the address space is not there.
  static absl::StatusOr<ReservedRange> Reserve(size_t bytes);

  ReservedRange() = default;
  ReservedRange(ReservedRange&& other) noexcept { *this = std::move(other); }
  ReservedRange& operator=(ReservedRange&& other) noexcept;
  ~ReservedRange();

  char* base() const { return base_; }
  size_t size() const { return size_; }
  // Bytes from base() that may be read and written (whole pages).
  size_t writable() const { return writable_; }

  // Makes at least [base(), base() + bytes) readable and writable (no-op if
  // it is). ENOMEM if `bytes` > size() or mprotect fails.
  absl::Status Grow(size_t bytes);

 private:
  ReservedRange(char* base, size_t size) : base_(base), size_(size) {}

  char* base_ = nullptr;
  size_t size_ = 0;
  size_t writable_ = 0;
};

}  // namespace demi

#endif  // DEMI_COMMON_RESERVED_RANGE_H_
