#include "tools/rdma_bench/perftest.h"

#include <string>

#include "gtest/gtest.h"

namespace demi::bench {
namespace {

// Abridged reports of perftest 4.5 (Debian 12) on rxe0.
constexpr char kSendLat[] = R"(
---------------------------------------------------------------------------------------
                    Send Latency Test
 Dual-port       : OFF		Device         : rxe0
 TX depth        : 1
 Max inline data : 0[B]
---------------------------------------------------------------------------------------
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] 
 64      1000          13.19          161.51       14.04    	       15.77       	9.25   		48.18   		161.51 
---------------------------------------------------------------------------------------
)";

constexpr char kSendBw[] = R"(
 local address: LID 0000 QPN 0x0013 PSN 0xf8e786
 GID: 00:00:00:00:00:00:00:00:00:00:255:255:10:77:00:01
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]
 64         2000             2.59               2.38   		   0.039055
---------------------------------------------------------------------------------------
)";

constexpr char kReadBw[] =
    R"(Device not recognized to implement inline feature. Disabling it
 #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]
 65536      200              56.81              54.66  		   0.000874
)";

TEST(PerftestParseTest, SendLatency) {
  absl::StatusOr<PerftestLatency> lat = ParseLatencyReport(kSendLat);
  ASSERT_TRUE(lat.ok()) << lat.status();
  EXPECT_EQ(lat->bytes, 64u);
  EXPECT_EQ(lat->iterations, 1000u);
  EXPECT_DOUBLE_EQ(lat->min_us, 13.19);
  EXPECT_DOUBLE_EQ(lat->max_us, 161.51);
  EXPECT_DOUBLE_EQ(lat->typical_us, 14.04);
  EXPECT_DOUBLE_EQ(lat->average_us, 15.77);
  EXPECT_DOUBLE_EQ(lat->stdev_us, 9.25);
  EXPECT_DOUBLE_EQ(lat->p99_us, 48.18);
  EXPECT_DOUBLE_EQ(lat->p999_us, 161.51);
}

TEST(PerftestParseTest, InfiniteLatencyIsNoFigure) {
  // Seen in a CI run under emulation: perftest printed "inf" figures.
  std::string report = kSendLat;
  const std::string typical = "14.04";
  report.replace(report.find(typical), typical.size(), "inf");
  absl::StatusOr<PerftestLatency> lat = ParseLatencyReport(report);
  EXPECT_EQ(lat.status().code(), absl::StatusCode::kDataLoss) << lat.status();
  report = kSendBw;
  report.replace(report.find("2.38"), 4, "nan");
  EXPECT_EQ(ParseBandwidthReport(report).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(PerftestParseTest, SendBandwidth) {
  absl::StatusOr<PerftestBandwidth> bw = ParseBandwidthReport(kSendBw);
  ASSERT_TRUE(bw.ok()) << bw.status();
  EXPECT_EQ(bw->bytes, 64u);
  EXPECT_EQ(bw->iterations, 2000u);
  EXPECT_DOUBLE_EQ(bw->peak_mib_s, 2.59);
  EXPECT_DOUBLE_EQ(bw->average_mib_s, 2.38);
  EXPECT_DOUBLE_EQ(bw->mpps, 0.039055);
}

TEST(PerftestParseTest, ReadBandwidthAfterAWarning) {
  absl::StatusOr<PerftestBandwidth> bw = ParseBandwidthReport(kReadBw);
  ASSERT_TRUE(bw.ok()) << bw.status();
  EXPECT_EQ(bw->bytes, 65536u);
  EXPECT_DOUBLE_EQ(bw->average_mib_s, 54.66);
}

TEST(PerftestParseTest, FailedCalibrationSaysSo) {
  absl::StatusOr<PerftestLatency> lat = ParseLatencyReport(
      " Correlation coefficient r^2: 0.2 < 0.9\n Can't produce a report\n");
  ASSERT_FALSE(lat.ok());
  EXPECT_NE(lat.status().message().find("calibrate"), std::string::npos);
}

TEST(PerftestParseTest, ZeroFiguresAreErrors) {
  EXPECT_FALSE(ParseBandwidthReport(" #bytes #iterations BW peak BW average "
                                    "MsgRate\n 4096 100 0.00 0.00 0.000000\n")
                   .ok());
  EXPECT_FALSE(ParseLatencyReport(" #bytes #iterations t_min\n"
                                  " 64 1000 0 0 0 0 0 0 0\n")
                   .ok());
}

TEST(PerftestParseTest, NoResultLine) {
  EXPECT_FALSE(ParseBandwidthReport("").ok());
  EXPECT_FALSE(
      ParseBandwidthReport(" #bytes  #iterations\n-------\n Couldn't connect\n")
          .ok());
}

TEST(PerftestParseTest, ShortResultLineIsAnError) {
  // A bandwidth line is too short for a latency report.
  absl::StatusOr<PerftestLatency> lat = ParseLatencyReport(kSendBw);
  EXPECT_FALSE(lat.ok());
}

TEST(PerftestParseTest, ReportField) {
  EXPECT_EQ(ReportField(kSendLat, "TX depth"), "1");
  EXPECT_EQ(ReportField(kSendLat, "Device"), "rxe0");
  EXPECT_EQ(ReportField(kSendLat, "Max inline data"), "0[B]");
  EXPECT_EQ(ReportField(kSendLat, "CQ Moderation"), "");
}

TEST(FindOnPathTest, FindsShAndNotNonsense) {
  EXPECT_NE(FindOnPath("sh"), "");
  EXPECT_EQ(FindOnPath("no-such-program-rdma-bench"), "");
}

}  // namespace
}  // namespace demi::bench
