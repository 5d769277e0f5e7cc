#include "rdma/large_buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::rdma {

absl::StatusOr<std::unique_ptr<LargeBufferPool>> LargeBufferPool::Create(
    Registrar* registrar, const LargeBufferPoolOptions& options) {
  if (registrar == nullptr || options.max_bytes < kMinCapacity) {
    return ErrnoError(EINVAL, "large buffer pool: bad options");
  }
  return std::unique_ptr<LargeBufferPool>(
      new LargeBufferPool(registrar, options));
}

LargeBufferPool::~LargeBufferPool() {
  demi::MutexLock lock(&mu_);
  for (auto& kept : kept_) {
    for (LargeBuffer* buffer : kept) Destroy(buffer);
  }
  for (const LargeBuffer* buffer : allocated_) {
    Destroy(const_cast<LargeBuffer*>(buffer));
  }
}

size_t LargeBufferPool::ClassOf(size_t size) {
  size_t size_class = 0;
  while ((kMinCapacity << size_class) < size) ++size_class;
  return size_class;
}

void LargeBufferPool::Destroy(LargeBuffer* buffer) {
  buffer->registration_.reset();  // Deregister before unmapping.
  if (munmap(buffer->data_, buffer->capacity_) != 0) {
    DEMI_LOG(kWarning, "large buffer pool: munmap failed, errno ", errno);
  }
  delete buffer;
}

absl::StatusOr<LargeBuffer*> LargeBufferPool::Allocate(size_t size) {
  if (size == 0) return ErrnoError(EINVAL, "large buffer of 0 bytes");
  if (size > options_.max_bytes) {
    return ErrnoError(
        ENOBUFS, absl::StrCat("a buffer of ", size, " bytes passes the cap of ",
                              options_.max_bytes));
  }
  const size_t size_class = ClassOf(size);
  if (size_class >= kClasses) return ErrnoError(ENOBUFS, "buffer too large");
  const size_t capacity = kMinCapacity << size_class;
  if (capacity > options_.max_bytes) {
    return ErrnoError(
        ENOBUFS, absl::StrCat("a buffer of ", size, " bytes needs ", capacity,
                              ", above the cap"));
  }
  // Kept buffers dropped to make room: unmapped and deregistered after the
  // lock is released (each is a system call or two that every thread's
  // Allocate and Free would otherwise wait for).
  std::vector<LargeBuffer*> dropped;
  absl::Status full;
  {
    demi::MutexLock lock(&mu_);
    if (!kept_[size_class].empty()) {
      LargeBuffer* buffer = kept_[size_class].back();
      kept_[size_class].pop_back();
      buffer->pins_.Reset();
      allocated_.insert(buffer);
      in_use_bytes_ += capacity;
      return buffer;
    }
    // Make room by dropping kept buffers, largest first.
    for (size_t c = kClasses;
         c-- > 0 && mapped_bytes_ + capacity > options_.max_bytes;) {
      while (!kept_[c].empty() &&
             mapped_bytes_ + capacity > options_.max_bytes) {
        mapped_bytes_ -= kept_[c].back()->capacity_;
        dropped.push_back(kept_[c].back());
        kept_[c].pop_back();
      }
    }
    if (mapped_bytes_ + capacity > options_.max_bytes) {
      full = ErrnoError(EAGAIN, absl::StrCat("large buffers in use fill the "
                                             "cap (",
                                             in_use_bytes_, " of ",
                                             options_.max_bytes, " bytes)"));
    } else {
      mapped_bytes_ += capacity;  // Reserved while mapping outside the lock.
    }
  }
  for (LargeBuffer* buffer : dropped) Destroy(buffer);
  if (!full.ok()) return full;
  auto unreserve = [&] {
    demi::MutexLock lock(&mu_);
    mapped_bytes_ -= capacity;
  };
  void* data = mmap(nullptr, capacity, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) {
    unreserve();
    return ErrnoStatus(ENOMEM, absl::StrCat("mmap of ", capacity, " bytes"));
  }
  absl::StatusOr<std::unique_ptr<Registration>> registration =
      registrar_->Register(data, capacity);
  if (!registration.ok() && ErrnoFromStatus(registration.status()) == ENOMEM) {
    // Past the locked-memory limit (RLIMIT_MEMLOCK, rdma/locked_memory.h):
    // drop every kept buffer (each still pinned) and try once more.
    if (DropKept() > 0) registration = registrar_->Register(data, capacity);
  }
  if (!registration.ok()) {
    munmap(data, capacity);
    unreserve();
    return registration.status();
  }
  auto* buffer = new LargeBuffer();
  buffer->data_ = data;
  buffer->capacity_ = capacity;
  buffer->registration_ = *std::move(registration);
  demi::MutexLock lock(&mu_);
  allocated_.insert(buffer);
  in_use_bytes_ += capacity;
  return buffer;
}

size_t LargeBufferPool::DropKept() {
  std::vector<LargeBuffer*> kept;
  size_t bytes = 0;
  {
    demi::MutexLock lock(&mu_);
    for (std::vector<LargeBuffer*>& size_class : kept_) {
      for (LargeBuffer* buffer : size_class) {
        mapped_bytes_ -= buffer->capacity_;
        bytes += buffer->capacity_;
        kept.push_back(buffer);
      }
      size_class.clear();
    }
  }
  // Unmapped and deregistered outside the lock (see Allocate).
  for (LargeBuffer* buffer : kept) Destroy(buffer);
  return bytes;
}

absl::Status LargeBufferPool::Free(LargeBuffer* buffer) {
  {
    demi::MutexLock lock(&mu_);
    if (buffer == nullptr || allocated_.erase(buffer) == 0) {
      return ErrnoError(EINVAL, "not an allocated large buffer");
    }
    in_use_bytes_ -= buffer->capacity_;
    if (buffer->capacity_ <= kMaxCachedCapacity) {
      kept_[ClassOf(buffer->capacity_)].push_back(buffer);
      return absl::OkStatus();
    }
    mapped_bytes_ -= buffer->capacity_;
  }
  Destroy(buffer);  // outside the lock, as Allocate's dropped buffers
  return absl::OkStatus();
}

bool LargeBufferPool::IsAllocated(const LargeBuffer* buffer) const {
  demi::MutexLock lock(&mu_);
  return allocated_.contains(buffer);
}

LargeBufferPoolStats LargeBufferPool::Stats() const {
  demi::MutexLock lock(&mu_);
  return {mapped_bytes_, in_use_bytes_, allocated_.size()};
}

}  // namespace demi::rdma
