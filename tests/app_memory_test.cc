// Pushing application memory (sga_buf == NULL) through the memory-region
// cache, end to end on the test device: every pushed byte is checked at the
// receiver, and the cache's counters (demi_mr_cache_stats) show what it did.
//
// The process runs with a small cache (DEMI_MR_CACHE_MAX_REGIONS=32, set
// before demi_init) so eviction happens; PerPushRegistrationModeToo re-runs
// the content tests in a child with DEMI_MR_CACHE=0.

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"
#include "tests/pattern.h"

namespace demi::testing {
namespace {

constexpr size_t kRegionCap = 32;

bool PerPushMode() {
  const char* mode = getenv("DEMI_MR_CACHE");
  return mode != nullptr && std::string(mode) == "0";
}

demi_mr_cache_stats_t Stats() {
  demi_mr_cache_stats_t stats{};
  EXPECT_EQ(demi_mr_cache_stats(&stats), 0);
  return stats;
}

// An array of application-memory segments.
struct Segments {
  demi_sgarray_t sga{};
  void Add(const void* data, uint32_t length) {
    sga.sga_segs[sga.sga_numsegs++] = {const_cast<void*>(data), length};
  }
};

class AppMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Large mallocs stay mmaps (no dynamic threshold), so free() unmaps them.
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    setenv("DEMI_MR_CACHE_MAX_REGIONS", std::to_string(kRegionCap).c_str(), 1);
    ASSERT_EQ(demi_init(nullptr), 0);
  }

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ConnectPair(&client_, &server_, &listener_));
    EXPECT_EQ(Stats().caching, PerPushMode() ? 0u : 1u);
  }
  void TearDown() override { CloseQueues({client_, server_, listener_}); }

  demi_qtoken_t Push(const demi_sgarray_t& sga) {
    demi_qtoken_t qt = 0;
    EXPECT_EQ(demi_push(&qt, client_, &sga), 0);
    return qt;
  }

  void CompletePush(demi_qtoken_t qt) {
    demi_qresult_t result = WaitResult(qt);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH) << result.qr_ret;
  }

  // Pops one message and checks it has `lengths` segments filled with the
  // patterns of `seeds`; returns the bytes checked.
  size_t PopAndCheck(const std::vector<uint32_t>& lengths,
                     const std::vector<uint64_t>& seeds) {
    demi_qtoken_t qt = 0;
    EXPECT_EQ(demi_pop(&qt, server_), 0);
    demi_qresult_t result = WaitResult(qt);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_POP) << result.qr_ret;
    demi_sgarray_t& sga = result.qr_value.sga;
    EXPECT_EQ(sga.sga_numsegs, lengths.size());
    size_t checked = 0;
    for (size_t s = 0; s < lengths.size() && s < sga.sga_numsegs; ++s) {
      EXPECT_EQ(sga.sga_segs[s].sgaseg_len, lengths[s]);
      const auto* bytes =
          static_cast<const uint8_t*>(sga.sga_segs[s].sgaseg_buf);
      for (uint32_t i = 0; i < lengths[s] && i < sga.sga_segs[s].sgaseg_len;
           ++i) {
        if (bytes[i] != PatternByte(seeds[s], i)) {
          ADD_FAILURE() << "segment " << s << " byte " << i << ": got "
                        << int(bytes[i]) << ", pushed "
                        << int(PatternByte(seeds[s], i));
          break;
        }
        ++checked;
      }
    }
    EXPECT_EQ(demi_sgafree(&sga), 0);
    return checked;
  }

  int client_ = -1, server_ = -1, listener_ = -1;
};

