#include "tools/rdma_bench/report.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace demi::bench {
namespace {

std::vector<Row> SampleRows() {
  Row lat;
  lat.workload = RowWorkload::kLatency;
  lat.size = 64;
  lat.iterations = 1000;
  lat.seconds = 0.2;
  lat.value = lat.median_us = 13.0;
  lat.p99_us = 40.0;
  lat.p999_us = 90.0;
  lat.mean_us = 14.0;
  lat.baseline = Baseline{"ib_send_lat", 12.5, 38.0, 80.0, ""};
  Row app = lat;
  app.memory = Memory::kApplication;
  app.value = app.median_us = app.p99_us = app.p999_us = app.mean_us =
      std::nullopt;
  app.reason = "demi_push of application memory: EINVAL (Invalid argument)";
  Row bw;
  bw.workload = RowWorkload::kBandwidth;
  bw.size = 65536;
  bw.window = 32;
  bw.reason = "demi_sgaalloc(65536) returned no memory";
  bw.baseline = Baseline{"ib_send_bw", 80.0, std::nullopt, std::nullopt, ""};
  bw.read_baseline = Baseline{"ib_read_bw", std::nullopt, std::nullopt,
                              std::nullopt, "calibration \"failed\""};
  Row rate;
  rate.workload = RowWorkload::kMsgRate;
  rate.size = 64;
  rate.window = 32;
  rate.value = 0.05;
  rate.baseline = Baseline{"ib_send_bw", 0.04, std::nullopt, std::nullopt, ""};
  return {lat, app, rate, bw};
}

TEST(RatioTest, OnlyWithBothFigures) {
  EXPECT_DOUBLE_EQ(*Ratio(10.0, Baseline{"t", 5.0, {}, {}, ""}), 2.0);
  EXPECT_FALSE(Ratio(std::nullopt, Baseline{"t", 5.0, {}, {}, ""}));
  EXPECT_FALSE(Ratio(10.0, std::nullopt));
  EXPECT_FALSE(Ratio(10.0, Baseline{"t", 0.0, {}, {}, ""}));
}

TEST(FormatJsonTest, EveryRowHasEveryKey) {
  RunInfo info;
  info.baseline = true;
  std::string json = FormatJson(SampleRows(), info);
  EXPECT_NE(json.find("\"median_us\": 13,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"value\": null"), std::string::npos);
  EXPECT_NE(json.find("\"reason\": \"demi_push of application memory"),
            std::string::npos);
  EXPECT_NE(json.find("\"ratio\": 1.04,"), std::string::npos);
  EXPECT_NE(json.find("\"mpps\": 0.05,"), std::string::npos);
  EXPECT_NE(json.find("\"read_bw_reason\": \"calibration \\\"failed\\\"\""),
            std::string::npos);
  // Four rows, each with the same keys.
  size_t rows = 0;
  for (size_t at = json.find("\"workload\""); at != std::string::npos;
       at = json.find("\"workload\"", at + 1)) {
    ++rows;
  }
  EXPECT_EQ(rows, 4u);
  size_t baseline_keys = 0;
  for (size_t at = json.find("\"baseline_value\""); at != std::string::npos;
       at = json.find("\"baseline_value\"", at + 1)) {
    ++baseline_keys;
  }
  EXPECT_EQ(baseline_keys, 4u);
}

TEST(FormatJsonTest, NonFiniteFiguresAreNull) {
  std::vector<Row> rows = SampleRows();
  rows[0].baseline->value = std::numeric_limits<double>::infinity();
  rows[0].p99_us = std::nan("");
  RunInfo info;
  info.baseline = true;
  const std::string json = FormatJson(rows, info);
  EXPECT_EQ(json.find("inf"), std::string::npos) << json;
  EXPECT_EQ(json.find("nan"), std::string::npos) << json;
  EXPECT_NE(json.find("\"baseline_value\": null"), std::string::npos) << json;
  const std::string csv = FormatCsv(rows, info);
  EXPECT_EQ(csv.find("inf"), std::string::npos) << csv;
}

TEST(FormatJsonTest, NoBaselineKeysWithoutBaseline) {
  std::string json = FormatJson(SampleRows(), RunInfo{});
  EXPECT_EQ(json.find("baseline_value"), std::string::npos);
}

TEST(FormatCsvTest, HeaderAndQuoting) {
  RunInfo info;
  info.baseline = true;
  std::string csv = FormatCsv(SampleRows(), info);
  EXPECT_EQ(csv.rfind("workload,size,memory,", 0), 0u);
  EXPECT_NE(csv.find("latency,64,app,"), std::string::npos);
  EXPECT_NE(csv.find("\"calibration \"\"failed\"\"\""), std::string::npos);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);
}

TEST(FormatTableTest, FiguresRatiosAndFootnotes) {
  RunInfo info;
  info.baseline = true;
  info.window = 32;
  std::string table = FormatTable(SampleRows(), info);
  EXPECT_NE(table.find("Lower is better"), std::string::npos) << table;
  EXPECT_NE(table.find("13.00"), std::string::npos);
  EXPECT_NE(table.find("1.04x"), std::string::npos);
  EXPECT_NE(table.find("1.25x"), std::string::npos);
  EXPECT_NE(table.find("n/a[1]"), std::string::npos);
  EXPECT_NE(table.find("[1] demi_push of application memory"),
            std::string::npos);
  EXPECT_NE(table.find("64 B latency:"), std::string::npos);
  EXPECT_NE(table.find("n/a (demi_sgaalloc(65536) returned no memory)"),
            std::string::npos);
}

