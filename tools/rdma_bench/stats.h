// Summaries of latency samples.

#ifndef DEMI_TOOLS_RDMA_BENCH_STATS_H_
#define DEMI_TOOLS_RDMA_BENCH_STATS_H_

#include <cstddef>
#include <vector>

namespace demi::bench {

// The nearest-rank percentile `p` (0 < p <= 100) of `sorted` (ascending, not
// empty): the smallest sample with at least p% of the samples at or below it.
double Percentile(const std::vector<double>& sorted, double p);

struct LatencySummary {
  size_t samples = 0;
  double median = 0;
  double p99 = 0;
  double p999 = 0;
  double mean = 0;
  double min = 0;
  double max = 0;
};

// Sorts `samples` in place and summarizes them; all zero if empty.
LatencySummary Summarize(std::vector<double>& samples);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_STATS_H_
