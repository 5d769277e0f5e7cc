#include "tools/rdma_bench/options.h"

#include <arpa/inet.h>

#include <cstdlib>
#include <vector>

#include "gtest/gtest.h"

namespace demi::bench {
namespace {

absl::StatusOr<Options> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "rdma_bench");
  bool help = false;
  return ParseOptions(static_cast<int>(args.size()), args.data(), &help);
}

TEST(ParseSizeTest, SuffixesAndLimits) {
  EXPECT_EQ(*ParseSize("8"), 8u);
  EXPECT_EQ(*ParseSize("64B"), 64u);
  EXPECT_EQ(*ParseSize("8K"), 8192u);
  EXPECT_EQ(*ParseSize("8k"), 8192u);
  EXPECT_EQ(*ParseSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseSize("4M"), 4u << 20);
  EXPECT_EQ(*ParseSize(" 1G "), 1u << 30);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("0").ok());
  EXPECT_FALSE(ParseSize("K").ok());
  EXPECT_FALSE(ParseSize("-8").ok());
  EXPECT_FALSE(ParseSize("2G").ok());
  EXPECT_FALSE(ParseSize("8X").ok());
  EXPECT_FALSE(ParseSize("1.5K").ok());
}

TEST(ParseSizeListTest, SortedWithoutDuplicates) {
  absl::StatusOr<std::vector<uint64_t>> sizes = ParseSizeList("64K,8,64,8");
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  EXPECT_EQ(*sizes, (std::vector<uint64_t>{8, 64, 65536}));
  EXPECT_FALSE(ParseSizeList("64,,8").ok());
  EXPECT_FALSE(ParseSizeList("").ok());
}

TEST(DefaultSizesTest, HasTheHeadlineSizes) {
  std::vector<uint64_t> sizes = DefaultSizes();
  ASSERT_FALSE(sizes.empty());
  EXPECT_EQ(sizes.front(), 8u);
  EXPECT_EQ(sizes.back(), 64u << 20);
  for (uint64_t want : {64u, 8192u, 65536u}) {
    EXPECT_NE(std::find(sizes.begin(), sizes.end(), want), sizes.end()) << want;
  }
  EXPECT_TRUE(std::is_sorted(sizes.begin(), sizes.end()));
}

TEST(ParseAddressTest, Ipv4AndPort) {
  absl::StatusOr<sockaddr_in> address = ParseAddress("10.77.0.1:7471");
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(ntohs(address->sin_port), 7471);
  EXPECT_EQ(address->sin_addr.s_addr, inet_addr("10.77.0.1"));
  EXPECT_FALSE(ParseAddress("10.77.0.1").ok());
  EXPECT_FALSE(ParseAddress("10.77.0.1:0").ok());
  EXPECT_FALSE(ParseAddress("10.77.0.1:70000").ok());
  EXPECT_FALSE(ParseAddress("host:80").ok());
}

TEST(FormatSizeTest, BinaryUnits) {
  EXPECT_EQ(FormatSize(8), "8 B");
  EXPECT_EQ(FormatSize(1023), "1023 B");
  EXPECT_EQ(FormatSize(8192), "8 KiB");
  EXPECT_EQ(FormatSize(1536), "1.5 KiB");
  EXPECT_EQ(FormatSize(64u << 20), "64 MiB");
}

