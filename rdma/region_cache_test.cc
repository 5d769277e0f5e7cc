#include "rdma/region_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/fake_registrar.h"

namespace demi::rdma {
namespace {

// A watcher whose log the test writes, and which refuses to watch the ranges
// it is told to.
class FakeWatcher final : public MemoryWatcher {
 public:
  absl::Status Watch(AddressRange range) override {
    for (const AddressRange& refused : refuse) {
      if (range.begin < refused.end && refused.begin < range.end) {
        return ErrnoError(EINVAL, "fake watcher refuses this range");
      }
    }
    return absl::OkStatus();
  }
  InvalidationLog& log() override { return log_; }

  // What the kernel would report for an munmap of `range`.
  void Change(AddressRange range) {
    log_.BeginWrite();
    log_.Append(range);
    log_.EndWrite();
  }

  std::vector<AddressRange> refuse;

 private:
  InvalidationLog log_;
};

class RegionCacheTest : public ::testing::Test {
 protected:
  static constexpr size_t kArenaPages = 256;

  void SetUp() override {
    page_ = static_cast<size_t>(getpagesize());
    arena_ = static_cast<uint8_t*>(mmap(nullptr, kArenaPages * page_,
                                        PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(arena_, MAP_FAILED);
  }

  void TearDown() override {
    if (cache_ != nullptr) {
      EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
    }
    cache_.reset();
    EXPECT_EQ(registrar_.Problems(/*expect_all_destroyed=*/true),
              std::vector<std::string>{});
    munmap(arena_, kArenaPages * page_);
  }

  void MakeCache(RegionCacheOptions options = {},
                 MemoryWatcher* watcher = nullptr, bool use_watcher = true) {
    auto cache = RegionCache::Create(
        &registrar_, use_watcher ? (watcher ? watcher : &watcher_) : nullptr,
        options);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = *std::move(cache);
  }

  uint8_t* Page(size_t index) { return arena_ + index * page_; }
  AddressRange Pages(size_t first, size_t count) {
    return {reinterpret_cast<uintptr_t>(Page(first)),
            reinterpret_cast<uintptr_t>(Page(first + count))};
  }

  // Acquires, expecting success, and checks the keys cover the range.
  RegionCache::Lease Get(const void* address, size_t length) {
    absl::StatusOr<RegionCache::Lease> lease = cache_->Acquire(address, length);
    EXPECT_TRUE(lease.ok()) << lease.status();
    if (!lease.ok()) return {};
    std::optional<MemoryKeys> keys = registrar_.KeysFor(address, length);
    EXPECT_TRUE(keys.has_value()) << "no live registration covers the range";
    return *lease;
  }

  size_t page_ = 0;
  uint8_t* arena_ = nullptr;
  FakeRegistrar registrar_{/*pins_pages=*/true};
  FakeWatcher watcher_;
  std::unique_ptr<RegionCache> cache_;
};

TEST_F(RegionCacheTest, SecondAcquireOfARangeHits) {
  MakeCache();
  RegionCache::Lease first = Get(Page(3) + 100, 1000);
  cache_->Release(first.region);
  RegionCache::Lease second = Get(Page(3) + 100, 1000);
  EXPECT_EQ(second.region, first.region);
  EXPECT_EQ(second.keys, first.keys);
  cache_->Release(second.region);
  RegionCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.pinned_bytes, page_);
  EXPECT_EQ(stats.regions, 1u);
  EXPECT_TRUE(stats.caching);
  EXPECT_EQ(registrar_.total_registrations(), 1u);
}

TEST_F(RegionCacheTest, MappedPagesHoldUntilAnyWatchedChange) {
  MakeCache();
  RegionCache::MappedPages mapped;
  EXPECT_FALSE(cache_->StillMapped(mapped));               // never found
  EXPECT_FALSE(cache_->FindMapped(Page(3), 64, &mapped));  // not cached
  RegionCache::Lease lease = Get(Page(3) + 100, 1000);
  cache_->Release(lease.region);
  ASSERT_TRUE(cache_->FindMapped(Page(3) + 8, 64, &mapped));
  EXPECT_EQ(mapped.pages.begin, Pages(3, 1).begin);
  EXPECT_EQ(mapped.pages.end, Pages(3, 1).end);
  EXPECT_TRUE(cache_->StillMapped(mapped));
  EXPECT_FALSE(cache_->FindMapped(Page(3) + 8, page_, &mapped));  // past it
  EXPECT_FALSE(cache_->FindMapped(nullptr, 64, &mapped));
  EXPECT_TRUE(cache_->StillMapped(mapped));  // failed lookups change nothing
  // A change anywhere watched ends the proof; the region itself is gone
  // only if the change was its own.
  watcher_.Change(Pages(100, 1));
  EXPECT_FALSE(cache_->StillMapped(mapped));
  ASSERT_TRUE(cache_->FindMapped(Page(3), 64, &mapped));
  EXPECT_TRUE(cache_->StillMapped(mapped));
  watcher_.Change(Pages(3, 1));
  EXPECT_FALSE(cache_->StillMapped(mapped));
  EXPECT_FALSE(cache_->FindMapped(Page(3), 64, &mapped));
}

TEST_F(RegionCacheTest, WithoutAWatcherNothingIsProvedMapped) {
  MakeCache({}, nullptr, /*use_watcher=*/false);
  RegionCache::Lease lease = Get(Page(3), 64);
  RegionCache::MappedPages mapped;
  EXPECT_FALSE(cache_->FindMapped(Page(3), 64, &mapped));
  EXPECT_FALSE(cache_->StillMapped(mapped));
  cache_->Release(lease.region);
}

TEST_F(RegionCacheTest, BuffersOnRegisteredPagesHit) {
  MakeCache();
  RegionCache::Lease big = Get(Page(10), 4 * page_);
  cache_->Release(big.region);
  // Any range inside the four pages, including one a byte long.
  RegionCache::Lease inner = Get(Page(11) + 7, 2 * page_);
  RegionCache::Lease last = Get(Page(14) - 1, 1);
  EXPECT_EQ(inner.region, big.region);
  EXPECT_EQ(last.region, big.region);
  cache_->Release(inner.region);
  cache_->Release(last.region);
  EXPECT_EQ(cache_->Stats().hits, 2u);
  // One byte past the end misses.
  RegionCache::Lease past = Get(Page(13), page_ + 1);
  EXPECT_NE(past.keys, big.keys);
  cache_->Release(past.region);
}

TEST_F(RegionCacheTest, OverlappingRangesMergeIntoOneRegion) {
  MakeCache();
  RegionCache::Lease a = Get(Page(20), 2 * page_);  // pages 20-21
  cache_->Release(a.region);
  RegionCache::Lease b = Get(Page(23), page_);  // page 23, disjoint
  cache_->Release(b.region);
  // Pages 21..23 overlap both: one region 20..23 replaces them.
  RegionCache::Lease c = Get(Page(21) + 5, 2 * page_);
  cache_->Release(c.region);
  RegionCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.regions, 1u);
  EXPECT_EQ(stats.pinned_bytes, 4 * page_);
  EXPECT_EQ(registrar_.live_registrations(), 1u);
  RegionCache::Lease d = Get(Page(20), 4 * page_);
  EXPECT_EQ(d.region, c.region);
  cache_->Release(d.region);
}

TEST_F(RegionCacheTest, MergingKeepsARegionInUseUntilReleased) {
  MakeCache();
  RegionCache::Lease a = Get(Page(30), page_);
  RegionCache::Lease b = Get(Page(30), 3 * page_);  // merges, a still leased
  EXPECT_NE(a.region, b.region);
  EXPECT_EQ(registrar_.live_registrations(), 2u);
  EXPECT_EQ(cache_->Stats().pinned_bytes, 4 * page_);
  cache_->Release(a.region);  // detached: deregistered now
  EXPECT_EQ(registrar_.live_registrations(), 1u);
  RegionCache::Lease c = Get(Page(30), page_);
  EXPECT_EQ(c.region, b.region);
  cache_->Release(b.region);
  cache_->Release(c.region);
}

TEST_F(RegionCacheTest, InvalidatedRegionIsNotUsedAgain) {
  MakeCache();
  RegionCache::Lease a = Get(Page(40), 100);
  cache_->Release(a.region);
  watcher_.Change(Pages(40, 1));
  RegionCache::Lease b = Get(Page(40), 100);
  EXPECT_NE(b.keys, a.keys);
  cache_->Release(b.region);
  RegionCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.invalidations, 1u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.hits, 0u);
  EXPECT_EQ(registrar_.live_registrations(), 1u);
}

TEST_F(RegionCacheTest, ChangeOfOtherMemoryKeepsTheRegion) {
  MakeCache();
  RegionCache::Lease a = Get(Page(50), page_);
  cache_->Release(a.region);
  watcher_.Change(Pages(51, 10));  // starts right after the region
  watcher_.Change(Pages(40, 10));  // ends right before it
  RegionCache::Lease b = Get(Page(50), page_);
  EXPECT_EQ(b.region, a.region);
  cache_->Release(b.region);
  EXPECT_EQ(cache_->Stats().invalidations, 0u);
}

TEST_F(RegionCacheTest, PartialUnmapDropsTheRegionAndTheRestIsRegisteredAgain) {
  MakeCache();
  RegionCache::Lease whole = Get(Page(60), 8 * page_);  // pages 60-67
  cache_->Release(whole.region);
  watcher_.Change(Pages(62, 2));  // pages 62-63 unmapped
  // What is left is registered again, on demand, in pieces.
  RegionCache::Lease low = Get(Page(60), 2 * page_);
  RegionCache::Lease high = Get(Page(64), 4 * page_);
  EXPECT_NE(low.keys, whole.keys);
  EXPECT_NE(high.keys, low.keys);
  cache_->Release(low.region);
  cache_->Release(high.region);
  RegionCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.invalidations, 1u);
  EXPECT_EQ(stats.regions, 2u);
  EXPECT_EQ(stats.pinned_bytes, 6 * page_);
}

