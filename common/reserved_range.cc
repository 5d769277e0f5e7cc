#include "common/reserved_range.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"

namespace demi {
namespace {

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

size_t RoundUpToPage(size_t bytes) {
  const size_t page = PageSize();
  return (bytes + page - 1) / page * page;
}

}  // namespace

absl::StatusOr<ReservedRange> ReservedRange::Reserve(size_t bytes) {
  if (bytes == 0) return ErrnoError(EINVAL, "reserving 0 bytes");
  const size_t size = RoundUpToPage(bytes);
  void* base = mmap(nullptr, size, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    return ErrnoError(ENOMEM, absl::StrCat("cannot reserve ", size,
                                           " bytes of address space: ",
                                           ErrnoStatus(err, "mmap").message()));
  }
  return ReservedRange(static_cast<char*>(base), size);
}

ReservedRange& ReservedRange::operator=(ReservedRange&& other) noexcept {
  if (this != &other) {
    this->~ReservedRange();
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    writable_ = std::exchange(other.writable_, 0);
  }
  return *this;
}

ReservedRange::~ReservedRange() {
  if (base_ != nullptr && munmap(base_, size_) != 0) {
    DEMI_LOG(kError, ErrnoStatus(errno, "reserved range: munmap").message());
  }
  base_ = nullptr;
}

absl::Status ReservedRange::Grow(size_t bytes) {
  if (bytes <= writable_) return absl::OkStatus();
  if (bytes > size_) {
    return ErrnoError(
        ENOMEM, absl::StrCat(bytes, " bytes asked of a range of ", size_));
  }
  const size_t writable = std::min(size_, RoundUpToPage(bytes));
  if (mprotect(base_ + writable_, writable - writable_,
               PROT_READ | PROT_WRITE) != 0) {
    const int err = errno;
    return ErrnoError(ENOMEM, ErrnoStatus(err, "mprotect").message());
  }
  writable_ = writable;
  return absl::OkStatus();
}

}  // namespace demi