TEST(ParseOptionsTest, Defaults) {
  setenv("DEMI_RDMA_ADDR", "10.1.2.3", 1);
  absl::StatusOr<Options> options = Parse({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->role, Role::kLocal);
  EXPECT_EQ(options->address.sin_addr.s_addr, inet_addr("10.1.2.3"));
  EXPECT_NE(options->address.sin_port, 0);
  EXPECT_EQ(options->sizes, DefaultSizes());
  EXPECT_EQ(options->memories.size(), 2u);
  EXPECT_TRUE(options->workloads.latency && options->workloads.rate &&
              options->workloads.bandwidth);
  EXPECT_EQ(options->window, 32u);
  EXPECT_EQ(options->rounds, 1u);
  EXPECT_FALSE(options->baseline);
  EXPECT_EQ(options->echo, EchoMode::kPopped);
  unsetenv("DEMI_RDMA_ADDR");
}

TEST(ParseOptionsTest, EchoMode) {
  absl::StatusOr<Options> buffer = Parse({"--echo", "buffer"});
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(buffer->echo, EchoMode::kBuffer);
  absl::StatusOr<Options> popped = Parse({"--echo=popped"});
  ASSERT_TRUE(popped.ok()) << popped.status();
  EXPECT_EQ(popped->echo, EchoMode::kPopped);
  EXPECT_FALSE(Parse({"--echo", "copy"}).ok());
}

TEST(ParseOptionsTest, EveryFlag) {
  absl::StatusOr<Options> options = Parse({"--client",
                                           "10.0.0.2:9000",
                                           "--sizes=64,1K",
                                           "--memory",
                                           "lib",
                                           "--workloads",
                                           "lat,bw",
                                           "--window",
                                           "8",
                                           "--connections",
                                           "4",
                                           "--duration-ms",
                                           "50",
                                           "--min-iterations",
                                           "3",
                                           "--baseline",
                                           "--device",
                                           "mlx5_0",
                                           "--json",
                                           "a.json",
                                           "--csv",
                                           "a.csv",
                                           "--plot",
                                           "a.png"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->role, Role::kClient);
  EXPECT_EQ(ntohs(options->address.sin_port), 9000);
  EXPECT_EQ(options->sizes, (std::vector<uint64_t>{64, 1024}));
  EXPECT_EQ(options->memories, (std::vector<Memory>{Memory::kLibrary}));
  EXPECT_TRUE(options->workloads.latency);
  EXPECT_FALSE(options->workloads.rate);
  EXPECT_TRUE(options->workloads.bandwidth);
  EXPECT_EQ(options->window, 8u);
  EXPECT_EQ(options->connections, 4u);
  EXPECT_EQ(options->duration_ms, 50u);
  EXPECT_EQ(options->min_iterations, 3u);
  EXPECT_TRUE(options->baseline);
  EXPECT_FALSE(options->baseline_all);
  EXPECT_EQ(options->device, "mlx5_0");
  EXPECT_EQ(options->json_path, "a.json");
  EXPECT_EQ(options->csv_path, "a.csv");
  EXPECT_EQ(options->plot_path, "a.png");
}

TEST(ParseOptionsTest, QuickIsAPresetThatFlagsOverride) {
  absl::StatusOr<Options> quick = Parse({"--quick"});
  ASSERT_TRUE(quick.ok());
  EXPECT_EQ(quick->sizes, (std::vector<uint64_t>{64, 16384}));
  EXPECT_EQ(quick->duration_ms, 20u);
  absl::StatusOr<Options> sized = Parse({"--quick", "--sizes", "8"});
  ASSERT_TRUE(sized.ok());
  EXPECT_EQ(sized->sizes, (std::vector<uint64_t>{8}));
}

TEST(ParseOptionsTest, Rounds) {
  absl::StatusOr<Options> three = Parse({"--rounds", "3"});
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->rounds, 3u);
  EXPECT_FALSE(Parse({"--rounds", "0"}).ok());
  EXPECT_FALSE(Parse({"--rounds", "10"}).ok());
  EXPECT_FALSE(Parse({"--rounds", "two"}).ok());
}

TEST(ParseOptionsTest, Errors) {
  EXPECT_FALSE(Parse({"--server", "1.2.3.4:5", "--local"}).ok());
  EXPECT_FALSE(Parse({"--window"}).ok());
  EXPECT_FALSE(Parse({"--window", "0"}).ok());
  EXPECT_FALSE(Parse({"--memory", "gpu"}).ok());
  EXPECT_FALSE(Parse({"--workloads", "lat,nope"}).ok());
  EXPECT_FALSE(Parse({"--sizes", "64,huge"}).ok());
  EXPECT_FALSE(Parse({"--frobnicate"}).ok());
  EXPECT_FALSE(Parse({"--quick=yes"}).ok());
}

TEST(ParseOptionsTest, Help) {
  const char* args[] = {"rdma_bench", "--help"};
  bool help = false;
  EXPECT_TRUE(ParseOptions(2, args, &help).ok());
  EXPECT_TRUE(help);
  EXPECT_NE(Usage().find("--baseline"), std::string::npos);
}

}  // namespace
}  // namespace demi::bench
