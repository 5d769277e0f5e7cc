#include "tools/rdma_bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace demi::bench {

double Percentile(const std::vector<double>& sorted, double p) {
  const size_t n = sorted.size();
  // Rank ceil(p/100 * n), 1-based; the small epsilon keeps exact products
  // (p = 50, n = 10 -> 5) from rounding up to the next rank.
  double rank = std::ceil(p / 100.0 * static_cast<double>(n) - 1e-9);
  size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, n - 1)];
}

LatencySummary Summarize(std::vector<double>& samples) {
  LatencySummary summary;
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  summary.samples = samples.size();
  summary.median = Percentile(samples, 50);
  summary.p99 = Percentile(samples, 99);
  summary.p999 = Percentile(samples, 99.9);
  summary.mean = std::accumulate(samples.begin(), samples.end(), 0.0) /
                 static_cast<double>(samples.size());
  summary.min = samples.front();
  summary.max = samples.back();
  return summary;
}

}  // namespace demi::bench