TEST_F(AppMemoryTest, StackHeapMmapAndLibraryMemoryInOnePush) {
  uint8_t stack[300];
  std::vector<uint8_t> heap(1500);
  void* mapped = mmap(nullptr, 8192, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  demi_sgarray_t library = demi_sgaalloc(700);
  ASSERT_EQ(library.sga_numsegs, 1u);
  static const char kConstant[] = "read-only data from .rodata";
  FillPattern(stack, sizeof(stack), 1);
  FillPattern(heap.data(), heap.size(), 2);
  FillPattern(static_cast<uint8_t*>(mapped) + 4000, 3000, 3);  // crosses a page
  FillPattern(library.sga_segs[0].sgaseg_buf, 700, 4);
  for (int round = 0; round < 3; ++round) {
    // sga_buf set to the library buffer: its segment uses the pool's keys,
    // the others go through the cache.
    Segments segments;
    segments.sga.sga_buf = library.sga_buf;
    segments.Add(stack, sizeof(stack));
    segments.Add(library.sga_segs[0].sgaseg_buf, 700);
    segments.Add(heap.data(), heap.size());
    segments.Add(static_cast<uint8_t*>(mapped) + 4000, 3000);
    demi_qtoken_t qt = Push(segments.sga);
    CompletePush(qt);
    size_t checked = PopAndCheck({300, 700, 1500, 3000}, {1, 4, 2, 3});
    EXPECT_EQ(checked, 5500u);
  }
  // Read-only memory (registered without write access).
  Segments constant;
  constant.Add(kConstant, sizeof(kConstant));
  CompletePush(Push(constant.sga));
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server_), 0);
  demi_qresult_t result = WaitResult(pop);
  ASSERT_EQ(result.qr_value.sga.sga_numsegs, 1u);
  EXPECT_EQ(std::string(
                static_cast<char*>(result.qr_value.sga.sga_segs[0].sgaseg_buf)),
            kConstant);
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  EXPECT_EQ(demi_sgafree(&library), 0);
  munmap(mapped, 8192);
}

TEST_F(AppMemoryTest, OneBufferReusedThousandsOfTimesWithNewBytes) {
  std::vector<uint8_t> buffer(4096 + 123);
  const demi_mr_cache_stats_t before = Stats();
  constexpr int kRounds = 3000;
  size_t checked = 0;
  // Pushes that must lease their region: far above the inline limit (256
  // asked; the device may round the queue pair's limit up).
  uint64_t above_inline = 0;
  for (int i = 0; i < kRounds; ++i) {
    const uint32_t length = 1 + (i * 37) % 4096;
    if (length > 1024) ++above_inline;
    FillPattern(buffer.data() + 100, length, 1000 + i);
    Segments segments;
    segments.Add(buffer.data() + 100, length);
    CompletePush(Push(segments.sga));
    checked += PopAndCheck({length}, {uint64_t(1000 + i)});
    if (HasFailure()) break;
  }
  const demi_mr_cache_stats_t after = Stats();
  std::printf("reuse: %d pushes, %zu bytes checked; hits %lu misses %lu\n",
              kRounds, checked, after.hits - before.hits,
              after.misses - before.misses);
  // Inline pushes of memory known mapped take no lease (no hit); all
  // others hit after the first.
  if (!PerPushMode()) {
    EXPECT_GE(after.hits - before.hits, above_inline - 2);
    EXPECT_LE(after.misses - before.misses, 2u);
  } else {
    EXPECT_EQ(after.uncached - before.uncached, uint64_t{kRounds});
  }
}

