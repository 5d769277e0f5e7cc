// What a region-cache lookup costs on the hot path, on the host (no device:
// the registrar is the fake one, so misses here say nothing about
// ibv_reg_mr; tests/push_memory_benchmark measures real pushes on rxe0).
//
//   bazel run -c opt //rdma:region_cache_benchmark
//
// BM_Hit/N: acquire + release of a buffer inside one of N cached regions,
// with the real userfaultfd watcher behind the cache (its hot-path check is
// one atomic load). BM_HitSixteenSegments: a whole 16-segment push's worth.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "rdma/fake_registrar.h"
#include "rdma/region_cache.h"
#include "rdma/userfault_watcher.h"

namespace demi::rdma {
namespace {

struct Setup {
  std::unique_ptr<UserfaultWatcher> watcher;
  FakeRegistrar registrar{/*pins_pages=*/true};
  std::unique_ptr<RegionCache> cache;
  uint8_t* arena = nullptr;
  size_t arena_bytes = 0;
  std::vector<uint8_t*> buffers;  // One per region, two pages apart.

  bool Init(benchmark::State& state, size_t regions) {
    absl::StatusOr<std::unique_ptr<UserfaultWatcher>> w =
        UserfaultWatcher::Create();
    if (!w.ok()) {
      state.SkipWithError("userfaultfd unavailable");
      return false;
    }
    watcher = *std::move(w);
    RegionCacheOptions options;
    options.max_regions = regions + 1;
    cache = *RegionCache::Create(&registrar, watcher.get(), options);
    const size_t page = static_cast<size_t>(getpagesize());
    arena_bytes = 2 * page * regions;
    arena =
        static_cast<uint8_t*>(mmap(nullptr, arena_bytes, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    for (size_t i = 0; i < regions; ++i) {
      uint8_t* buffer = arena + 2 * page * i + 64;
      buffers.push_back(buffer);
      cache->Release((*cache->Acquire(buffer, 1024)).region);  // warm up
    }
    return true;
  }

  ~Setup() {
    cache.reset();
    if (arena != nullptr) munmap(arena, arena_bytes);
  }
};

void BM_Hit(benchmark::State& state) {
  Setup setup;
  if (!setup.Init(state, static_cast<size_t>(state.range(0)))) return;
  std::mt19937 random(1);
  std::vector<uint8_t*> order;
  for (int i = 0; i < 4096; ++i) {
    order.push_back(setup.buffers[random() % setup.buffers.size()]);
  }
  size_t next = 0;
  for (auto _ : state) {
    absl::StatusOr<RegionCache::Lease> lease =
        setup.cache->Acquire(order[next++ & 4095], 1024);
    benchmark::DoNotOptimize(lease->keys.lkey);
    setup.cache->Release(lease->region);
  }
  if (setup.cache->Stats().misses != setup.buffers.size()) {
    state.SkipWithError("a lookup missed");
  }
}
BENCHMARK(BM_Hit)->Arg(1)->Arg(64)->Arg(4096);

void BM_HitSixteenSegments(benchmark::State& state) {
  Setup setup;
  if (!setup.Init(state, 16)) return;
  RegionCache::Region* regions[16];
  for (auto _ : state) {
    for (int i = 0; i < 16; ++i) {
      regions[i] = setup.cache->Acquire(setup.buffers[i], 512)->region;
    }
    for (int i = 0; i < 16; ++i) setup.cache->Release(regions[i]);
  }
  state.SetItemsProcessed(state.iterations() * 16);
}
BENCHMARK(BM_HitSixteenSegments);

}  // namespace
}  // namespace demi::rdma

BENCHMARK_MAIN();
