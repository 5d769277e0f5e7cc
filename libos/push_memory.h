// PushMemory: what the memory of a pushed array is, how a queue pair reads
// it, and free protection while it does. Every push (stream and datagram)
// and every demi_sgafree goes through it: this is the one answer to "what
// memory is this?".
//
// sga_buf names one of:
//  * nothing (NULL): application memory, every segment leased from the
//    target device's RegionCache;
//  * a demi_sgaalloc buffer (a PoolBuffer up to the eager limit, else a
//    LargeBuffer), registered in the first device's protection domain;
//  * a popped array (a ReceiveHandle): a receive buffer of a connection or
//    datagram socket, or the LargeBuffer a rendezvous message was pulled
//    into, registered in its queue's device's protection domain.
// Anything else, or an array already freed, is EINVAL. A segment that lies
// inside the named buffer is sent by the buffer's keys (zero copy) when the
// target queue pair is in the same protection domain; other segments, and
// every segment when the target is on another device, are leased from the
// target device's RegionCache (still zero copy: the pages are registered
// there). A rendezvous send needs keys the peer may read with: a popped eager
// buffer (registered for local access only) is then leased from the cache
// too.
//
// Free protection: freeing a demi_sgaalloc buffer or a popped array while
// pushes read it succeeds at once, but the buffer goes back to its pool (a
// receive buffer: to its queue, re-posted, a credit for the peer) only when
// the last such push finished. Each buffer keeps that count itself (its
// PinCount: a push pins it in Map, unpins it when done), so pushes on
// different workers' queues may read one buffer. Leased regions are
// released when their push finishes.
//
// Thread-safety: one PushMemory per worker, whose lock guards every call,
// and one of no worker (worker index kMaxQdWorkers) for demi_sgafree, whose
// Classify() and Free() are safe from any thread. A popped array's buffer
// goes back to its queue under the lock of the handle's worker: a
// PushMemory of another worker (or of none) hands it to `return_elsewhere`
// instead (which must get it there). The devices and the handle table must
// outlive this object.

#ifndef DEMI_LIBOS_PUSH_MEMORY_H_
#define DEMI_LIBOS_PUSH_MEMORY_H_

#include <demi/types.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>

#include "absl/base/attributes.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/pin_count.h"
#include "libos/receive_handles.h"
#include "libos/token_table.h"
#include "rdma/buffer_cache.h"
#include "rdma/buffer_pool.h"
#include "rdma/datagram_wire.h"
#include "rdma/device_registry.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/rc_connection.h"
#include "rdma/region_cache.h"
#include "rdma/wire.h"

namespace demi::libos {

// The checks every push makes of its array before anything else: not null,
// 1..DEMI_SGARRAY_MAXSIZE segments, none null or empty. Returns 0 and sets
// *total to the total length, or returns EINVAL and sets *why (a static
// string) to what is wrong. No status object: it is on every push's path.
int CheckPushArray(const demi_sgarray_t* sga, uint64_t* total,
                   const char** why);

// The segments of `sga` for an inline send (the CPU copies the bytes at
// post, so no keys): out[i] = {segment i, keys 0}. See InlineReadable.
void UnmappedSegments(const demi_sgarray_t& sga, rdma::Segment* out);

// A push in flight: the array (returned in its result) and what keeps its
// memory valid until the device is done with it.
struct PushRecord {
  demi_sgarray_t sga;
  void* library_buffer = nullptr;      // a demi_sgaalloc buffer it pins
  ReceiveHandle* received = nullptr;   // a popped array it pins
  rdma::RegionCache* cache = nullptr;  // where `regions` were leased
  uint32_t num_regions = 0;
  rdma::RegionCache::Region* regions[DEMI_SGARRAY_MAXSIZE];
};

// The pushes in flight, by token: an array indexed by the token's slot
// (TokenTable::IndexOf), so finding a push is one index and one compare.
// The array is calloc'ed: an all-zero entry is a free one, and pages of it
// are only backed by memory once a push uses them.
class PushTable {
 public:
  explicit PushTable(uint32_t capacity);