// Blocks from malloc, some small (from the heap), most large enough that
// free() unmaps them (mmap threshold 128 KiB): each is pushed, the large
// ones freed at once and replaced by a new allocation filled with other
// bytes, all before the pushes are waited for. Unmapped blocks stay pinned by
// their registration, so the device reads the pushed bytes whatever now lives
// at those addresses. (A heap chunk is another matter: free() itself writes
// malloc's bookkeeping into it, and the next malloc hands it out again, so it
// is the application's to release only once the push completed, like any
// pushed memory: the device may read it after demi_push returns, e.g. when
// pushes of a burst go together at the next wait.)
TEST_F(AppMemoryTest, FreeRightAfterPushThenNewMemoryWithOtherBytes) {
  std::mt19937 random(99);
  constexpr int kBatches = 20, kPerBatch = 16;
  size_t checked = 0;
  const demi_mr_cache_stats_t before = Stats();
  for (int batch = 0; batch < kBatches; ++batch) {
    std::vector<demi_qtoken_t> pushes;
    std::vector<uint32_t> lengths;
    std::vector<void*> replacements;
    std::vector<void*> heap_blocks;
    for (int i = 0; i < kPerBatch; ++i) {
      const size_t block = (i % 4 == 0) ? 64 + random() % 4000
                                        : (128 << 10) + random() % (1 << 20);
      const uint32_t length = 1 + random() % std::min<size_t>(block, 8192);
      const uint64_t seed = batch * 100 + i;
      auto* memory = static_cast<uint8_t*>(malloc(block));
      ASSERT_NE(memory, nullptr);
      uint8_t* data = memory + (block - length);  // ends at the block's end
      FillPattern(data, length, seed);
      Segments segments;
      segments.Add(data, length);
      pushes.push_back(Push(segments.sga));
      lengths.push_back(length);
      if (block < (128 << 10)) {  // a heap chunk: released after the push
        heap_blocks.push_back(memory);
        continue;
      }
      free(memory);
      void* other = malloc(block);
      memset(other, 0xee, block);
      replacements.push_back(other);
    }
    for (int i = 0; i < kPerBatch; ++i) {
      CompletePush(pushes[i]);
      checked += PopAndCheck({lengths[i]}, {uint64_t(batch * 100 + i)});
    }
    for (void* block : heap_blocks) free(block);
    for (void* other : replacements) free(other);
    if (HasFailure()) break;
  }
  std::printf(
      "free after push: %d buffers, %zu bytes checked, %lu "
      "invalidations\n",
      kBatches * kPerBatch, checked,
      Stats().invalidations - before.invalidations);
}

