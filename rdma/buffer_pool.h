// BufferPool: registered buffers of any size up to a maximum, for
// demi_sgaalloc (connections and datagram endpoints register receive
// memory of their own).
//
//   VerbsRegistrar registrar(pd.get(), IBV_ACCESS_LOCAL_WRITE);
//   DEMI_ASSIGN_OR_RETURN(std::unique_ptr<BufferPool> pool,
//                         BufferPool::Create(&registrar, BufferPoolOptions()));
//   DEMI_ASSIGN_OR_RETURN(PoolBuffer * buffer, pool->Allocate(1500));
//   ibv_sge sge{reinterpret_cast<uintptr_t>(buffer->data()), 1500,
//               buffer->keys().lkey};
//   ...
//   DEMI_RETURN_IF_ERROR(pool->Free(buffer));
//
// Size classes. A request of `size` bytes gets a buffer of the smallest class
// that holds it; the classes are the powers of two from 64 bytes up to the
// maximum buffer size rounded up to a power of two (8 KiB by default: 64,
// 128, ..., 8192, eight classes; at most 1 MiB: fifteen classes). Waste bound:
// a buffer of capacity c serves sizes in (c/2, c], so for sizes above 64
// bytes the capacity is less than twice the size (under half the buffer
// unused); sizes of 1..64 bytes get 64 bytes. Buffers are aligned to
// min(capacity, page size), so every buffer starts on a cache line.
//
// Chunks. Each class carves its buffers from chunks of
// max(min_chunk_bytes, 8 * capacity) bytes (256 KiB by default, so 4096
// 64-byte buffers or 32 8-KiB buffers; 8 MiB for the 1-MiB class): page-
// aligned anonymous mappings, registered once, through the Registrar, when
// the chunk is created. Chunks are powers of two, so they divide evenly into
// buffers. A class creates a chunk only when it has no free buffer, and only
// while the bytes of all chunks stay within max_pool_bytes; past the cap,
// Allocate fails with ENOMEM (a class does not borrow another class's free
// buffers). Chunks are kept for the pool's lifetime: the pool never shrinks.
//
// Descriptors. A PoolBuffer is a 32-byte descriptor owned by the pool, one
// per buffer, placed per chunk as an array (host memory, not registered: 50%
// on top of the 64-byte class, 0.4% of the 8-KiB class). Its address is the
// handle the libOS stores in demi_sgarray_t::sga_buf, so Free() and Owns()
// validate a handle before touching it. Every descriptor array lives in one
// address range the pool reserves at Create (max_pool_bytes / 64
// descriptors' worth, mapped PROT_NONE and made read-write a chunk at a
// time), one after another: a handle is ours iff it lies in the used part
// of that range at a multiple of the descriptor size, an O(1) check that
// reads nothing it points to; a per-descriptor flag rejects a double free. Free
// lists are intrusive, linked through the descriptors, so Allocate and Free
// make no system call and no heap allocation unless a chunk must be created.
//
// Thread-safety: internally synchronized (one demi::Mutex); every member
// function may be called from any thread. The lock is held only to pop or
// push a free list or to add a finished chunk: creating a chunk (mmap,
// registration) happens outside it, after reserving the chunk's bytes against
// the cap. Consequently two threads may each create a chunk for the same class
// at once, and an Allocate may get ENOMEM while another thread's chunk is
// still being registered. A buffer's data(), capacity() and keys() never
// change while the pool lives and may be read from any thread.
//
// Lifetime: the Registrar must outlive the pool. Destroying the pool destroys
// every chunk's registration, then unmaps the chunks and frees the
// descriptors. Buffers still allocated at that point are not an error (the
// libOS destroys its pools only at exit; a warning is logged), but their
// handles dangle: using them afterwards is undefined behavior.

#ifndef DEMI_RDMA_BUFFER_POOL_H_
#define DEMI_RDMA_BUFFER_POOL_H_

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/pin_count.h"
#include "common/reserved_range.h"
#include "rdma/registrar.h"

namespace demi::rdma {

class BufferPool;

// One buffer of a pool. Owned by the pool; handed out by Allocate() and given
// back with Free().
class PoolBuffer {
 public:
  PoolBuffer(const PoolBuffer&) = delete;
  PoolBuffer& operator=(const PoolBuffer&) = delete;

  // The first byte of the buffer: `capacity()` bytes, all registered.
  void* data() const { return data_; }
  // The size of the buffer's class (>= the size asked for).
  uint32_t capacity() const;
  // Its class (BufferPool::ClassOf of its capacity).
  uint32_t size_class() const { return size_class_; }
  // The keys of the registration covering the buffer (that of its chunk).
  MemoryKeys keys() const { return keys_; }
  // The holder's free protection (common/pin_count.h): reset by Allocate(),
  // otherwise the pool's callers' (the pool never reads it).
  PinCount& pins() const { return pins_; }

 private:
  friend class BufferPool;

  PoolBuffer() = default;