TEST_F(RegionCacheTest, InvalidationWhileInUseDefersDeregistration) {
  MakeCache();
  RegionCache::Lease a = Get(Page(70), 2 * page_);
  watcher_.Change(Pages(70, 2));
  // The lease still holds its registration (the device may be reading).
  RegionCache::Lease b = Get(Page(70), 2 * page_);
  EXPECT_NE(b.keys, a.keys);
  EXPECT_EQ(registrar_.live_registrations(), 2u);
  EXPECT_TRUE(registrar_.KeysFor(Page(70), 2 * page_).has_value());
  cache_->Release(a.region);
  EXPECT_EQ(registrar_.live_registrations(), 1u);
  cache_->Release(b.region);
  EXPECT_EQ(cache_->Stats().regions, 1u);  // b stays cached
}

TEST_F(RegionCacheTest, EvictsLeastRecentlyUsedUnderTheByteCap) {
  RegionCacheOptions options;
  options.max_pinned_bytes = 4 * page_;
  MakeCache(options);
  for (size_t i = 0; i < 4; ++i)
    cache_->Release(Get(Page(80 + 2 * i), 1).region);
  // Touch page 80 so that 82 is the least recently used.
  cache_->Release(Get(Page(80), 1).region);
  cache_->Release(Get(Page(90), 1).region);  // evicts 82
  EXPECT_EQ(cache_->Stats().evictions, 1u);
  EXPECT_EQ(cache_->Stats().pinned_bytes, 4 * page_);
  const uint64_t misses = cache_->Stats().misses;
  cache_->Release(Get(Page(80), 1).region);  // still cached
  EXPECT_EQ(cache_->Stats().misses, misses);
  cache_->Release(Get(Page(82), 1).region);  // was evicted
  EXPECT_EQ(cache_->Stats().misses, misses + 1);
  EXPECT_LE(registrar_.live_bytes(), 4 * page_);
}

