// BufferCache: one thread's stock of free buffers of a BufferPool.
//
// The pool hands out and takes back buffers under its mutex, which every
// thread shares. A thread that allocates and frees small buffers all the
// time (an application's demi_sgaalloc / demi_sgafree per message) keeps
// the buffers it frees here, up to kDepth per size class, and takes its
// next ones from here: no lock, no atomic, a few loads and stores. Only an
// empty class asks the pool, and only a full one gives back to it.
//
//   BufferCache cache(pool);                 // one per thread
//   PoolBuffer* b = cache.Allocate(size);    // null: see pool.Allocate
//   ...
//   if (!cache.Keep(b)) pool.Free(b);        // full: back to the pool
//
// A kept buffer stays allocated as far as the pool knows (IsAllocated is
// true, Stats count it in use); its holder's PinCount says it was released,
// which is how a push or a free of a stale pointer to it is refused.
//
// Thread-safety: none; one thread owns a cache. Lifetime: the pool must
// outlive the cache, which gives every kept buffer back when destroyed
// (or drops them, after Forget(), when the pool is gone).

#ifndef DEMI_RDMA_BUFFER_CACHE_H_
#define DEMI_RDMA_BUFFER_CACHE_H_

#include <cstddef>
#include <cstdint>

#include "rdma/buffer_pool.h"

namespace demi::rdma {

class BufferCache {
 public:
  // Buffers kept per size class: a bound on what one thread holds back
  // from the others (at most kDepth * capacity bytes per class).
  static constexpr uint32_t kDepth = 16;

  explicit BufferCache(BufferPool& pool) : pool_(&pool) {}
  BufferCache(const BufferCache&) = delete;
  BufferCache& operator=(const BufferCache&) = delete;
  // Gives every kept buffer back to the pool (unless Forget() was called).
  ~BufferCache();

  BufferPool& pool() const { return *pool_; }

  // A kept buffer of capacity >= `size` (0 < size <= the pool's
  // max_buffer_size()), handed out again (its pins reset), or null if this
  // class has none: ask the pool then.
  PoolBuffer* Allocate(size_t size) {
    Class& c = classes_[BufferPool::ClassOf(size)];
    if (c.count == 0) return nullptr;
    PoolBuffer* buffer = c.buffers[--c.count];
    buffer->pins().Reset();
    return buffer;
  }

  // Keeps `buffer` (allocated from this pool, and free of its holder and of
  // every reader) for a later Allocate. False if its class is full: free it
  // to the pool then.
  bool Keep(PoolBuffer* buffer) {
    Class& c = classes_[buffer->size_class()];
    if (c.count == kDepth) return false;
    c.buffers[c.count++] = buffer;
    return true;
  }

  // Buffers kept, over all classes.
  size_t size() const;

  // The pool is gone: the destructor drops the kept buffers instead of
  // giving them back.
  void Forget();

 private:
  struct Class {
    uint32_t count = 0;
    PoolBuffer* buffers[kDepth];
  };

  BufferPool* pool_;
  Class classes_[BufferPool::kMaxClasses];
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_BUFFER_CACHE_H_
