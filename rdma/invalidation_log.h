// InvalidationLog: address ranges whose pages changed, from one producer (a
// memory watcher) to any number of readers (registration caches).
//
// The producer appends ranges inside a write section; each reader keeps a
// Cursor and reads what was appended since. The log is a ring of kCapacity
// ranges: a reader that falls further behind is told it lost ranges (and
// must then assume every address changed).
//
// Ordering: the producer opens the write section *before* it learns of a
// change (for a userfaultfd, before read() releases the thread blocked in
// munmap), and closes it after appending. A reader that checks Changed() after
// that thread went on therefore sees the section open or the ranges appended,
// and Read() waits for an open section to close. So a lookup made after
// munmap() returned always sees the unmap.
//
// Cost: Changed() is one atomic load (the hot path); Read() takes a mutex the
// producer holds only while it appends, never while it waits for anything.
//
// Thread-safety: every member function is safe from any thread; there must
// be one producer at a time (write sections do not nest).

#ifndef DEMI_RDMA_INVALIDATION_LOG_H_
#define DEMI_RDMA_INVALIDATION_LOG_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/types/span.h"
#include "common/mutex.h"

namespace demi::rdma {

// [begin, end) in the process's address space.
struct AddressRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;
};

class InvalidationLog {
 public:
  static constexpr size_t kCapacity = 1024;

  // A reader's position. Starts at the beginning of the log.
  struct Cursor {
    uint64_t generation = 0;  // The generation last read completely.
    uint64_t next = 0;        // Index of the next range to read.
  };

  InvalidationLog() = default;
  InvalidationLog(const InvalidationLog&) = delete;
  InvalidationLog& operator=(const InvalidationLog&) = delete;

  // Producer side. Between BeginWrite and EndWrite, Append records ranges.
  void BeginWrite() ABSL_EXCLUSIVE_LOCK_FUNCTION(mu_);
  void Append(AddressRange range) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndWrite() ABSL_UNLOCK_FUNCTION(mu_);

  // True if something may have been appended since `cursor` last caught up
  // (or a write section is open). No lock, no system call.
  bool Changed(const Cursor& cursor) const {
    return generation_.load(std::memory_order_acquire) != cursor.generation;
  }

  // The generation now: bumped by every write section, odd while one is
  // open. Equal readings at two times, even, mean nothing was appended in
  // between. No lock, no system call.
  uint64_t Generation() const {
    return generation_.load(std::memory_order_acquire);
  }

  // Copies into `out` the ranges appended since `cursor`, oldest first, up to
  // out.size() of them, and advances the cursor past them; returns how many.
  // Waits for an open write section to close. Sets *lost (and skips to the
  // newest range) if the ring overwrote ranges the cursor had not read. Call
  // until it returns fewer than out.size(): the cursor is then caught up.
  size_t Read(Cursor* cursor, absl::Span<AddressRange> out, bool* lost)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable demi::Mutex mu_;
  // Odd while a write section is open; bumped on BeginWrite and EndWrite.
  std::atomic<uint64_t> generation_{0};
  uint64_t appended_ ABSL_GUARDED_BY(mu_) = 0;  // Ranges appended ever.
  std::array<AddressRange, kCapacity> ring_ ABSL_GUARDED_BY(mu_);
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_INVALIDATION_LOG_H_