TEST_F(RegionCacheTest, EvictsUnderTheRegionCap) {
  RegionCacheOptions options;
  options.max_regions = 3;
  MakeCache(options);
  for (size_t i = 0; i < 20; ++i) {
    cache_->Release(Get(Page(100 + 2 * i), 10).region);
    EXPECT_LE(registrar_.live_registrations(), 3u);
  }
  EXPECT_EQ(cache_->Stats().evictions, 17u);
}

TEST_F(RegionCacheTest, LeasedRegionsHoldingTheCapGiveEagain) {
  RegionCacheOptions options;
  options.max_pinned_bytes = 2 * page_;
  MakeCache(options);
  RegionCache::Lease a = Get(Page(120), 1);
  RegionCache::Lease b = Get(Page(122), 1);
  absl::StatusOr<RegionCache::Lease> c = cache_->Acquire(Page(124), 1);
  EXPECT_EQ(ErrnoFromStatus(c.status()), EAGAIN) << c.status();
  EXPECT_EQ(registrar_.live_bytes(), 2 * page_);
  cache_->Release(a.region);
  RegionCache::Lease d = Get(Page(124), 1);  // evicts a
  cache_->Release(b.region);
  cache_->Release(d.region);
  absl::StatusOr<RegionCache::Lease> huge =
      cache_->Acquire(Page(130), 3 * page_);
  EXPECT_EQ(ErrnoFromStatus(huge.status()), ENOBUFS) << huge.status();
}