  // Records the push of `qt` (which must not be recorded yet).
  void Insert(demi_qtoken_t qt, const PushRecord& record) {
    Entry& entry = entries_.get()[TokenTable::IndexOf(qt)];
    entry.qt = qt;
    entry.record = record;
  }
  // The record of `qt`, or null if it has none (never pushed, or erased).
  PushRecord* Find(demi_qtoken_t qt) {
    const uint32_t index = TokenTable::IndexOf(qt);
    if (index >= capacity_ || entries_.get()[index].qt != qt) return nullptr;
    return &entries_.get()[index].record;
  }
  void Erase(demi_qtoken_t qt) {
    const uint32_t index = TokenTable::IndexOf(qt);
    if (index < capacity_ && entries_.get()[index].qt == qt) {
      entries_.get()[index].qt = 0;
    }
  }
  // Calls f(record) for every recorded push (slow: walks the array).
  template <typename F>
  void ForEach(F f) {
    for (uint32_t i = 0; i < capacity_; ++i) {
      if (entries_.get()[i].qt != 0) f(entries_.get()[i].record);
    }
  }

 private:
  struct Entry {
    demi_qtoken_t qt;  // 0: free
    PushRecord record;
  };
  struct Free {
    void operator()(Entry* entries) const { std::free(entries); }
  };
  const uint32_t capacity_;
  std::unique_ptr<Entry, Free> entries_;
};

class PushMemory {
 public:
  // Gives a popped array's buffer back on another worker (see above).
  using ReturnElsewhere = std::function<void(ReceiveHandle&)>;

  // The memory of worker `worker`.
  PushMemory(const rdma::DeviceRegistry& devices, ReceiveHandleTable& handles,
             uint32_t worker, ReturnElsewhere return_elsewhere);

  // What an sga_buf names, and where segments may lie to be sent by its
  // keys. EINVAL if it is none of the kinds above or was freed.
  struct Buffer {
    enum class Kind { kApplication, kPool, kLarge, kReceived };
    Kind kind = Kind::kApplication;
    rdma::RegisteredSpan span;          // empty for kApplication
    ReceiveHandle* received = nullptr;  // kReceived
  };
  absl::StatusOr<Buffer> Identify(const void* sga_buf) const;
  // Identify() without a status object, for the push path: 0, or EINVAL
  // (unknown or freed) / EIO (a popped array whose buffer is not held) with
  // *why set to a static message.
  int Describe(const void* sga_buf, Buffer* buffer, const char** why) const;

  // Whether the CPU may copy every segment of `sga` now (an inline send:
  // no keys needed): each lies inside `buffer`'s span (from Describe), or
  // inside application memory the region cache of `pd` watches (a proof
  // kept from the last such push, renewed by one cache lookup when stale).
  // False for memory never pushed before or possibly unmapped: Map it then,
  // which registers it (or reports EFAULT) and caches it for next time.
  bool InlineReadable(const demi_sgarray_t& sga, const Buffer& buffer,
                      ibv_pd* pd);

  // Fills `segments` (sga.sga_numsegs of them) and `record` for sending
  // `sga` (checked by CheckPushArray) on a queue pair in `pd` (local keys:
  // a rendezvous send registers what the peer may read itself). The buffer
  // `sga_buf` names is pinned (protected from
  // demi_sgafree) from here. EINVAL if it was freed meanwhile. On error
  // nothing stays leased or pinned. Follow with Finished() when the push is
  // done, or Unmap() if it never went out.
  // `buffer` is what Identify(sga.sga_buf) returned.
  absl::Status Map(const demi_sgarray_t& sga, const Buffer& buffer, ibv_pd* pd,
                   rdma::Segment* segments, PushRecord* record);
  // A mapped push that never went out, or whose bytes went inline at post:
  // as Finished().
  void Unmap(const PushRecord& record) { Finished(record); }
  // A mapped push is done (completed, failed, or abandoned): releases its
  // leases and pins, and frees what a demi_sgafree deferred to it.
  void Finished(const PushRecord& record);
  // After a registration the locked-memory limit refused (ENOMEM,
  // rdma/locked_memory.h): drops what stays pinned only for reuse, the
  // idle cached registrations of `pd`'s device and the kept large buffers,
  // so that one more attempt may fit. True if anything was dropped.
  bool DropIdleRegistrations(ibv_pd* pd);

