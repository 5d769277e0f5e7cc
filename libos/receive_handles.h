// Receive handles: what sga_buf of a popped array points to.
//
// Every queue that pops messages (a stream connection, a datagram socket) is
// a ReceiveBufferOwner with one ReceiveHandle per message its receive buffers
// can hold (one per buffer, or several where small messages share a buffer).
// A pop hands the application a pointer to the handle of its message;
// demi_sgafree and demi_push of that array find the handle again through the
// one ReceiveHandleTable of the LibOS, whatever kind of queue owns it.
//
// A handle goes through: free (the buffer is the device's) -> popped (the
// application's, after a pop) -> back to free by demi_sgafree, or, when a
// push still reads the buffer, to free_pending until the last such push
// completes (free protection). Only then is the buffer given back to its
// owner (re-posted, a credit returned to the peer).
//
// Thread-safety. Each handle belongs to the worker of its owner (`worker`):
// that worker's lock guards the owner and every ReturnBuffer. The table is
// shared by every worker: Add and Remove lock its own mutex (connection set
// up and teardown only); Find takes no lock and may run on any thread. A
// handle's free protection (`pins`) is atomic, so a push on another
// worker's queue may pin and unpin it; whoever learns it is to give the
// buffer back does so under the owner's worker lock.

#ifndef DEMI_LIBOS_RECEIVE_HANDLES_H_
#define DEMI_LIBOS_RECEIVE_HANDLES_H_

#include <demi/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/mutex.h"
#include "common/pin_count.h"
#include "common/reserved_range.h"
#include "rdma/segment.h"

namespace demi::libos {

// A queue whose receive buffers are lent to the application by pops.
class ReceiveBufferOwner {
 public:
  // The registered memory of buffer `index` while it is lent out (every
  // segment of the popped message lies in it); empty if it is not. May be
  // called from any thread while the buffer is lent: what it reads of a
  // lent buffer does not change until the buffer is returned.
  virtual rdma::RegisteredSpan HeldBuffer(uint32_t index) const = 0;
  // The application and every push are done with buffer `index`: give it
  // back to the device. Called once per pop (so once per message of a buffer
  // that held several).
  virtual void ReturnBuffer(uint32_t index) = 0;

 protected:
  ~ReceiveBufferOwner() = default;
};

struct ReceiveHandle {
  // The queue, or null while the handle is in no live array. Set by Add and
  // cleared by Remove; read by Find from any thread.
  ReceiveBufferOwner* owner() const {
    return owner_.load(std::memory_order_acquire);
  }
  // Lent to the application (popped), not yet freed.
  bool popped() const { return !pins.released(); }

  std::atomic<ReceiveBufferOwner*> owner_{nullptr};
  uint32_t buffer_index = 0;
  uint32_t worker = 0;  // the worker whose lock guards the owner
  // demi_sgafree gives the buffer back at once, under the worker's lock,
  // rather than through its return stack at the next round: for receive
  // queues with no flow control (datagrams), where a buffer re-posted a
  // round later may be a datagram lost meanwhile.
  bool return_at_once = false;
  // Released while the buffer is not the application's (the device's, or
  // freed); pinned by each push in flight that reads it. LendPopped resets
  // it; the last of demi_sgafree and those pushes gives the buffer back.
  PinCount pins{/*released=*/true};
  // The worker's return stack (Worker::ReturnLater): the next handle, while
  // this one waits there.
  ReceiveHandle* return_next = nullptr;
};

// Lends the buffer of `handle` to the application as the popped array
// `sga`: its `n` segments are data[i] / lengths[i] (in that buffer), sga_buf
// names the handle (what demi_sgafree and demi_push find again). The caller
// sets sga_addr and counts the buffer as held.
inline void LendPopped(ReceiveHandle& handle, const uint8_t* const* data,
                       const uint32_t* lengths, uint32_t n,
                       demi_sgarray_t* sga) {
  handle.pins.Reset();
  sga->sga_buf = &handle;
  sga->sga_numsegs = n;
  for (uint32_t i = 0; i < n; ++i) {
    sga->sga_segs[i].sgaseg_buf = const_cast<uint8_t*>(data[i]);
    sga->sga_segs[i].sgaseg_len = lengths[i];
  }
}

// Every queue's handles, found by address in O(1).
//
// All handles live in one address range reserved at construction (room for
// kMaxHandles, mapped PROT_NONE and made read-write as it fills; pages are
// kept for reuse, never returned). An array is a run of consecutive handles
// there; a removed array's run is reused by the next Add of the same count.
// Find() checks the pointer's offset in the range (inside the used part, at
// a multiple of the handle size) and that its handle belongs to a live array
// (owner set): it reads nothing a foreign pointer points to.
class ReceiveHandleTable {
 public:
  static constexpr size_t kMaxHandles = size_t{1} << 22;

  ReceiveHandleTable();
  ReceiveHandleTable(const ReceiveHandleTable&) = delete;
  ReceiveHandleTable& operator=(const ReceiveHandleTable&) = delete;

  // A new array of `count` (> 0) handles (indices 0..count-1) for `owner`
  // of worker `worker` (`return_at_once`: see ReceiveHandle), `per_buffer` (>
  // 0) consecutive ones for each of its receive buffers (handle i names buffer
  // i / per_buffer: one handle per message a buffer may hold); owned by the
  // table, valid until Remove(). Null if the range is full (kMaxHandles in use)
  // or the memory cannot be mapped.
  ReceiveHandle* Add(ReceiveBufferOwner& owner, uint32_t count,
                     uint32_t per_buffer = 1, uint32_t worker = 0,
                     bool return_at_once = false) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets an array Add() returned; null is ignored.
  void Remove(ReceiveHandle* handles) ABSL_LOCKS_EXCLUDED(mu_);
  // The live handle `pointer` points to, or null if it points to none (it
  // is never dereferenced unless it lies in the table's range).
  ReceiveHandle* Find(const void* pointer) const {
    const uintptr_t offset = reinterpret_cast<uintptr_t>(pointer) -
                             reinterpret_cast<uintptr_t>(range_.base());
    if (offset >=
            used_.load(std::memory_order_acquire) * sizeof(ReceiveHandle) ||
        offset % sizeof(ReceiveHandle) != 0) {
      return nullptr;
    }
    ReceiveHandle* handle = base() + offset / sizeof(ReceiveHandle);
    return handle->owner() != nullptr ? handle : nullptr;
  }

 private:
  ReceiveHandle* base() const {
    return reinterpret_cast<ReceiveHandle*>(range_.base());
  }

  ReservedRange range_;  // empty (base null) if the reservation failed
  demi::Mutex mu_;       // Add and Remove
  // Handles placed (live or in free runs): written under mu_, read by Find.
  std::atomic<size_t> used_{0};
  // Live arrays: first handle index -> count; removed runs by count.
  absl::flat_hash_map<size_t, uint32_t> arrays_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, std::vector<size_t>> free_runs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_RECEIVE_HANDLES_H_