TEST(GnuplotScriptTest, SeriesForEachFigure) {
  std::string script = GnuplotScript(SampleRows(), "out.png");
  EXPECT_NE(script.find("set output \"out.png\""), std::string::npos);
  EXPECT_NE(script.find("title \"demi lib\""), std::string::npos);
  EXPECT_NE(script.find("title \"ib_send_lat\""), std::string::npos);
  EXPECT_NE(script.find("title \"ib_send_bw\""), std::string::npos);
  EXPECT_EQ(script.find("title \"demi app\""), std::string::npos);
  // Axes in units, not raw numbers.
  EXPECT_EQ(script.find("%.0b"), std::string::npos);
  EXPECT_NE(script.find("set xtics (\"64 B\" 64"), std::string::npos) << script;
  EXPECT_NE(script.find("set ytics (\"10 us\" 10,"), std::string::npos)
      << script;
}

TEST(GnuplotScriptTest, TicLabelsReadAsUnits) {
  std::vector<Row> rows = SampleRows();
  rows[0].size = 1 << 20;
  std::string script = GnuplotScript(rows, "out.png");
  EXPECT_NE(script.find("\"1 MiB\" 1048576"), std::string::npos) << script;
}

// Peers sit beside demi against the same perftest figure: a ratio where
// both exist, the reason (as a footnote) where the peer gave none.
TEST(PeersReportTest, TableAndJsonCarryPeersAgainstTheSameBaseline) {
  RunInfo info;
  info.baseline = true;
  PeerRow am;
  am.tool = "ucx am";
  am.workload = RowWorkload::kLatency;
  am.size = 64;
  am.value = 15.0;  // 15 / 12.5 = 1.20x
  PeerRow rstream;
  rstream.tool = "rstream";
  rstream.workload = RowWorkload::kLatency;
  rstream.size = 64;
  rstream.reason = "rstream is not installed";
  info.peers = {am, rstream};
  const std::vector<Row> rows = SampleRows();
  EXPECT_DOUBLE_EQ(*PeerRatio(am, rows), 1.2);
  EXPECT_FALSE(PeerRatio(rstream, rows));
  const std::string table = FormatTable(rows, info);
  EXPECT_NE(table.find("Peers, same run"), std::string::npos) << table;
  EXPECT_NE(table.find("15.00 (1.20x)"), std::string::npos) << table;
  EXPECT_NE(table.find("rstream is not installed"), std::string::npos) << table;
  EXPECT_NE(table.find("1.04x"), std::string::npos) << table;  // demi's 13/12.5
  const std::string json = FormatJson(rows, info);
  EXPECT_NE(json.find("\"peers\": ["), std::string::npos) << json;
  EXPECT_NE(json.find("\"tool\": \"ucx am\", \"workload\": \"latency\", "
                      "\"size\": 64, \"value\": 15, \"unit\": \"us\", "
                      "\"ratio\": 1.2, \"reason\": null}"),
            std::string::npos)
      << json;
  // Without peers the JSON has no "peers" key.
  EXPECT_EQ(FormatJson(rows, RunInfo{}).find("\"peers\""), std::string::npos);
}

// Application memory's cost is oriented so that above 1.00 is slower, for
// latency (app / lib) and for throughput (lib / app) alike; the target line
// names every cell more than 5% slower.
TEST(AppMemoryCostTest, SlowerIsAboveOneForEveryWorkload) {
  Row lat;
  lat.workload = RowWorkload::kLatency;
  lat.size = 4096;
  lat.value = lat.median_us = 100.0;
  Row lat_app = lat;
  lat_app.memory = Memory::kApplication;
  lat_app.value = lat_app.median_us = 103.0;
  Row bw;
  bw.workload = RowWorkload::kBandwidth;
  bw.size = 65536;
  bw.value = 40.0;
  Row bw_app = bw;
  bw_app.memory = Memory::kApplication;
  bw_app.value = 36.0;
  std::vector<Row> rows = {lat, lat_app, bw, bw_app};
  EXPECT_FALSE(AppMemoryCost(lat, rows).has_value());
  EXPECT_DOUBLE_EQ(*AppMemoryCost(lat_app, rows), 1.03);
  EXPECT_NEAR(*AppMemoryCost(bw_app, rows), 40.0 / 36.0, 1e-12);

  std::string table = FormatTable(rows, RunInfo{});
  EXPECT_NE(table.find("latency        4 KiB   1.03x"), std::string::npos)
      << table;
  EXPECT_NE(table.find("application memory: more than 5% slower at "
                       "bandwidth 64 KiB 1.11x"),
            std::string::npos)
      << table;

  rows[3].value = 39.0;  // 1.026x
  table = FormatTable(rows, RunInfo{});
  EXPECT_NE(table.find("application memory: within 5% of library memory at "
                       "every size (worst: latency 4 KiB 1.03x)"),
            std::string::npos)
      << table;
  // Without a library figure there is nothing to compare.
  rows[2].value.reset();
  EXPECT_FALSE(AppMemoryCost(rows[3], rows).has_value());
}

}  // namespace
}  // namespace demi::bench