// munmap, then mmap MAP_FIXED at the same address with new contents, a
// hundred times; each push must send the new bytes. Half the rounds unmap
// while the push is still in flight.
TEST_F(AppMemoryTest, MunmapThenMapFixedAtTheSameAddressSendsNewBytes) {
  const size_t size = 3 * 4096;
  auto* base = static_cast<uint8_t*>(mmap(nullptr, size, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(base, MAP_FAILED);
  const demi_mr_cache_stats_t before = Stats();
  for (int round = 0; round < 100; ++round) {
    FillPattern(base + 1000, 6000, 5000 + round);
    Segments segments;
    segments.Add(base + 1000, 2000);
    segments.Add(base + 3000, 4000);
    demi_qtoken_t qt = Push(segments.sga);
    const bool unmap_in_flight = round % 2 == 1;
    if (!unmap_in_flight) CompletePush(qt);
    ASSERT_EQ(munmap(base, size), 0);
    void* again = mmap(base, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    ASSERT_EQ(again, base);
    memset(base, 0xab, size);  // not what was pushed
    if (unmap_in_flight) CompletePush(qt);
    // Both segments carry round's pattern at their offset in the fill.
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server_), 0);
    demi_qresult_t result = WaitResult(pop);
    ASSERT_EQ(result.qr_value.sga.sga_numsegs, 2u);
    for (uint32_t s = 0; s < 2; ++s) {
      const auto* bytes = static_cast<const uint8_t*>(
          result.qr_value.sga.sga_segs[s].sgaseg_buf);
      const size_t offset = s == 0 ? 0 : 2000;
      for (uint32_t i = 0; i < result.qr_value.sga.sga_segs[s].sgaseg_len;
           ++i) {
        if (bytes[i] != PatternByte(5000 + round, offset + i)) {
          FAIL() << "round " << round << " segment " << s << " byte " << i
                 << " is stale or wrong";
        }
      }
    }
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  const demi_mr_cache_stats_t after = Stats();
  if (!PerPushMode()) {
    EXPECT_GE(after.invalidations - before.invalidations, 99u);
    EXPECT_GE(after.misses - before.misses, 100u);
  }
  munmap(base, size);
}

// Many distinct buffers through a cache of 32 regions, with up to 8 pushes of
// 2 segments in flight: idle regions are evicted, the cap is never passed,
// and every byte arrives.
TEST_F(AppMemoryTest, EvictionUnderASmallCapWithPushesInFlight) {
  const size_t kBuffers = 200, kPage = 4096;
  auto* arena = static_cast<uint8_t*>(mmap(nullptr, kBuffers * 2 * kPage,
                                           PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(arena, MAP_FAILED);
  const demi_mr_cache_stats_t before = Stats();
  std::mt19937 random(5);
  struct InFlight {
    demi_qtoken_t qt;
    uint64_t seeds[2];
  };
  std::vector<InFlight> window;
  std::set<size_t> in_flight;  // buffers a push in the window reads
  uint64_t next_seed = 1;
  for (int i = 0; i < 1000; ++i) {
    Segments segments;
    InFlight push{};
    for (int s = 0; s < 2; ++s) {
      // Pushed memory stays untouched until its push completes: pick a
      // buffer no push in flight uses.
      size_t index;
      do {
        index = random() % kBuffers;
      } while (!in_flight.insert(index).second);
      uint8_t* data = arena + index * 2 * kPage + 512;
      push.seeds[s] = next_seed++;
      FillPattern(data, 1024, push.seeds[s]);
      segments.Add(data, 1024);
    }
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_push(&qt, client_, &segments.sga), 0);
    push.qt = qt;
    window.push_back(push);
    ASSERT_LE(Stats().regions, kRegionCap);
    if (window.size() == 8) {
      for (const InFlight& w : window) {
        CompletePush(w.qt);
        PopAndCheck({1024, 1024}, {w.seeds[0], w.seeds[1]});
      }
      window.clear();
      in_flight.clear();
    }
    if (HasFailure()) break;
  }
  for (const InFlight& w : window) {
    CompletePush(w.qt);
    PopAndCheck({1024, 1024}, {w.seeds[0], w.seeds[1]});
  }
  const demi_mr_cache_stats_t after = Stats();
  std::printf("eviction: hits %lu misses %lu evictions %lu, %lu regions\n",
              after.hits - before.hits, after.misses - before.misses,
              after.evictions - before.evictions, after.regions);
  if (!PerPushMode()) {
    EXPECT_GT(after.evictions - before.evictions, 100u);
  }
  munmap(arena, kBuffers * 2 * kPage);
}

// Leased regions filling the cap: the next push that needs a registration
// gets EAGAIN, and succeeds once pushes complete.
TEST_F(AppMemoryTest, FullCacheOfRegionsInUseGivesEagain) {
  if (PerPushMode()) GTEST_SKIP() << "per-push mode has the same cap check";
  const size_t kPage = 4096;
  auto* arena = static_cast<uint8_t*>(mmap(nullptr, 64 * 2 * kPage,
                                           PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(arena, MAP_FAILED);
  // The peer does not pop. First its receive buffers fill (library memory,
  // one push at a time until one stays pending); then every push waits for
  // a credit, holding its lease.
  std::vector<demi_qtoken_t> fill;
  for (int f = 0; f < 1000; ++f) {
    demi_sgarray_t sga = demi_sgaalloc(64);
    ASSERT_EQ(sga.sga_numsegs, 1u);
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_push(&qt, client_, &sga), 0);
    demi_qresult_t done{};
    const timespec patience = {0, 200 * 1000 * 1000};
    if (demi_wait(&done, qt, &patience) == ETIMEDOUT) {
      fill.push_back(qt);  // pending: no credit left
      break;
    }
    EXPECT_EQ(demi_sgafree(&done.qr_value.sga), 0);
    fill.push_back(0);
  }
  ASSERT_FALSE(fill.empty());
  ASSERT_NE(fill.back(), 0u) << "the peer never ran out of buffers";
  std::vector<demi_qtoken_t> pending;
  int eagain = 0;
  size_t i = 0;
  for (; i < 64; ++i) {
    Segments segments;
    segments.Add(arena + i * 2 * kPage, 100);
    demi_qtoken_t qt = 0;
    const int rc = demi_push(&qt, client_, &segments.sga);
    if (rc == EAGAIN) {
      ++eagain;
      break;
    }
    ASSERT_EQ(rc, 0);
    pending.push_back(qt);
  }
  EXPECT_EQ(eagain, 1);
  EXPECT_LE(pending.size(), kRegionCap);
  EXPECT_LE(Stats().regions, kRegionCap);
  for (size_t k = 0; k < fill.size() + pending.size(); ++k) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server_), 0);
    demi_qresult_t result = WaitResult(pop);
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  CompletePush(fill.back());
  for (demi_qtoken_t qt : pending) CompletePush(qt);
  Segments segments;
  segments.Add(arena + i * 2 * kPage, 100);
  demi_qtoken_t qt = Push(segments.sga);
  CompletePush(qt);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server_), 0);
  demi_qresult_t result = WaitResult(pop);
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  munmap(arena, 64 * 2 * kPage);
}