  // Finished() for a push whose queues are gone (the LibOS going away):
  // leaves receive handles alone (they went with their queues).
  void Abandon(const PushRecord& record);

  // demi_sgafree of library memory or a popped array (EINVAL for anything
  // else, or a second free). Library memory: safe from any thread. A popped
  // array of this worker's queues: under this worker's lock; of another
  // worker's: its buffer goes to `return_elsewhere`.
  // `buffer` is what Classify() said `sga_buf` is. A pool buffer free now
  // goes to `keep` (the calling thread's stock) while it has room.
  absl::Status Free(void* sga_buf, const Buffer& buffer,
                    rdma::BufferCache* keep = nullptr);

  // The one classification behind Identify(), Describe() and Free(): fills
  // buffer->kind and buffer->received (not the span, which only a push
  // needs); false if sga_buf names nothing the library knows, or was freed.
  // Safe from any thread (it reads only atomics and what is fixed while
  // the buffer is allocated).
  bool Classify(const void* sga_buf, Buffer* buffer) const;

 private:
  void ReleaseLeases(const PushRecord& record) const;
  bool InlineReadableSegment(const demi_sgaseg_t& segment,
                             const rdma::RegisteredSpan& span, ibv_pd* pd);
  // The free protection of a demi_sgaalloc buffer (a PoolBuffer or a
  // LargeBuffer the pools handed out).
  PinCount& LibraryPins(const void* buffer) const;
  absl::Status FreeLibraryBuffer(void* buffer) const;
  // A popped array's buffer is free of the application and of every push:
  // back to its queue (here, or on its own worker).
  void GiveBack(ReceiveHandle& handle);

