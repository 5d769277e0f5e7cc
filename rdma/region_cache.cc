#include "rdma/region_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::rdma {

class RegionCache::Region {
 public:
  AddressRange pages;
  std::unique_ptr<Registration> registration;
  MemoryKeys keys;
  uint32_t users = 0;
  bool cached = false;  // In cached_ (and, when idle, in the LRU list).
  Region* lru_prev = nullptr;
  Region* lru_next = nullptr;

  size_t bytes() const { return pages.end - pages.begin; }
};

absl::StatusOr<std::unique_ptr<RegionCache>> RegionCache::Create(
    Registrar* registrar, MemoryWatcher* watcher,
    const RegionCacheOptions& options) {
  if (registrar == nullptr) return ErrnoError(EINVAL, "no registrar");
  if (options.max_regions == 0 ||
      options.max_pinned_bytes < static_cast<size_t>(getpagesize())) {
    return ErrnoError(EINVAL, absl::StrCat("region cache caps too small: ",
                                           options.max_pinned_bytes, " bytes, ",
                                           options.max_regions, " regions"));
  }
  return std::unique_ptr<RegionCache>(
      new RegionCache(registrar, watcher, options));
}

RegionCache::RegionCache(Registrar* registrar, MemoryWatcher* watcher,
                         const RegionCacheOptions& options)
    : registrar_(registrar),
      watcher_(watcher),
      options_(options),
      page_size_(static_cast<uintptr_t>(getpagesize())) {
  stats_.caching = watcher != nullptr;
}

RegionCache::~RegionCache() {
  demi::MutexLock lock(&mu_);
  for (auto it = cached_.begin(); it != cached_.end();) it = DetachLocked(it);
  if (stats_.regions > 0) {
    DEMI_LOG(kError, "region cache destroyed with ", stats_.regions,
             " regions still leased (", stats_.pinned_bytes,
             " bytes); left registered since a device may read them");
  }
}

absl::StatusOr<RegionCache::Lease> RegionCache::Acquire(const void* address,
                                                        size_t length) {
  const auto begin = reinterpret_cast<uintptr_t>(address);
  if (address == nullptr || length == 0 || begin + length < begin) {
    return ErrnoError(EINVAL, "empty or wrapping address range");
  }
  const uintptr_t end = begin + length;
  demi::MutexLock lock(&mu_);
  if (watcher_ != nullptr) {
    SyncLocked();
    auto it = cached_.upper_bound(begin);
    if (it != cached_.end() && it->second->pages.begin <= begin &&
        end <= it->second->pages.end) {
      Region* region = it->second;
      if (region->users++ == 0) LruRemoveLocked(region);
      ++stats_.hits;
      return Lease{region, region->keys};
    }
  }
  ++stats_.misses;
  const uintptr_t mask = page_size_ - 1;
  if (end > ~mask) return ErrnoError(EINVAL, "range ends in the last page");
  const AddressRange pages{begin & ~mask, (end + mask) & ~mask};
  if (watcher_ == nullptr) return RegisterLocked(pages, /*cache=*/false);

  // Merge with the cached regions the pages overlap (they are replaced).
  AddressRange merged = pages;
  for (auto it = cached_.upper_bound(pages.begin);
       it != cached_.end() && it->second->pages.begin < pages.end;) {
    merged.begin = std::min(merged.begin, it->second->pages.begin);
    merged.end = std::max(merged.end, it->second->pages.end);
    it = DetachLocked(it);
  }
  if (merged.end - merged.begin > options_.max_pinned_bytes) merged = pages;
  absl::Status watched = watcher_->Watch(merged);
  if (!watched.ok() && merged.begin != pages.begin) {
    merged = pages;  // A neighbour may be what cannot be watched.
    watched = watcher_->Watch(merged);
  }
  if (!watched.ok()) {
    // File mappings and memory someone else watches: register for this
    // lease only, never cache.
    return RegisterLocked(pages, /*cache=*/false);
  }
  return RegisterLocked(merged, /*cache=*/true);
}

