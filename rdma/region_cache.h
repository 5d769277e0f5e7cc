// RegionCache: registered memory for any application address range, cheap
// when the range was registered before, and never stale (region_cache.md).
//
//   RegionCache cache(&registrar, watcher, RegionCacheOptions());
//   DEMI_ASSIGN_OR_RETURN(RegionCache::Lease lease,
//                         cache.Acquire(buffer, length));
//   sge.lkey = lease.keys.lkey;   // post the work request...
//   cache.Release(lease.region);  // ...once its completion arrived
//
// Regions. A miss registers the pages under the range (page-aligned, merged
// with the cached regions it overlaps) as one region; cached regions never
// overlap and are found by address in a btree (a hit takes the lock, one
// atomic load, a logarithmic lookup: no allocation, no system call).
//
// Leases. Acquire counts a user of the region until Release. A region with
// users is never deregistered, even when it is invalidated or evicted: it
// leaves the cache at once (new lookups miss) and is deregistered when its
// last user releases it. So memory unmapped while a push reads it stays
// pinned, and the device reads the bytes that were there, until the push is
// done.
//
// Invalidation. Regions are cached only while the MemoryWatcher watches their
// pages; every change it logs drops the cached regions it overlaps (before
// the next lookup: see InvalidationLog for the ordering). Without a watcher,
// or for a range the watcher cannot watch, each Acquire registers the range
// for that lease alone and Release deregisters it ("uncached").
//
// Caps. Pinned bytes and registrations (cached, leased and uncached alike)
// stay within the options' caps: a miss first evicts idle cached regions,
// least recently used first. If leased regions alone leave no room, Acquire
// fails with EAGAIN (retry once pushes complete); a range larger than the
// byte cap by itself fails with ENOBUFS.
//
// Thread-safety: every member function is safe from any thread (one internal
// mutex, uncontended when the caller serializes, as the libOS does).
// Lifetime: the registrar and watcher must outlive the cache; every lease
// must be released before the cache is destroyed (regions still leased then
// are left registered and reported in the log, since a device may read them).

#ifndef DEMI_RDMA_REGION_CACHE_H_
#define DEMI_RDMA_REGION_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "rdma/invalidation_log.h"
#include "rdma/memory_watcher.h"
#include "rdma/registrar.h"

namespace demi::rdma {

struct RegionCacheOptions {
  // Most bytes registered at once (>= one page).
  size_t max_pinned_bytes = size_t{2} << 30;
  // Most registrations at once (>= 1).
  size_t max_regions = 4096;
};

struct RegionCacheStats {
  uint64_t hits = 0;           // Acquires served by a cached region.
  uint64_t misses = 0;         // Acquires that registered.
  uint64_t evictions = 0;      // Idle regions dropped to make room.
  uint64_t invalidations = 0;  // Cached regions dropped by a memory change.
  uint64_t uncached = 0;       // Registrations made for one lease only.
  uint64_t pinned_bytes = 0;   // Registered now (all kinds).
  uint64_t regions = 0;        // Registrations now (all kinds).
  bool caching = false;        // A watcher is present.
};

class RegionCache {
 public:
  class Region;
  struct Lease {
    Region* region = nullptr;
    MemoryKeys keys;
  };

  // `registrar` and `watcher` are not owned. A null `watcher` registers per
  // lease (nothing is ever cached). EINVAL if an option is out of range.
  static absl::StatusOr<std::unique_ptr<RegionCache>> Create(
      Registrar* registrar, MemoryWatcher* watcher,
      const RegionCacheOptions& options);

  RegionCache(const RegionCache&) = delete;
  RegionCache& operator=(const RegionCache&) = delete;
  ~RegionCache();

  // Registered memory covering [address, address + length), leased until
  // Release(lease.region). Errors: EINVAL for a null or empty range (or one
  // that wraps around); EAGAIN / ENOBUFS as described under Caps; otherwise
  // the registration's errno (EFAULT for memory that is not mapped).
  absl::StatusOr<Lease> Acquire(const void* address, size_t length)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Ends one lease of `region` (from Acquire; each lease exactly once).
  void Release(Region* region) ABSL_LOCKS_EXCLUDED(mu_);

  // Proof that application memory can be read by the CPU now without
  // registering it: pages the watcher watches (those of a cached region),
  // and the watcher log's generation when they were seen mapped. Watched
  // pages stay watched until they are unmapped (eviction does not unwatch),
  // and an unmap bumps the generation before munmap() returns, so the pages
  // are still mapped while StillMapped() says so.
  struct MappedPages {
    AddressRange pages;
    uint64_t generation = 1;  // odd: never valid
  };
  // True, filling *mapped, if [address, address + length) lies inside one
  // cached region. False without a watcher, for a range no cached region
  // holds, or while the watcher is logging a change. Takes the lock.
  bool FindMapped(const void* address, size_t length, MappedPages* mapped)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Whether `mapped` (from FindMapped) still holds: one atomic load.
  bool StillMapped(const MappedPages& mapped) const {
    return watcher_ != nullptr &&
           watcher_->log().Generation() == mapped.generation;
  }

  // Drops the cached regions overlapping `range`, as a watcher event does.
  void Invalidate(AddressRange range) ABSL_LOCKS_EXCLUDED(mu_);

  // Deregisters every idle cached region (counted as evictions), for a
  // registration elsewhere that the locked-memory limit refused
  // (rdma/locked_memory.h); Acquire does it itself. The bytes dropped.
  size_t DropIdle() ABSL_LOCKS_EXCLUDED(mu_);

  RegionCacheStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // Checks the cached regions (sorted, disjoint, page-aligned), the LRU list
  // (exactly the idle cached regions) and the counters against the caps. EIO
  // saying what is wrong. For tests.
  absl::Status CheckInvariants() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  RegionCache(Registrar* registrar, MemoryWatcher* watcher,
              const RegionCacheOptions& options);

  // Applies what the watcher logged since the last call.
  void SyncLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InvalidateLocked(AddressRange range) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The slow path of Acquire: registers `pages` (cached if `cache` is true).
  absl::StatusOr<Lease> RegisterLocked(AddressRange pages, bool cache)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts idle regions until `bytes` more fit under the caps.
  absl::Status MakeRoomLocked(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t DropIdleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  using RegionMap = absl::btree_map<uintptr_t, Region*>;
  // Takes the cached region at `it` out of the map (and the LRU list);
  // destroys it if idle, else its last Release will. Returns the next entry.
  RegionMap::iterator DetachLocked(RegionMap::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DestroyLocked(Region* region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LruRemoveLocked(Region* region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LruPushFrontLocked(Region* region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Registrar* const registrar_;
  MemoryWatcher* const watcher_;
  const RegionCacheOptions options_;
  const uintptr_t page_size_;

  mutable demi::Mutex mu_;
  InvalidationLog::Cursor cursor_ ABSL_GUARDED_BY(mu_);
  // Cached regions by end address (one past the last byte): the first entry
  // with end > a is the only one that can contain a.
  RegionMap cached_ ABSL_GUARDED_BY(mu_);
  // Idle cached regions, most recently used first.
  Region* lru_head_ ABSL_GUARDED_BY(mu_) = nullptr;
  Region* lru_tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  RegionCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_REGION_CACHE_H_