TEST_F(RegionCacheTest, UnwatchableMemoryIsRegisteredPerLease) {
  watcher_.refuse.push_back(Pages(140, 4));
  MakeCache();
  for (int i = 0; i < 3; ++i) {
    RegionCache::Lease a = Get(Page(141) + 10, 100);
    EXPECT_EQ(registrar_.live_registrations(), 1u);
    cache_->Release(a.region);
    EXPECT_EQ(registrar_.live_registrations(), 0u);
  }
  RegionCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.uncached, 3u);
  EXPECT_EQ(stats.hits, 0u);
  EXPECT_EQ(stats.regions, 0u);
}

TEST_F(RegionCacheTest, UnwatchableNeighbourDoesNotSpoilTheMerge) {
  MakeCache();
  RegionCache::Lease a = Get(Page(150), 2 * page_);  // pages 150-151
  cache_->Release(a.region);
  watcher_.refuse.push_back(Pages(150, 1));  // as if it became unwatchable
  // Pages 151-152 overlap a: the merged 150-152 cannot be watched, 151-152
  // can, and are cached alone.
  RegionCache::Lease b = Get(Page(151) + 10, page_);
  cache_->Release(b.region);
  RegionCache::Lease c = Get(Page(151) + 10, page_);
  EXPECT_EQ(c.region, b.region);
  cache_->Release(c.region);
  EXPECT_EQ(cache_->Stats().uncached, 0u);
  EXPECT_EQ(cache_->Stats().hits, 1u);
}

TEST_F(RegionCacheTest, WithoutAWatcherEveryLeaseRegisters) {
  MakeCache({}, nullptr, /*use_watcher=*/false);
  EXPECT_FALSE(cache_->Stats().caching);
  RegionCache::Lease a = Get(Page(160), 64);
  RegionCache::Lease b = Get(Page(160), 64);
  EXPECT_NE(a.region, b.region);
  EXPECT_EQ(registrar_.live_registrations(), 2u);
  cache_->Release(a.region);
  cache_->Release(b.region);
  EXPECT_EQ(registrar_.live_registrations(), 0u);
  EXPECT_EQ(cache_->Stats().uncached, 2u);
}

TEST_F(RegionCacheTest, RegistrationErrorIsReturnedAndNothingLeaks) {
  MakeCache();
  registrar_.FailNext(1, ENOMEM);
  absl::StatusOr<RegionCache::Lease> a = cache_->Acquire(Page(170), 10);
  EXPECT_EQ(ErrnoFromStatus(a.status()), ENOMEM);
  EXPECT_EQ(cache_->Stats().regions, 0u);
  cache_->Release(Get(Page(170), 10).region);
}

// At the locked-memory limit (ENOMEM from the device) the cache drops its
// idle regions and registers again; with none idle, ENOMEM reaches the caller.
TEST_F(RegionCacheTest, LockedMemoryLimitDropsIdleRegionsThenRetries) {
  MakeCache();
  registrar_.SetPinLimit(4 * page_);
  cache_->Release(Get(Page(100), 1).region);
  cache_->Release(Get(Page(110), 1).region);
  cache_->Release(Get(Page(120), 1).region);
  EXPECT_EQ(cache_->Stats().regions, 3u);
  // Two more pages do not fit beside the three kept: all three go.
  RegionCache::Lease big = Get(Page(130), 2 * page_);
  EXPECT_EQ(cache_->Stats().evictions, 3u);
  EXPECT_EQ(cache_->Stats().regions, 1u);
  RegionCache::Lease held = Get(Page(140), 2 * page_);
  // Nothing idle to drop: the limit is the caller's error.
  absl::StatusOr<RegionCache::Lease> refused = cache_->Acquire(Page(150), 1);
  EXPECT_EQ(ErrnoFromStatus(refused.status()), ENOMEM);
  EXPECT_EQ(cache_->Stats().regions, 2u);
  cache_->Release(big.region);
  cache_->Release(held.region);
  cache_->Release(Get(Page(150), 1).region);  // room once one is dropped
}

