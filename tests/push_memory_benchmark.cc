// One push's cost by where its memory comes from, on the test device: library
// memory (demi_sgaalloc, registered once), application memory through the
// region cache (a hit per push), and application memory registered per push
// (run with DEMI_MR_CACHE=0). Each iteration pushes one message of `size`
// bytes, waits for the push, pops it on the other end of the connection
// (same process) and frees it: compare the rows with each other, not with
// raw verbs (that is rdma_bench's job).
//
//   tools/softroce/run -- bazel-bin/tests/push_memory_benchmark
//   DEMI_MR_CACHE=0 tools/softroce/run -- bazel-bin/tests/push_memory_benchmark

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "benchmark/benchmark.h"
#include "gtest/gtest.h"
#include "tests/libos_test_util.h"

namespace demi::testing {
namespace {

struct Pair {
  int client = -1, server = -1, listener = -1;
};

Pair& Connected() {
  static Pair* pair = [] {
    auto* p = new Pair();
    if (demi_init(nullptr) != 0) std::abort();
    ConnectPair(&p->client, &p->server, &p->listener);
    return p;
  }();
  return *pair;
}

bool RoundTrip(const Pair& pair, const demi_sgarray_t& sga) {
  demi_qtoken_t push = 0, pop = 0;
  demi_qresult_t result;
  if (demi_push(&push, pair.client, &sga) != 0) return false;
  if (demi_pop(&pop, pair.server) != 0) return false;
  if (demi_wait(&result, push, &kTenSeconds) != 0 ||
      result.qr_opcode != DEMI_OPC_PUSH) {
    return false;
  }
  if (demi_wait(&result, pop, &kTenSeconds) != 0 ||
      result.qr_opcode != DEMI_OPC_POP) {
    return false;
  }
  return demi_sgafree(&result.qr_value.sga) == 0;
}

void Report(benchmark::State& state, const demi_mr_cache_stats_t& before) {
  demi_mr_cache_stats_t after{};
  demi_mr_cache_stats(&after);
  state.counters["hits"] = static_cast<double>(after.hits - before.hits);
  state.counters["misses"] = static_cast<double>(after.misses - before.misses);
  state.counters["uncached"] =
      static_cast<double>(after.uncached - before.uncached);
  state.SetLabel(after.caching ? "cache on" : "cache off (per push)");
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_LibraryMemory(benchmark::State& state) {
  const Pair& pair = Connected();
  const auto size = static_cast<uint32_t>(state.range(0));
  demi_sgarray_t sga = demi_sgaalloc(size);
  memset(sga.sga_segs[0].sgaseg_buf, 1, size);
  sga.sga_segs[0].sgaseg_len = size;
  demi_mr_cache_stats_t before{};
  demi_mr_cache_stats(&before);
  for (auto _ : state) {
    if (!RoundTrip(pair, sga)) state.SkipWithError("push/pop failed");
  }
  Report(state, before);
  demi_sgafree(&sga);
}

void BM_ApplicationMemory(benchmark::State& state) {
  const Pair& pair = Connected();
  const auto size = static_cast<uint32_t>(state.range(0));
  std::vector<uint8_t> buffer(size, 2);
  demi_sgarray_t sga{};
  sga.sga_numsegs = 1;
  sga.sga_segs[0] = {buffer.data(), size};
  demi_mr_cache_stats_t before{};
  demi_mr_cache_stats(&before);
  for (auto _ : state) {
    if (!RoundTrip(pair, sga)) state.SkipWithError("push/pop failed");
  }
  Report(state, before);
}

BENCHMARK(BM_LibraryMemory)->Arg(64)->Arg(1024)->Arg(8192)->MinTime(0.5);
BENCHMARK(BM_ApplicationMemory)->Arg(64)->Arg(1024)->Arg(8192)->MinTime(0.5);

}  // namespace
}  // namespace demi::testing

BENCHMARK_MAIN();