absl::StatusOr<RegionCache::Lease> RegionCache::RegisterLocked(
    AddressRange pages, bool cache) {
  const size_t bytes = pages.end - pages.begin;
  if (bytes > options_.max_pinned_bytes) {
    return ErrnoError(ENOBUFS,
                      absl::StrCat("registering ", bytes,
                                   " bytes passes the region cache's cap of ",
                                   options_.max_pinned_bytes));
  }
  absl::Status room = MakeRoomLocked(bytes);
  if (!room.ok()) return room;
  absl::StatusOr<std::unique_ptr<Registration>> registration =
      registrar_->Register(reinterpret_cast<void*>(pages.begin), bytes);
  if (!registration.ok() && ErrnoFromStatus(registration.status()) == ENOMEM &&
      lru_tail_ != nullptr) {
    // Past the locked-memory limit (RLIMIT_MEMLOCK, rdma/locked_memory.h):
    // what the cache keeps for reuse is what can go. Drop every idle region
    // and try once more.
    DropIdleLocked();
    registration =
        registrar_->Register(reinterpret_cast<void*>(pages.begin), bytes);
  }
  if (!registration.ok()) return registration.status();
  auto* region = new Region();
  region->pages = pages;
  region->keys = (*registration)->keys();
  region->registration = *std::move(registration);
  region->users = 1;
  region->cached = cache;
  if (cache) {
    cached_.emplace(pages.end, region);
  } else {
    ++stats_.uncached;
  }
  stats_.pinned_bytes += bytes;
  ++stats_.regions;
  return Lease{region, region->keys};
}

size_t RegionCache::DropIdle() {
  demi::MutexLock lock(&mu_);
  return DropIdleLocked();
}

size_t RegionCache::DropIdleLocked() {
  size_t dropped = 0;
  while (lru_tail_ != nullptr) {
    ++stats_.evictions;
    dropped += lru_tail_->pages.end - lru_tail_->pages.begin;
    DetachLocked(cached_.find(lru_tail_->pages.end));
  }
  return dropped;
}

absl::Status RegionCache::MakeRoomLocked(size_t bytes) {
  while (stats_.pinned_bytes + bytes > options_.max_pinned_bytes ||
         stats_.regions + 1 > options_.max_regions) {
    if (lru_tail_ == nullptr) {
      return ErrnoError(EAGAIN,
                        absl::StrCat("region cache full of regions in use (",
                                     stats_.pinned_bytes, " bytes in ",
                                     stats_.regions, " regions)"));
    }
    ++stats_.evictions;
    DetachLocked(cached_.find(lru_tail_->pages.end));
  }
  return absl::OkStatus();
}

void RegionCache::Release(Region* region) {
  demi::MutexLock lock(&mu_);
  if (region == nullptr || region->users == 0) {
    DEMI_LOG(kError, "region cache: release of a region not leased");
    return;
  }
  if (--region->users > 0) return;
  if (region->cached) {
    LruPushFrontLocked(region);
  } else {
    DestroyLocked(region);
  }
}

void RegionCache::Invalidate(AddressRange range) {
  demi::MutexLock lock(&mu_);
  InvalidateLocked(range);
}

bool RegionCache::FindMapped(const void* address, size_t length,
                             MappedPages* mapped) {
  if (watcher_ == nullptr) return false;
  const auto begin = reinterpret_cast<uintptr_t>(address);
  const uintptr_t end = begin + length;
  if (address == nullptr || length == 0 || end < begin) return false;
  // Read before the lookup: a change logged after it makes the proof stale.
  const uint64_t generation = watcher_->log().Generation();
  if (generation % 2 != 0) return false;
  demi::MutexLock lock(&mu_);
  SyncLocked();
  auto it = cached_.upper_bound(begin);
  if (it == cached_.end() || it->second->pages.begin > begin ||
      end > it->second->pages.end) {
    return false;
  }
  mapped->pages = it->second->pages;
  mapped->generation = generation;
  return true;
}