TEST_F(RegionCacheTest, BadRangesAreEinval) {
  MakeCache();
  EXPECT_EQ(ErrnoFromStatus(cache_->Acquire(nullptr, 10).status()), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(cache_->Acquire(Page(1), 0).status()), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(
                cache_->Acquire(reinterpret_cast<void*>(~uintptr_t{0} - 5), 10)
                    .status()),
            EINVAL);
  EXPECT_EQ(registrar_.total_registrations(), 0u);
}

TEST_F(RegionCacheTest, FallingBehindTheLogDropsEverything) {
  MakeCache();
  cache_->Release(Get(Page(180), 1).region);
  cache_->Release(Get(Page(190), 1).region);
  // Far more changes than the ring holds, all elsewhere.
  for (size_t i = 0; i < InvalidationLog::kCapacity + 10; ++i) {
    watcher_.Change(Pages(250, 1));
  }
  cache_->Release(Get(Page(180), 1).region);
  EXPECT_EQ(cache_->Stats().hits, 0u);
  EXPECT_EQ(cache_->Stats().invalidations, 2u);
}

// Random acquires, releases, changes and evictions against a model: every
// lease's keys belong to a live registration covering its range (so no
// registration is ever dropped under a lease), a registration is never handed
// out again once memory it was leased for changed, and the caps hold.
TEST_F(RegionCacheTest, RandomOperationsKeepEveryPromise) {
  RegionCacheOptions options;
  options.max_pinned_bytes = 24 * page_;
  options.max_regions = 10;
  MakeCache(options);
  std::mt19937 random(1234);
  struct Held {
    RegionCache::Lease lease;
    uintptr_t begin;
    size_t length;
  };
  std::vector<Held> held;
  // Registrations that must not be handed out again (their range changed).
  std::set<uint32_t> stale_lkeys;
  std::map<uint32_t, AddressRange> lkey_pages;  // for staleness tracking
  for (int step = 0; step < 20000; ++step) {
    const int op = random() % 10;
    if (op < 5) {
      const size_t first = random() % 64;
      const size_t offset = random() % page_;
      const size_t length = 1 + random() % (3 * page_);
      uint8_t* address = Page(first) + offset;
      absl::StatusOr<RegionCache::Lease> lease =
          cache_->Acquire(address, length);
      if (!lease.ok()) {
        ASSERT_EQ(ErrnoFromStatus(lease.status()), EAGAIN) << lease.status();
        continue;
      }
      ASSERT_EQ(stale_lkeys.count(lease->keys.lkey), 0u)
          << "a registration made before a change was handed out after it";
      std::optional<MemoryKeys> live = registrar_.KeysFor(address, length);
      ASSERT_TRUE(live.has_value());
      const auto begin = reinterpret_cast<uintptr_t>(address);
      AddressRange& seen = lkey_pages[lease->keys.lkey];
      if (seen.end == 0) seen = {begin, begin + length};
      seen.begin = std::min(seen.begin, begin);
      seen.end = std::max<uintptr_t>(seen.end, begin + length);
      held.push_back({*lease, begin, length});
    } else if (op < 9 && !held.empty()) {
      const size_t index = random() % held.size();
      // Still registered (the device may be reading) until released.
      ASSERT_TRUE(registrar_
                      .KeysFor(reinterpret_cast<void*>(held[index].begin),
                               held[index].length)
                      .has_value());
      cache_->Release(held[index].lease.region);
      held.erase(held.begin() + index);
    } else {
      const size_t first = random() % 64;
      const AddressRange changed = Pages(first, 1 + random() % 4);
      watcher_.Change(changed);
      for (const auto& [lkey, range] : lkey_pages) {
        if (range.begin < changed.end && changed.begin < range.end) {
          stale_lkeys.insert(lkey);
        }
      }
    }
    ASSERT_LE(registrar_.live_bytes(), options.max_pinned_bytes);
    ASSERT_LE(registrar_.live_registrations(), options.max_regions);
    if (step % 512 == 0) {
      ASSERT_TRUE(cache_->CheckInvariants().ok());
    }
  }
  for (const Held& h : held) cache_->Release(h.lease.region);
  RegionCacheStats stats = cache_->Stats();
  EXPECT_GT(stats.hits, 1000u);
  EXPECT_GT(stats.evictions, 10u);
  EXPECT_GT(stats.invalidations, 10u);
}

}  // namespace
}  // namespace demi::rdma
