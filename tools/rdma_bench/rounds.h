// Merging the rounds of a --rounds run: each figure of the result is the
// median of that figure over the rounds that have it.
//
// Under emulation the machine's speed drifts over minutes, so a library cell
// and its perftest baseline, measured minutes apart, can differ by 20% or
// more for no reason of their own. Measuring the whole table (library, then
// perftest) several times in turn and taking medians cancels most of that.

#ifndef DEMI_TOOLS_RDMA_BENCH_ROUNDS_H_
#define DEMI_TOOLS_RDMA_BENCH_ROUNDS_H_

#include <optional>
#include <vector>

#include "tools/rdma_bench/report.h"

namespace demi::bench {

// The median of the values present (the mean of the middle two for an even
// count); nullopt if none is.
std::optional<double> MedianOf(const std::vector<std::optional<double>>& v);

// One table from `rounds` tables of the same rows in the same order (every
// round measures the same cells): each row's value, latency figures and
// baseline figures are the medians over the rounds that have them;
// iterations and seconds add up. A figure no round has keeps the first
// round's reason. With more than one round, round_ratio is the median of the
// per-round ratios (what the table reports). Empty input gives an empty
// table.
std::vector<Row> MedianOfRounds(const std::vector<std::vector<Row>>& rounds);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_ROUNDS_H_
