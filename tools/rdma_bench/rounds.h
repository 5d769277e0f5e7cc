// Merging the rounds of a --rounds run: each figure of the result is the
// median of that figure over the rounds that have it.
//
// Under emulation the machine's speed drifts over minutes (2x within one
// run has been seen), so a library cell and its perftest baseline measured
// minutes apart can differ for no reason of their own. Two things cancel
// most of that: a round goes in steps, one per size, each running that
// size's library cells and then its perftest cells, seconds apart; and the
// whole table is measured several times in turn, each figure the median of
// its rounds.

#ifndef DEMI_TOOLS_RDMA_BENCH_ROUNDS_H_
#define DEMI_TOOLS_RDMA_BENCH_ROUNDS_H_

#include <optional>
#include <vector>

#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/report.h"

namespace demi::bench {

// The median of the values present (the mean of the middle two for an even
// count); nullopt if none is.
std::optional<double> MedianOf(const std::vector<std::optional<double>>& v);

// The steps of one round of `options`: one per size, in size order, each
// `options` with that size alone; the first step alone keeps the
// single-connection rows (Options::single_rows). Every step's library cells
// are followed by its perftest cells (the caller's loop).
std::vector<Options> StepsOfRound(const Options& options);

// Puts the rows of one round's steps in table order: connection latency by
// size, datagram latency, Demikernel-style latency, message rate by size,
// bandwidth by size (stable: sizes stay in step order, memories as
// measured).
void SortRoundRows(std::vector<Row>* rows);

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
