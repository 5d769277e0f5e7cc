#include "tools/rdma_bench/rounds.h"

#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace demi::bench {
namespace {

TEST(MedianOfTest, OddEvenAndMissing) {
  EXPECT_EQ(MedianOf({}), std::nullopt);
  EXPECT_EQ(MedianOf({std::nullopt, std::nullopt}), std::nullopt);
  EXPECT_EQ(MedianOf({3.0, 1.0, 2.0}), 2.0);
  EXPECT_EQ(MedianOf({4.0, 1.0, 2.0, 3.0}), 2.5);
  EXPECT_EQ(MedianOf({5.0, std::nullopt, 1.0, 9.0}), 5.0);
}

Row LatencyRow(double median, std::optional<double> baseline) {
  Row row;
  row.workload = RowWorkload::kLatency;
  row.size = 64;
  row.iterations = 100;
  row.seconds = 0.5;
  row.value = row.median_us = median;
  row.p99_us = median * 2;
  if (baseline.has_value()) {
    row.baseline =
        Baseline{"ib_send_lat", baseline, *baseline * 3, std::nullopt, ""};
  } else {
    row.baseline = Baseline{"ib_send_lat", std::nullopt, std::nullopt,
                            std::nullopt, "perftest failed"};
  }
  return row;
}

TEST(MedianOfRoundsTest, EachFigureIsTheMedianOfItsRounds) {
  Row missing;
  missing.workload = RowWorkload::kBandwidth;
  missing.size = 8;
  missing.reason = "EMSGSIZE";
  std::vector<std::vector<Row>> rounds = {
      {LatencyRow(10, 8), missing},
      {LatencyRow(30, std::nullopt), missing},
      {LatencyRow(12, 9), missing},
  };
  std::vector<Row> merged = MedianOfRounds(rounds);
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_EQ(merged[0].value, 12.0);
  EXPECT_EQ(merged[0].median_us, 12.0);
  EXPECT_EQ(merged[0].p99_us, 24.0);
  EXPECT_EQ(merged[0].iterations, 300u);
  EXPECT_DOUBLE_EQ(merged[0].seconds, 1.5);
  ASSERT_TRUE(merged[0].baseline.has_value());
  EXPECT_EQ(merged[0].baseline->value, 8.5);  // of the two rounds with one
  EXPECT_EQ(merged[0].baseline->p99_us, 25.5);
  EXPECT_TRUE(merged[0].baseline->reason.empty());
  EXPECT_EQ(merged[1].value, std::nullopt);
  EXPECT_EQ(merged[1].reason, "EMSGSIZE");
  EXPECT_TRUE(MedianOfRounds({}).empty());
}

// A drifting machine: each round's library figure and perftest figure moved
// together. The reported ratio pairs them round by round; the ratio of the
// medians would mix rounds.
TEST(MedianOfRoundsTest, TheRatioIsTheMedianOfEachRoundsOwnRatio) {
  std::vector<std::vector<Row>> rounds = {
      {LatencyRow(11, 10)},  // 1.10
      {LatencyRow(24, 20)},  // 1.20
      {LatencyRow(36, 12)},  // 3.00 (a burst during the library's cell)
  };
  std::vector<Row> merged = MedianOfRounds(rounds);
  ASSERT_EQ(merged.size(), 1u);
  ASSERT_TRUE(merged[0].round_ratio.has_value());
  EXPECT_DOUBLE_EQ(*merged[0].round_ratio, 1.2);
  EXPECT_DOUBLE_EQ(*RowRatio(merged[0]), 1.2);
  // The medians alone: 24 / 12 = 2.0.
  EXPECT_DOUBLE_EQ(*Ratio(merged[0].value, merged[0].baseline), 2.0);
  // A round without a baseline figure does not count; one round alone sets
  // no round ratio (the row's own ratio serves).
  rounds = {{LatencyRow(11, 10)}, {LatencyRow(30, std::nullopt)}};
  EXPECT_DOUBLE_EQ(*MedianOfRounds(rounds)[0].round_ratio, 1.1);
  std::vector<Row> single = MedianOfRounds({{LatencyRow(15, 10)}});
  EXPECT_FALSE(single[0].round_ratio.has_value());
  EXPECT_DOUBLE_EQ(*RowRatio(single[0]), 1.5);
}

// Application memory is compared with the library-memory cell of its own
// round (measured just before it), then the median is taken.
TEST(MedianOfRoundsTest, AppMemoryCostIsTheMedianOfEachRoundsOwn) {
  auto round = [](double lib, double app) {
    Row library = LatencyRow(lib, std::nullopt);
    Row application = LatencyRow(app, std::nullopt);
    application.memory = Memory::kApplication;
    return std::vector<Row>{library, application};
  };
  // 1.02, 1.04, and a burst in one library cell (0.50).
  std::vector<Row> merged =
      MedianOfRounds({round(100, 102), round(50, 52), round(200, 100)});
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_FALSE(merged[0].round_app_cost.has_value());
  ASSERT_TRUE(merged[1].round_app_cost.has_value());
  EXPECT_DOUBLE_EQ(*merged[1].round_app_cost, 1.02);
  EXPECT_DOUBLE_EQ(*RowAppMemoryCost(merged[1], merged), 1.02);
  // The medians alone: 100 / 100.
  EXPECT_DOUBLE_EQ(*AppMemoryCost(merged[1], merged), 1.0);
}

TEST(StepsOfRoundTest, OneStepPerSizeAndTheSingleRowsInTheFirst) {
  Options options;
  options.sizes = {64, 8192, 65536};
  std::vector<Options> steps = StepsOfRound(options);
  ASSERT_EQ(steps.size(), 3u);
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].sizes, std::vector<uint64_t>{options.sizes[i]});
    EXPECT_EQ(steps[i].single_rows, i == 0);
  }
  options.single_rows = false;
  EXPECT_FALSE(StepsOfRound(options)[0].single_rows);
}

// Steps give [latency, rate, bandwidth] per size plus the single-connection
// rows in the first; the table wants each workload together, sizes in order.
TEST(SortRoundRowsTest, WorkloadsTogetherSizesInStepOrder) {
  auto row = [](RowWorkload workload, uint64_t size) {
    Row r;
    r.workload = workload;
    r.size = size;
    return r;
  };
  std::vector<Row> rows = {
      row(RowWorkload::kLatency, 64),     row(RowWorkload::kDgramLatency, 64),
      row(RowWorkload::kDemiLatency, 64), row(RowWorkload::kMsgRate, 64),
      row(RowWorkload::kBandwidth, 64),   row(RowWorkload::kLatency, 4096),
      row(RowWorkload::kMsgRate, 4096),   row(RowWorkload::kBandwidth, 4096),
  };
  SortRoundRows(&rows);
  const std::vector<std::pair<RowWorkload, uint64_t>> want = {
      {RowWorkload::kLatency, 64},      {RowWorkload::kLatency, 4096},
      {RowWorkload::kDgramLatency, 64}, {RowWorkload::kDemiLatency, 64},
      {RowWorkload::kMsgRate, 64},      {RowWorkload::kMsgRate, 4096},
      {RowWorkload::kBandwidth, 64},    {RowWorkload::kBandwidth, 4096},
  };
  ASSERT_EQ(rows.size(), want.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].workload, want[i].first) << i;
    EXPECT_EQ(rows[i].size, want[i].second) << i;
  }
}

}  // namespace
}  // namespace demi::bench
