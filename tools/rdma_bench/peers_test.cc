#include "tools/rdma_bench/peers.h"

#include "gtest/gtest.h"

namespace demi::bench {
namespace {

// Abridged outputs of ucx_perftest 1.13 and rstream (rdma-core 44), Debian 12.
constexpr char kUcxLatency[] = R"(
+--------------+--------------+------------------------------+---------------------+-----------------------+
|    Stage     | # iterations | 50.0%ile | average | overall |  average |  overall |  average  |  overall  |
+--------------+--------------+----------+---------+---------+----------+----------+-----------+-----------+
[thread 0]                1000     11.502    12.061    12.061       5.06       5.06       82912       82912
Final:                  2000     11.318    12.252    12.252       4.98       4.98       81616       81616
| Message size: 64                                                                                         |
)";

constexpr char kRstream[] =
    R"(name      bytes   xfers   iters   total       time     Gb/sec    usec/xfer
custom    64k     1k      1       125m        0.52s      2.02     258.93
)";

TEST(PeersParseTest, UcxFinalLine) {
  absl::StatusOr<UcxFigures> figures = ParseUcxPerftest(kUcxLatency);
  ASSERT_TRUE(figures.ok()) << figures.status();
  EXPECT_DOUBLE_EQ(figures->median_us, 11.318);
  EXPECT_DOUBLE_EQ(figures->mib_per_s, 4.98);
  EXPECT_DOUBLE_EQ(figures->messages_per_s, 81616);
}

TEST(PeersParseTest, UcxWithoutFinalLineOrWithGarbage) {
  EXPECT_TRUE(absl::IsNotFound(
      ParseUcxPerftest("[thread 0] 1 2 3 4 5 6 7 8\n").status()));
  EXPECT_FALSE(ParseUcxPerftest("Final: 10 x 1 2 3 4 5 6\n").ok());
  EXPECT_FALSE(ParseUcxPerftest("Final: 10 0 0 0 0 0 0 0\n").ok());
}

TEST(PeersParseTest, RstreamResultLine) {
  absl::StatusOr<RstreamFigures> figures = ParseRstream(kRstream);
  ASSERT_TRUE(figures.ok()) << figures.status();
  EXPECT_DOUBLE_EQ(figures->gbit_per_s, 2.02);
  EXPECT_DOUBLE_EQ(figures->usec_per_transfer, 258.93);
}

TEST(PeersParseTest, RstreamWithoutResult) {
  EXPECT_TRUE(absl::IsNotFound(
      ParseRstream("No RDMA devices were detected\n").status()));
  EXPECT_TRUE(absl::IsNotFound(
      ParseRstream("name bytes xfers iters total time Gb/sec usec/xfer\n")
          .status()));
  EXPECT_FALSE(ParseRstream("name bytes xfers iters total time Gb/sec "
                            "usec/xfer\ncustom 64 1 1k 125k 0.3s 0.00 0\n")
                   .ok());
}

}  // namespace
}  // namespace demi::bench