  const rdma::DeviceRegistry& devices_;
  ReceiveHandleTable& handles_;
  const uint32_t worker_;
  const ReturnElsewhere return_elsewhere_;
  // InlineReadable's proof for application memory (from mapped_cache_).
  rdma::RegionCache* mapped_cache_ = nullptr;
  rdma::RegionCache::MappedPages mapped_;
};

// ---- The push path's checks, defined here to be inlined into every push
// (each is a few instructions; a call costs as much) -------------------------

// A push's array must fit one stream message and one datagram.
static_assert(DEMI_SGARRAY_MAXSIZE <= rdma::wire::kMaxSegments,
              "a demi_sgarray_t's segments must fit one stream message");
static_assert(DEMI_SGARRAY_MAXSIZE <= rdma::datagram_wire::kMaxSegments,
              "a demi_sgarray_t's segments must fit one datagram");

inline int CheckPushArray(const demi_sgarray_t* sga, uint64_t* total,
                          const char** why) {
  if (sga == nullptr) {
    *why = "null scatter-gather array";
    return EINVAL;
  }
  if (sga->sga_numsegs == 0 || sga->sga_numsegs > DEMI_SGARRAY_MAXSIZE) {
    *why = "the segment count is not 1 to DEMI_SGARRAY_MAXSIZE";
    return EINVAL;
  }
  uint64_t sum = 0;
  for (uint32_t i = 0; i < sga->sga_numsegs; ++i) {
    if (sga->sga_segs[i].sgaseg_buf == nullptr ||
        sga->sga_segs[i].sgaseg_len == 0) {
      *why = "a segment is null or empty";
      return EINVAL;
    }
    sum += sga->sga_segs[i].sgaseg_len;
  }
  *total = sum;
  return 0;
}

inline void UnmappedSegments(const demi_sgarray_t& sga, rdma::Segment* out) {
  for (uint32_t i = 0; i < sga.sga_numsegs; ++i) {
    out[i] = {sga.sga_segs[i].sgaseg_buf, sga.sga_segs[i].sgaseg_len, 0, 0};
  }
}

namespace push_memory_internal {

// The registered memory of a demi_sgaalloc buffer (a PoolBuffer or a
// LargeBuffer: both registered in `pd` for local access only; a peer reads
// a rendezvous message through a registration of its own, see
// rdma::RcConnection).
template <typename LibraryBuffer>
rdma::RegisteredSpan LibrarySpan(const LibraryBuffer* buffer, ibv_pd* pd) {
  return {static_cast<const uint8_t*>(buffer->data()), buffer->capacity(),
          buffer->keys().lkey, buffer->keys().rkey, pd};
}

}  // namespace push_memory_internal

inline bool PushMemory::Classify(const void* sga_buf, Buffer* buffer) const {
  buffer->kind = Buffer::Kind::kApplication;
  buffer->received = nullptr;
  if (sga_buf == nullptr) return true;
  // demi_sgaalloc buffers first (the pool's check is O(1)), then popped
  // arrays (also O(1)), then large buffers. A buffer freed while pushes
  // read it is still allocated, but released.
  const auto* pool_buffer = static_cast<const rdma::PoolBuffer*>(sga_buf);
  if (devices_.pool().IsAllocated(pool_buffer)) {
    buffer->kind = Buffer::Kind::kPool;
    return !pool_buffer->pins().released();
  }
  ReceiveHandle* handle = handles_.Find(sga_buf);
  if (handle != nullptr && handle->popped()) {
    buffer->kind = Buffer::Kind::kReceived;
    buffer->received = handle;
    return true;
  }
  const auto* large = static_cast<const rdma::LargeBuffer*>(sga_buf);
  if (devices_.large_pool().IsAllocated(large)) {
    buffer->kind = Buffer::Kind::kLarge;
    return !large->pins().released();
  }
  return false;
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline int PushMemory::Describe(
    const void* sga_buf, Buffer* buffer, const char** why) const {
  if (!Classify(sga_buf, buffer)) {
    *why =
        "sga_buf is neither NULL, nor memory from demi_sgaalloc, nor a popped "
        "array (or the array was freed)";
    return EINVAL;
  }
  switch (buffer->kind) {
    case Buffer::Kind::kApplication:
      break;
    case Buffer::Kind::kPool:
      buffer->span = push_memory_internal::LibrarySpan(
          static_cast<const rdma::PoolBuffer*>(sga_buf), devices_.pool_pd());
      break;
    case Buffer::Kind::kReceived:
      buffer->span =
          buffer->received->owner()->HeldBuffer(buffer->received->buffer_index);
      if (buffer->span.data == nullptr) {
        *why = "a popped array's buffer is not held";
        return EIO;
      }
      break;
    case Buffer::Kind::kLarge:
      buffer->span = push_memory_internal::LibrarySpan(
          static_cast<const rdma::LargeBuffer*>(sga_buf), devices_.pool_pd());
      break;
  }
  return 0;
}

namespace push_memory_internal {

// Whether [address, address + length) lies inside [begin, begin + size).
inline bool Inside(uintptr_t address, size_t length, uintptr_t begin,
                   size_t size) {
  return address >= begin && length <= size && address - begin <= size - length;
}

}  // namespace push_memory_internal

inline bool PushMemory::InlineReadableSegment(const demi_sgaseg_t& segment,
                                              const rdma::RegisteredSpan& span,
                                              ibv_pd* pd) {
  const auto address = reinterpret_cast<uintptr_t>(segment.sgaseg_buf);
  if (span.data != nullptr &&
      push_memory_internal::Inside(address, segment.sgaseg_len,
                                   reinterpret_cast<uintptr_t>(span.data),
                                   span.size)) {
    return true;
  }
  const rdma::AddressRange& pages = mapped_.pages;
  if (mapped_cache_ != nullptr && mapped_cache_->StillMapped(mapped_) &&
      push_memory_internal::Inside(address, segment.sgaseg_len, pages.begin,
                                   pages.end - pages.begin)) {
    return true;
  }
  rdma::RegionCache* cache = devices_.CacheFor(pd);
  if (cache == nullptr ||
      !cache->FindMapped(segment.sgaseg_buf, segment.sgaseg_len, &mapped_)) {
    return false;
  }
  mapped_cache_ = cache;
  return true;
}

inline bool PushMemory::InlineReadable(const demi_sgarray_t& sga,
                                       const Buffer& buffer, ibv_pd* pd) {
  for (uint32_t i = 0; i < sga.sga_numsegs; ++i) {
    if (!InlineReadableSegment(sga.sga_segs[i], buffer.span, pd)) return false;
  }
  return true;
}

}  // namespace demi::libos

#endif  // DEMI_LIBOS_PUSH_MEMORY_H_