  // Set when the chunk is created, then constant.
  void* data_ = nullptr;
  // The pool's, under its mutex.
  PoolBuffer* next_free_ = nullptr;
  MemoryKeys keys_;
  mutable PinCount pins_;
  uint8_t size_class_ = 0;  // capacity: BufferPool::kMinCapacity << class
  // Written under the pool's mutex; read without it by IsAllocated().
  std::atomic<bool> in_use_{false};
};

struct BufferPoolOptions {
  // The largest buffer Allocate() hands out (the eager limit): 1 byte to
  // BufferPool::kMaxBufferSizeLimit.
  size_t max_buffer_size = 8 * 1024;
  // The cap on the bytes of all chunks (registered memory): > 0.
  size_t max_pool_bytes = 64 * 1024 * 1024;
  // The smallest chunk: a power of two, from the page size to 1 GiB.
  size_t min_chunk_bytes = 256 * 1024;
};

struct BufferPoolStats {
  struct SizeClass {
    uint32_t capacity = 0;  // Bytes per buffer.
    size_t chunks = 0;
    size_t buffers = 0;  // Allocated or free.
    size_t in_use = 0;   // Allocated.
  };
  size_t registered_bytes = 0;  // Bytes of all chunks.
  size_t chunks = 0;
  size_t in_use = 0;                    // Buffers allocated, over all classes.
  std::vector<SizeClass> size_classes;  // Smallest first.
};

class BufferPool {
 public:
  static constexpr size_t kMinCapacity = 64;
  static constexpr size_t kMaxBufferSizeLimit = 1024 * 1024;
  static constexpr size_t kMinBuffersPerChunk = 8;
  static constexpr size_t kMaxClasses = 15;  // 64 B .. 1 MiB.

  // The class of a request of `size` (> 0) bytes: the smallest class whose
  // capacity, kMinCapacity << class, is >= size.
  static constexpr size_t ClassOf(size_t size) {
    if (size <= kMinCapacity) return 0;
    return static_cast<size_t>(std::bit_width(size - 1)) -
           static_cast<size_t>(std::countr_zero(kMinCapacity));
  }

  // Makes an empty pool (no chunk yet) registering through `registrar` (not
  // owned; must outlive the pool). EINVAL if an option is out of range.
  static absl::StatusOr<std::unique_ptr<BufferPool>> Create(
      Registrar* registrar, const BufferPoolOptions& options);

  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();

  // Returns a buffer of capacity >= `size`, not otherwise in use. Its
  // contents are unspecified. Errors: EINVAL if `size` is 0; EMSGSIZE if
  // `size` > max_buffer_size(); ENOMEM if a chunk is needed and creating it
  // would pass max_pool_bytes, or creating it failed (the message then says
  // why, with the mmap or registration error and its errno).
  absl::StatusOr<PoolBuffer*> Allocate(size_t size) ABSL_LOCKS_EXCLUDED(mu_);

  // Gives `buffer` back to the pool. EINVAL, with nothing changed, if
  // `buffer` is null, is not a descriptor of this pool (Owns() is false) or
  // is not allocated (a double free).
  absl::Status Free(PoolBuffer* buffer) ABSL_LOCKS_EXCLUDED(mu_);

  // True if `buffer` is a descriptor of this pool, allocated or free. Never
  // dereferences a pointer that is not.
  bool Owns(const PoolBuffer* buffer) const;

  // True if `buffer` is a descriptor of this pool and is allocated: what a
  // handle passed to the libOS (e.g. in demi_push) must be. Owns() and this
  // take no lock (every push and free asks).
  bool IsAllocated(const PoolBuffer* buffer) const;

  size_t max_buffer_size() const { return options_.max_buffer_size; }

  BufferPoolStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // Walks every chunk and free list and checks that they agree with each
  // other and with the counters (EIO, saying what is wrong, if not). O(number
  // of buffers), under the lock: for tests and debugging.
  absl::Status CheckInvariants() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Chunk;
  struct SizeClass {
    PoolBuffer* free_list = nullptr;  // Linked through next_free_.
    size_t chunks = 0;
    size_t buffers = 0;
    size_t in_use = 0;
  };
  BufferPool(Registrar* registrar, const BufferPoolOptions& options,
             ReservedRange descriptors);

  static size_t ClassCapacity(size_t size_class) {
    return kMinCapacity << size_class;
  }
  size_t ChunkBytes(size_t size_class) const;

  // Maps and registers a chunk for `size_class`, outside the lock.
  absl::StatusOr<std::unique_ptr<Chunk>> CreateChunk(size_t size_class) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Places `count` descriptors for `chunk` after the used ones (making
  // pages read-write as needed) and fills them in; ENOMEM if the range is
  // full or mprotect fails.
  absl::StatusOr<PoolBuffer*> PlaceDescriptors(Chunk& chunk, size_t size_class)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckInvariantsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Registrar* const registrar_;
  const BufferPoolOptions options_;
  const size_t num_classes_;

  mutable demi::Mutex mu_;
  std::array<SizeClass, kMaxClasses> classes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Chunk>> chunks_ ABSL_GUARDED_BY(mu_);
  // The range of every descriptor (see Descriptors above; reserved at
  // Create), and the bytes of it holding descriptors, in chunk order.
  ReservedRange descriptors_ ABSL_GUARDED_BY(mu_);
  size_t descriptors_used_ ABSL_GUARDED_BY(mu_) = 0;
  // For the lock-free checks (IsAllocated, Owns): where descriptors_ starts
  // (constant), and descriptors_used_ once the descriptors below it are
  // constructed (stored with release after placing them).
  const uintptr_t descriptors_base_;
  std::atomic<size_t> descriptors_published_{0};
  size_t registered_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // Of chunks_.
  // registered_bytes_ plus the bytes of chunks being created: the figure
  // checked against the cap.
  size_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

inline uint32_t PoolBuffer::capacity() const {
  return static_cast<uint32_t>(BufferPool::kMinCapacity << size_class_);
}

}  // namespace demi::rdma

#endif  // DEMI_RDMA_BUFFER_POOL_H_
