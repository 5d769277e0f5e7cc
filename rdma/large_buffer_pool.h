// LargeBufferPool: registered memory for messages above the eager limit:
// where a receiver pulls a rendezvous message, and what demi_sgaalloc hands
// out for sizes above the BufferPool's largest class.
//
// Each buffer is its own page-aligned mapping with its own registration
// (through the Registrar: LOCAL_WRITE, for RDMA READ targets; a peer reads
// one pushed by rendezvous through a registration of its own). Buffers are
// sized in power-of-two classes from 16 KiB; freed buffers up to
// kMaxCachedCapacity are kept for reuse (registration is what costs), larger
// ones are unmapped at once.
//
// The cap. Every byte mapped (in use or kept) counts against max_bytes.
// Allocate drops kept buffers to make room; when buffers in use alone leave
// none it fails with EAGAIN (the caller waits for a Free and retries), and a
// size whose class is above max_bytes fails with ENOBUFS.
//
// Mapping, registering, deregistering and unmapping happen outside the
// pool's lock: a thread that allocates or frees never waits for another's
// system calls. A kept buffer dropped to make room stops counting when it
// is chosen, so the bytes mapped may pass the cap, for that moment, by what
// is being unmapped.
//
// Thread-safety: every member function is safe from any thread. Lifetime:
// the registrar must outlive the pool; buffers still allocated when the pool
// is destroyed are freed with it (the caller must be done with them).

#ifndef DEMI_RDMA_LARGE_BUFFER_POOL_H_
#define DEMI_RDMA_LARGE_BUFFER_POOL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/pin_count.h"
#include "rdma/registrar.h"

namespace demi::rdma {

struct LargeBufferPoolOptions {
  // Most bytes mapped and registered at once (>= kMinCapacity).
  size_t max_bytes = size_t{2} << 30;
};

class LargeBuffer {
 public:
  void* data() const { return data_; }
  size_t capacity() const { return capacity_; }
  MemoryKeys keys() const { return registration_->keys(); }
  // The holder's free protection (common/pin_count.h): reset by Allocate(),
  // otherwise the pool's callers' (the pool never reads it).
  PinCount& pins() const { return pins_; }

 private:
  friend class LargeBufferPool;
  LargeBuffer() = default;
  mutable PinCount pins_;
  void* data_ = nullptr;
  size_t capacity_ = 0;
  std::unique_ptr<Registration> registration_;
};

struct LargeBufferPoolStats {
  size_t mapped_bytes = 0;  // In use and kept.
  size_t in_use_bytes = 0;
  size_t in_use = 0;
};

class LargeBufferPool {
 public:
  static constexpr size_t kMinCapacity = size_t{16} << 10;
  static constexpr size_t kMaxCachedCapacity = size_t{64} << 20;

  // EINVAL if the options are out of range. `registrar` is not owned.
  static absl::StatusOr<std::unique_ptr<LargeBufferPool>> Create(
      Registrar* registrar, const LargeBufferPoolOptions& options);

  LargeBufferPool(const LargeBufferPool&) = delete;
  LargeBufferPool& operator=(const LargeBufferPool&) = delete;
  ~LargeBufferPool();

  // A registered buffer of capacity >= size (> 0, else EINVAL). EAGAIN and
  // ENOBUFS as described above; ENOMEM if mmap fails; the registration's
  // errno if registering fails.
  absl::StatusOr<LargeBuffer*> Allocate(size_t size) ABSL_LOCKS_EXCLUDED(mu_);

  // Gives `buffer` back. EINVAL, with nothing changed, for a pointer that is
  // not an allocated buffer of this pool.
  absl::Status Free(LargeBuffer* buffer) ABSL_LOCKS_EXCLUDED(mu_);

  // True if `buffer` is allocated from this pool; never dereferences it.
  bool IsAllocated(const LargeBuffer* buffer) const ABSL_LOCKS_EXCLUDED(mu_);

  LargeBufferPoolStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // Unmaps and deregisters every kept (free) buffer, for a registration
  // that the locked-memory limit refused (rdma/locked_memory.h); Allocate
  // does it itself. The bytes dropped.
  size_t DropKept() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  static constexpr size_t kClasses = 48;

  LargeBufferPool(Registrar* registrar, const LargeBufferPoolOptions& options)
      : registrar_(registrar), options_(options) {}

  static size_t ClassOf(size_t size);
  // Unmaps (and deregisters) one buffer; the caller updates the counters.
  static void Destroy(LargeBuffer* buffer);

  Registrar* const registrar_;
  const LargeBufferPoolOptions options_;

  mutable demi::Mutex mu_;
  absl::flat_hash_set<const LargeBuffer*> allocated_ ABSL_GUARDED_BY(mu_);
  std::array<std::vector<LargeBuffer*>, kClasses> kept_ ABSL_GUARDED_BY(mu_);
  size_t mapped_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t in_use_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_LARGE_BUFFER_POOL_H_
