// The userfaultfd watcher on this kernel: every way of changing the pages
// under an address is reported, before the call that changed them returns.
// Needs userfaultfd (root, or a kernel with UFFD_USER_MODE_ONLY); where the
// kernel or a sandbox refuses it the tests are skipped with the reason (the
// libOS then registers per push, see region_cache.md).

#include "rdma/userfault_watcher.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/fake_registrar.h"
#include "rdma/region_cache.h"

namespace demi::rdma {
namespace {

class UserfaultWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    page_ = static_cast<size_t>(getpagesize());
    absl::StatusOr<std::unique_ptr<UserfaultWatcher>> watcher =
        UserfaultWatcher::Create();
    if (!watcher.ok()) {
      GTEST_SKIP() << "userfaultfd unavailable here: " << watcher.status();
    }
    watcher_ = *std::move(watcher);
  }

  uint8_t* Map(size_t pages) {
    void* p = mmap(nullptr, pages * page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    memset(p, 0x5a, pages * page_);
    return static_cast<uint8_t*>(p);
  }

  static AddressRange RangeOf(const void* p, size_t length) {
    const auto begin = reinterpret_cast<uintptr_t>(p);
    return {begin, begin + length};
  }

  // Everything logged since the last call.
  std::vector<AddressRange> Drain() {
    std::vector<AddressRange> all;
    AddressRange ranges[16];
    bool lost = false;
    size_t n;
    do {
      n = watcher_->log().Read(&cursor_, absl::MakeSpan(ranges), &lost);
      all.insert(all.end(), ranges, ranges + n);
    } while (n == std::size(ranges));
    EXPECT_FALSE(lost);
    return all;
  }

  // True if some logged range covers all of `range`.
  static bool Covered(const std::vector<AddressRange>& logged,
                      AddressRange range) {
    for (const AddressRange& r : logged) {
      if (r.begin <= range.begin && range.end <= r.end) return true;
    }
    return false;
  }

  size_t page_ = 0;
  std::unique_ptr<UserfaultWatcher> watcher_;
  InvalidationLog::Cursor cursor_;
};

TEST_F(UserfaultWatcherTest, MunmapIsLoggedBeforeItReturns) {
  uint8_t* p = Map(4);
  ASSERT_TRUE(watcher_->Watch(RangeOf(p, 4 * page_)).ok());
  ASSERT_EQ(munmap(p + page_, page_), 0);
  // No waiting: the log must already show it.
  EXPECT_TRUE(watcher_->log().Changed(cursor_));
  EXPECT_TRUE(Covered(Drain(), RangeOf(p + page_, page_)));
  EXPECT_FALSE(watcher_->log().Changed(cursor_));
  munmap(p, 4 * page_);
}

TEST_F(UserfaultWatcherTest, MadviseDontneedMremapAndMapFixedAreLogged) {
  uint8_t* p = Map(8);
  ASSERT_TRUE(watcher_->Watch(RangeOf(p, 8 * page_)).ok());
  ASSERT_EQ(madvise(p, page_, MADV_DONTNEED), 0);
  EXPECT_TRUE(Covered(Drain(), RangeOf(p, page_)));
  // Touching the dropped page must not stall (nothing is write-protected).
  p[0] = 1;
  void* fixed = mmap(p + 2 * page_, page_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(fixed, p + 2 * page_);
  EXPECT_TRUE(Covered(Drain(), RangeOf(p + 2 * page_, page_)));
  uint8_t* target = Map(2);
  void* moved = mremap(p + 4 * page_, 2 * page_, 2 * page_,
                       MREMAP_MAYMOVE | MREMAP_FIXED, target);
  ASSERT_EQ(moved, target);
  EXPECT_TRUE(Covered(Drain(), RangeOf(p + 4 * page_, 2 * page_)));
  munmap(p, 8 * page_);
  munmap(target, 2 * page_);
}

TEST_F(UserfaultWatcherTest, HeapMemoryShrinkingIsLogged) {
  // A large malloc is an mmap; free() unmaps it through glibc's internal
  // munmap, which no symbol interposition would see.
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan's allocator keeps freed blocks (quarantine)";
#endif
  const size_t size = 4 << 20;
  auto* block = static_cast<uint8_t*>(malloc(size));
  ASSERT_NE(block, nullptr);
  memset(block, 1, size);
  const uintptr_t first_page =
      (reinterpret_cast<uintptr_t>(block) + page_ - 1) & ~(page_ - 1);
  const AddressRange watched{first_page, first_page + 64 * page_};
  ASSERT_TRUE(watcher_->Watch(watched).ok());
  free(block);
  std::vector<AddressRange> logged = Drain();
  EXPECT_TRUE(Covered(logged, watched))
      << "free() of a 4 MiB block was not seen (" << logged.size()
      << " ranges logged)";
}

TEST_F(UserfaultWatcherTest, FileMappingsCannotBeWatched) {
  const int fd = open("/proc/self/exe", O_RDONLY);
  ASSERT_GE(fd, 0);
  void* p = mmap(nullptr, page_, PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  absl::Status watched = watcher_->Watch(RangeOf(p, page_));
  EXPECT_EQ(ErrnoFromStatus(watched), EINVAL) << watched;
  munmap(p, page_);
  close(fd);
}

TEST_F(UserfaultWatcherTest, UnmappedMemoryCannotBeWatched) {
  uint8_t* p = Map(1);
  munmap(p, page_);
  EXPECT_FALSE(watcher_->Watch(RangeOf(p, page_)).ok());
}

// The cache over the real watcher: unmap and map new memory at the same
// address, a hundred times; each acquire after that must use a registration
// made after the change.
TEST_F(UserfaultWatcherTest, CacheNeverHandsOutARegistrationFromBeforeAnUnmap) {
  FakeRegistrar registrar(/*pins_pages=*/true);
  auto cache = RegionCache::Create(&registrar, watcher_.get(), {});
  ASSERT_TRUE(cache.ok());
  uint8_t* p = Map(4);
  uint32_t previous_lkey = 0;
  for (int round = 0; round < 100; ++round) {
    absl::StatusOr<RegionCache::Lease> lease =
        (*cache)->Acquire(p + 100, 2 * page_);
    ASSERT_TRUE(lease.ok()) << lease.status();
    EXPECT_NE(lease->keys.lkey, previous_lkey) << "round " << round;
    previous_lkey = lease->keys.lkey;
    // A hit while nothing changed.
    absl::StatusOr<RegionCache::Lease> again =
        (*cache)->Acquire(p + 200, page_);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->keys.lkey, lease->keys.lkey);
    (*cache)->Release(again->region);
    // Unmap while leased (as during a push), then map new memory there.
    ASSERT_EQ(munmap(p, 4 * page_), 0);
    void* q = mmap(p, 4 * page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    ASSERT_EQ(q, p);
    (*cache)->Release(lease->region);
  }
  RegionCacheStats stats = (*cache)->Stats();
  EXPECT_EQ(stats.misses, 100u);
  EXPECT_EQ(stats.hits, 100u);
  EXPECT_GE(stats.invalidations, 99u);
  EXPECT_TRUE((*cache)->CheckInvariants().ok());
  cache->reset();
  EXPECT_EQ(registrar.Problems(true), std::vector<std::string>{});
  munmap(p, 4 * page_);
}

// Another thread unmapping while this one looks up: whatever the interleaving,
// once munmap returned in the other thread the next lookup misses.
TEST_F(UserfaultWatcherTest, UnmapInAnotherThreadIsSeenByTheNextLookup) {
  FakeRegistrar registrar(/*pins_pages=*/true);
  auto cache = RegionCache::Create(&registrar, watcher_.get(), {});
  ASSERT_TRUE(cache.ok());
  for (int round = 0; round < 200; ++round) {
    uint8_t* p = Map(2);
    absl::StatusOr<RegionCache::Lease> lease = (*cache)->Acquire(p, page_);
    ASSERT_TRUE(lease.ok());
    (*cache)->Release(lease->region);
    std::thread unmapper([&] {
      ASSERT_EQ(munmap(p, 2 * page_), 0);
      void* q = mmap(p, 2 * page_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      ASSERT_EQ(q, p);
    });
    unmapper.join();
    absl::StatusOr<RegionCache::Lease> after = (*cache)->Acquire(p, page_);
    ASSERT_TRUE(after.ok());
    EXPECT_NE(after->keys.lkey, lease->keys.lkey) << "round " << round;
    (*cache)->Release(after->region);
    munmap(p, 2 * page_);
  }
}

}  // namespace
}  // namespace demi::rdma