// Small pushes of application memory go inline without a lookup once the
// memory is known mapped; an unmap must end that knowledge at once: the
// next push of the same address is EFAULT, never a crash, and the pushes
// before it carried their bytes.
TEST_F(AppMemoryTest, InlinePushOfUnmappedMemoryIsEfault) {
  auto* page = static_cast<uint8_t*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(page, MAP_FAILED);
  for (int round = 0; round < 3; ++round) {
    FillPattern(page + 64, 32, 900 + round);
    Segments segments;
    segments.Add(page + 64, 32);
    CompletePush(Push(segments.sga));
    PopAndCheck({32}, {static_cast<uint64_t>(900 + round)});
  }
  ASSERT_EQ(munmap(page, 4096), 0);
  Segments gone;
  gone.Add(page + 64, 32);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, client_, &gone.sga), EFAULT);
  // A segment outside a demi_sgaalloc buffer is checked the same way.
  demi_sgarray_t sga = demi_sgaalloc(64);
  ASSERT_NE(sga.sga_buf, nullptr);
  demi_sgarray_t outside = sga;
  outside.sga_segs[0] = {page + 64, 32};
  EXPECT_EQ(demi_push(&qt, client_, &outside), EFAULT);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  uint8_t ok[16];
  FillPattern(ok, sizeof(ok), 77);
  Segments good;
  good.Add(ok, sizeof(ok));
  CompletePush(Push(good.sga));
  PopAndCheck({16}, {77});
}

TEST_F(AppMemoryTest, BadApplicationMemoryIsRejectedAndNothingLeaks) {
  void* gone = mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(gone, 4096);
  uint8_t ok[64] = {};
  Segments segments;
  segments.Add(ok, sizeof(ok));
  segments.Add(gone, 100);  // not mapped
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, client_, &segments.sga), EFAULT);
  Segments wraps;
  wraps.Add(reinterpret_cast<void*>(~uintptr_t{0} - 10), 100);
  EXPECT_EQ(demi_push(&qt, client_, &wraps.sga), EINVAL);
  // Nothing stayed leased: the connection still works and no region is held
  // beyond the cached ones.
  FillPattern(ok, sizeof(ok), 7);
  Segments good;
  good.Add(ok, sizeof(ok));
  CompletePush(Push(good.sga));
  PopAndCheck({64}, {7});
  EXPECT_EQ(demi_mr_cache_stats(nullptr), EINVAL);
  EXPECT_LE(Stats().regions, kRegionCap);
}

// The same content tests with the cache off (registration per push).
TEST(AppMemoryModes, PerPushRegistrationModeToo) {
  if (PerPushMode()) GTEST_SKIP() << "already the per-push run";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("DEMI_MR_CACHE", "0", 1);
    setenv("GTEST_FILTER", "AppMemoryTest.*", 1);
    execl("/proc/self/exe", "app_memory_test", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the per-push run failed (see above)";
}

}  // namespace
}  // namespace demi::testing
