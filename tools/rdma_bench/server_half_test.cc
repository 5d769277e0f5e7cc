#include "tools/rdma_bench/server_half.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace demi::bench {
namespace {

// A pair helper on a loopback port of its own, serving in a thread.
class PairHelperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    address_.sin_family = AF_INET;
    address_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address_.sin_port = htons(static_cast<uint16_t>(20000 + getpid() % 20000));
    absl::StatusOr<std::unique_ptr<PairHelper>> helper =
        PairHelper::Listen(address_, {"sh"});
    ASSERT_TRUE(helper.ok()) << helper.status();
    helper_ = *std::move(helper);
    serving_ = std::thread([this] { served_ = helper_->Serve(idle_); });
  }
  void TearDown() override {
    if (serving_.joinable()) {
      (void)EndPairHelper(address_);
      serving_.join();
    }
  }

  sockaddr_in address_{};
  absl::Duration idle_ = absl::Seconds(30);
  std::unique_ptr<PairHelper> helper_;
  std::thread serving_;
  absl::Status served_;
};

TEST_F(PairHelperTest, RunsAProgramAndReturnsItsStatusAndOutput) {
  absl::StatusOr<std::unique_ptr<ServerHalf>> half = StartRemoteServerHalf(
      address_, {"sh", "-c", "echo started; sleep 0.2; echo ended; exit 3"}, 0,
      absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_FALSE((*half)->Exited());  // a remote half knows only at Finish
  absl::StatusOr<ServerHalf::Result> result =
      (*half)->Finish(absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, 3);
  EXPECT_EQ(result->output, "started\nended\n");
}

TEST_F(PairHelperTest, KillsAProgramStillRunningAfterTheWait) {
  absl::StatusOr<std::unique_ptr<ServerHalf>> half = StartRemoteServerHalf(
      address_, {"sh", "-c", "echo waiting; exec sleep 60"}, 0,
      absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(half.ok()) << half.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<ServerHalf::Result> result =
      (*half)->Finish(absl::Now() + absl::Milliseconds(200));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(result->status, 128 + 9);  // SIGKILL
  EXPECT_EQ(result->output, "waiting\n");
}

TEST_F(PairHelperTest, RefusesProgramsItWasNotGivenAndKeepsServing) {
  absl::StatusOr<std::unique_ptr<ServerHalf>> refused =
      StartRemoteServerHalf(address_, {"rm", "-rf", "/nonexistent"}, 0,
                            absl::Now() + absl::Seconds(10));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("not a request"), std::string::npos)
      << refused.status();
  // A program that exits before it listens is reported, not hung on.
  absl::StatusOr<std::unique_ptr<ServerHalf>> early = StartRemoteServerHalf(
      address_, {"sh", "-c", "echo bye"}, 1, absl::Now() + absl::Seconds(10));
  ASSERT_FALSE(early.ok());
  EXPECT_NE(early.status().message().find("exited early"), std::string::npos)
      << early.status();
  absl::StatusOr<std::unique_ptr<ServerHalf>> fine = StartRemoteServerHalf(
      address_, {"sh", "-c", "exit 0"}, 0, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(fine.ok()) << fine.status();
  absl::StatusOr<ServerHalf::Result> result =
      (*fine)->Finish(absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, 0);
}

TEST_F(PairHelperTest, ArgumentsWithSeparatorsAreRefusedBeforeSending) {
  absl::StatusOr<std::unique_ptr<ServerHalf>> half = StartRemoteServerHalf(
      address_, {"sh", "-c", "echo a\tb"}, 0, absl::Now() + absl::Seconds(10));
  EXPECT_EQ(half.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PairHelperTest, DoneEndsTheHelper) {
  ASSERT_TRUE(EndPairHelper(address_).ok());
  serving_.join();
  EXPECT_TRUE(served_.ok()) << served_;
  // Once the helper goes, nobody listens.
  helper_.reset();
  const absl::Time start = absl::Now();
  EXPECT_FALSE(EndPairHelper(address_).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(PairHelperIdleTest, AnIdleHelperGivesUp) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(40000 + getpid() % 20000));
  absl::StatusOr<std::unique_ptr<PairHelper>> helper =
      PairHelper::Listen(address, {"sh"});
  ASSERT_TRUE(helper.ok()) << helper.status();
  absl::Status served = (*helper)->Serve(absl::Milliseconds(100));
  EXPECT_EQ(served.code(), absl::StatusCode::kDeadlineExceeded) << served;
}

TEST(ServerHalfTest, LocalHalfListensThenFinishes) {
  absl::StatusOr<std::unique_ptr<ServerHalf>> half = StartLocalServerHalf(
      {"sh", "-c", "echo local; exit 5"}, 0, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(half.ok()) << half.status();
  absl::StatusOr<ServerHalf::Result> result =
      (*half)->Finish(absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, 5);
  EXPECT_EQ(result->output, "local\n");
}

}  // namespace
}  // namespace demi::bench
