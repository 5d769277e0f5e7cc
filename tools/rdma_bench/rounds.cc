#include "tools/rdma_bench/rounds.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace demi::bench {

std::optional<double> MedianOf(const std::vector<std::optional<double>>& v) {
  std::vector<double> present;
  for (const std::optional<double>& x : v) {
    if (x.has_value()) present.push_back(*x);
  }
  if (present.empty()) return std::nullopt;
  std::sort(present.begin(), present.end());
  const size_t n = present.size();
  return n % 2 == 1 ? present[n / 2]
                    : (present[n / 2 - 1] + present[n / 2]) / 2;
}

std::vector<Options> StepsOfRound(const Options& options) {
  std::vector<Options> steps;
  for (uint64_t size : options.sizes) {
    Options step = options;
    step.sizes = {size};
    step.single_rows = options.single_rows && steps.empty();
    steps.push_back(std::move(step));
  }
  return steps;
}

namespace {

// A row's place in the table (SortRoundRows).
int TableRank(RowWorkload workload) {
  switch (workload) {
    case RowWorkload::kLatency:
      return 0;
    case RowWorkload::kDgramLatency:
      return 1;
    case RowWorkload::kDemiLatency:
      return 2;
    case RowWorkload::kMsgRate:
      return 3;
    case RowWorkload::kBandwidth:
      return 4;
  }
  return 5;
}

}  // namespace

void SortRoundRows(std::vector<Row>* rows) {
  std::stable_sort(rows->begin(), rows->end(), [](const Row& a, const Row& b) {
    return TableRank(a.workload) < TableRank(b.workload);
  });
}

namespace {

// The median of one optional field over every round's row `i`.
template <typename Get>
std::optional<double> MedianAt(const std::vector<std::vector<Row>>& rounds,
                               size_t i, Get get) {
  std::vector<std::optional<double>> values;
  for (const std::vector<Row>& round : rounds) values.push_back(get(round[i]));
  return MedianOf(values);
}

std::optional<Baseline> MergedBaseline(
    const std::vector<std::vector<Row>>& rounds, size_t i,
    std::optional<Baseline> Row::*which) {
  const std::optional<Baseline>& first = rounds.front()[i].*which;
  if (!first.has_value()) return std::nullopt;
  Baseline merged = *first;
  auto field = [&](std::optional<double> Baseline::*f) {
    return MedianAt(rounds, i, [&](const Row& row) -> std::optional<double> {
      const std::optional<Baseline>& b = row.*which;
      if (!b.has_value()) return std::nullopt;
      return (*b).*f;
    });
  };
  merged.value = field(&Baseline::value);
  merged.p99_us = field(&Baseline::p99_us);
  merged.p999_us = field(&Baseline::p999_us);
  if (merged.value.has_value()) merged.reason.clear();
  return merged;
}

}  // namespace

std::vector<Row> MedianOfRounds(const std::vector<std::vector<Row>>& rounds) {
  if (rounds.empty()) return {};
  std::vector<Row> merged = rounds.front();
  for (size_t i = 0; i < merged.size(); ++i) {
    Row& row = merged[i];
    row.iterations = 0;
    row.seconds = 0;
    for (const std::vector<Row>& round : rounds) {
      row.iterations += round[i].iterations;
      row.seconds += round[i].seconds;
    }
    row.value = MedianAt(rounds, i, [](const Row& r) { return r.value; });
    row.median_us =
        MedianAt(rounds, i, [](const Row& r) { return r.median_us; });
    row.p99_us = MedianAt(rounds, i, [](const Row& r) { return r.p99_us; });
    row.p999_us = MedianAt(rounds, i, [](const Row& r) { return r.p999_us; });
    row.mean_us = MedianAt(rounds, i, [](const Row& r) { return r.mean_us; });
    if (row.value.has_value()) row.reason.clear();
    row.baseline = MergedBaseline(rounds, i, &Row::baseline);
    row.read_baseline = MergedBaseline(rounds, i, &Row::read_baseline);
    row.round_ratio =
        rounds.size() > 1
            ? MedianAt(rounds, i,
                       [](const Row& r) { return Ratio(r.value, r.baseline); })
            : std::nullopt;
    // Each round's application-memory cost against that round's own
    // library-memory cell (measured just before it).
    if (rounds.size() > 1 && row.memory == Memory::kApplication) {
      std::vector<std::optional<double>> costs;
      for (const std::vector<Row>& round : rounds) {
        costs.push_back(AppMemoryCost(round[i], round));
      }
      row.round_app_cost = MedianOf(costs);
    }
  }
  return merged;
}

}  // namespace demi::bench