void RegionCache::SyncLocked() {
  InvalidationLog& log = watcher_->log();
  if (!log.Changed(cursor_)) return;
  AddressRange ranges[64];
  bool lost = false;
  size_t count;
  do {
    count = log.Read(&cursor_, absl::MakeSpan(ranges), &lost);
    for (size_t i = 0; i < count; ++i) InvalidateLocked(ranges[i]);
  } while (count == std::size(ranges));
  if (lost) {
    DEMI_LOG(kWarning,
             "region cache fell behind the memory watcher; "
             "dropping every cached region");
    InvalidateLocked({0, ~uintptr_t{0}});
  }
}

void RegionCache::InvalidateLocked(AddressRange range) {
  for (auto it = cached_.upper_bound(range.begin);
       it != cached_.end() && it->second->pages.begin < range.end;) {
    ++stats_.invalidations;
    it = DetachLocked(it);
  }
}

RegionCache::RegionMap::iterator RegionCache::DetachLocked(
    RegionMap::iterator it) {
  Region* region = it->second;
  it = cached_.erase(it);
  region->cached = false;
  if (region->users == 0) {
    LruRemoveLocked(region);
    DestroyLocked(region);
  }
  return it;
}

void RegionCache::DestroyLocked(Region* region) {
  stats_.pinned_bytes -= region->bytes();
  --stats_.regions;
  delete region;  // Deregisters (a failure is logged by the registration).
}

void RegionCache::LruRemoveLocked(Region* region) {
  if (region->lru_prev != nullptr) {
    region->lru_prev->lru_next = region->lru_next;
  } else {
    lru_head_ = region->lru_next;
  }
  if (region->lru_next != nullptr) {
    region->lru_next->lru_prev = region->lru_prev;
  } else {
    lru_tail_ = region->lru_prev;
  }
  region->lru_prev = region->lru_next = nullptr;
}

void RegionCache::LruPushFrontLocked(Region* region) {
  region->lru_prev = nullptr;
  region->lru_next = lru_head_;
  if (lru_head_ != nullptr) lru_head_->lru_prev = region;
  lru_head_ = region;
  if (lru_tail_ == nullptr) lru_tail_ = region;
}

RegionCacheStats RegionCache::Stats() const {
  demi::MutexLock lock(&mu_);
  return stats_;
}

absl::Status RegionCache::CheckInvariants() const {
  demi::MutexLock lock(&mu_);
  uintptr_t previous_end = 0;
  size_t idle = 0;
  for (const auto& [end, region] : cached_) {
    if (end != region->pages.end || !region->cached) {
      return ErrnoError(EIO, "map key disagrees with its region");
    }
    if (region->pages.begin % page_size_ != 0 || end % page_size_ != 0 ||
        region->pages.begin >= end) {
      return ErrnoError(EIO, "cached region not page-aligned or empty");
    }
    if (region->pages.begin < previous_end) {
      return ErrnoError(EIO, "cached regions overlap");
    }
    previous_end = end;
    if (region->users == 0) ++idle;
  }
  size_t on_list = 0;
  const Region* previous = nullptr;
  for (const Region* r = lru_head_; r != nullptr; r = r->lru_next) {
    if (!r->cached || r->users != 0 || r->lru_prev != previous) {
      return ErrnoError(EIO, "LRU list holds a region that is not idle");
    }
    previous = r;
    ++on_list;
  }
  if (previous != lru_tail_ || on_list != idle) {
    return ErrnoError(EIO, absl::StrCat("LRU list has ", on_list, " regions, ",
                                        idle, " idle cached"));
  }
  if (stats_.pinned_bytes > options_.max_pinned_bytes ||
      stats_.regions > options_.max_regions) {
    return ErrnoError(EIO, "over the caps");
  }
  return absl::OkStatus();
}

}  // namespace demi::rdma
