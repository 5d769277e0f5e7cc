// MemoryWindow: owns an ibv_mw of type 2, a remote key to part of a memory
// region that only one queue pair can use.
//
// A type-2 window is bound by a work request on a queue pair's send queue
// (PrepareBind); from then on its key grants the access the bind named,
// to the bytes it named, and only to requests arriving on that queue pair.
// Deallocating the window (the destructor) revokes the key at once, in flight
// or not. A region a window is bound to must be registered with
// IBV_ACCESS_MW_BIND and outlive the window's binding: deallocate the window
// before deregistering the region (Soft-RoCE refuses to deregister a region
// with windows bound). Move-only; the protection domain must outlive it; a
// failed deallocation is logged. Not thread-safe.

#ifndef DEMI_RDMA_MEMORY_WINDOW_H_
#define DEMI_RDMA_MEMORY_WINDOW_H_

#include <infiniband/verbs.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "rdma/memory_region.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct MemoryWindowTraits {
  using Type = ibv_mw;
  static constexpr char kRelease[] = "ibv_dealloc_mw";
  static int Release(ibv_mw* mw) { return ibv_dealloc_mw(mw); }
};

class MemoryWindow {
 public:
  // True if the device can bind type-2 windows (`device` from
  // ibv_query_device).
  static bool Supported(const ibv_device_attr& device);

  // A new, unbound type-2 window in `pd` (not owned).
  static absl::StatusOr<MemoryWindow> Allocate(ibv_pd* pd);

  // Fills `wr` (sg list, chaining and signaling left to the caller) to bind
  // this window over [address, address + length) of `region` with `access`
  // (IBV_ACCESS_REMOTE_READ, ...), under a new key: the key's low byte moves
  // on at each bind, so a key of an earlier binding does not match.
  // Returns that key, valid once the request has executed.
  uint32_t PrepareBind(const MemoryRegion& region, uintptr_t address,
                       size_t length, unsigned int access, ibv_send_wr* wr);

  // The key of the latest binding (or the unbound window's).
  uint32_t rkey() const { return rkey_; }

 private:
  explicit MemoryWindow(ibv_mw* mw) : mw_(mw), rkey_(mw->rkey) {}

  Owned<MemoryWindowTraits> mw_;
  uint32_t rkey_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_MEMORY_WINDOW_H_
