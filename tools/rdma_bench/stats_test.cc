#include "tools/rdma_bench/stats.h"

#include <vector>

#include "gtest/gtest.h"

namespace demi::bench {
namespace {

TEST(PercentileTest, NearestRank) {
  std::vector<double> ten = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(Percentile(ten, 50), 5);
  EXPECT_EQ(Percentile(ten, 10), 1);
  EXPECT_EQ(Percentile(ten, 11), 2);
  EXPECT_EQ(Percentile(ten, 99), 10);
  EXPECT_EQ(Percentile(ten, 100), 10);
  EXPECT_EQ(Percentile(ten, 0.01), 1);
}

TEST(PercentileTest, TailOfAThousand) {
  std::vector<double> samples;
  for (int i = 1; i <= 1000; ++i) samples.push_back(i);
  EXPECT_EQ(Percentile(samples, 99), 990);
  EXPECT_EQ(Percentile(samples, 99.9), 999);
  EXPECT_EQ(Percentile(samples, 50), 500);
}

TEST(PercentileTest, OneSample) {
  EXPECT_EQ(Percentile({7}, 50), 7);
  EXPECT_EQ(Percentile({7}, 99.9), 7);
}

TEST(SummarizeTest, SortsAndSummarizes) {
  std::vector<double> samples = {5, 1, 4, 2, 3};
  LatencySummary summary = Summarize(samples);
  EXPECT_EQ(summary.samples, 5u);
  EXPECT_EQ(summary.median, 3);
  EXPECT_EQ(summary.p99, 5);
  EXPECT_EQ(summary.p999, 5);
  EXPECT_EQ(summary.mean, 3);
  EXPECT_EQ(summary.min, 1);
  EXPECT_EQ(summary.max, 5);
  EXPECT_EQ(samples, (std::vector<double>{1, 2, 3, 4, 5}));
}

TEST(SummarizeTest, EmptyIsZero) {
  std::vector<double> none;
  LatencySummary summary = Summarize(none);
  EXPECT_EQ(summary.samples, 0u);
  EXPECT_EQ(summary.median, 0);
}

}  // namespace
}  // namespace demi::bench
