#include "rdma/credit_account.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "rdma/credit_account_test_util.h"

namespace demi::rdma {
namespace {

// Receives `n` messages returning no credits and re-posts their buffers.
void ReceiveAndRepost(CreditAccount& account, int n) {
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(account.OnMessageReceived(0));
    ASSERT_TRUE(account.OnReceiveReposted());
  }
}

// ---- Unit tests of each rule ----------------------------------------------

TEST(CreditAccountTest, CreateRejectsTooFewOrTooManyBuffers) {
  EXPECT_EQ(CreditAccount::kMinReceiveBuffers, 3u);
  for (uint32_t bad : {0u, 1u, 2u, 65536u, UINT32_MAX}) {
    EXPECT_FALSE(CreditAccount::Create(bad, 8).has_value()) << bad;
    EXPECT_FALSE(CreditAccount::Create(8, bad).has_value()) << bad;
  }
  EXPECT_TRUE(CreditAccount::Create(3, 3).has_value());
  EXPECT_TRUE(CreditAccount::Create(65535, 65535).has_value());
}

TEST(CreditAccountTest, StartsWithThePeersReceiveCount) {
  CreditAccount account = MakeAccount(7, 5);
  EXPECT_EQ(account.peer_receive_buffers(), 7u);
  EXPECT_EQ(account.local_receive_buffers(), 5u);
  EXPECT_EQ(account.credits(), 7u);
  EXPECT_EQ(account.owed(), 0u);
  EXPECT_EQ(account.unreposted(), 0u);
  EXPECT_EQ(account.threshold(), 2u);
  EXPECT_TRUE(account.CanSendData());
  EXPECT_FALSE(account.ShouldSendCreditUpdate());
}

TEST(CreditAccountTest, ThresholdIsBetweenTwoAndOneLessThanTheBuffers) {
  EXPECT_EQ(CreditAccount::ThresholdFor(3), 2u);
  EXPECT_EQ(CreditAccount::ThresholdFor(5), 2u);
  EXPECT_EQ(CreditAccount::ThresholdFor(6), 3u);
  EXPECT_EQ(CreditAccount::ThresholdFor(64), 32u);
  for (uint32_t n = CreditAccount::kMinReceiveBuffers;
       n <= CreditAccount::kMaxReceiveBuffers; ++n) {
    ASSERT_GE(CreditAccount::ThresholdFor(n), 2u) << n;
    ASSERT_LE(CreditAccount::ThresholdFor(n), n - 1) << n;
  }
}

TEST(CreditAccountTest, DataNeverTakesTheLastCredit) {
  CreditAccount account = MakeAccount(3, 3);
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  EXPECT_EQ(account.credits(), 1u);
  EXPECT_FALSE(account.CanSendData());
  EXPECT_EQ(account.ConsumeForData(), std::nullopt);
  EXPECT_EQ(account.credits(), 1u);
  EXPECT_EQ(account.data_messages_sent(), 2u);
}

TEST(CreditAccountTest, CreditUpdateOnlyAtThreshold) {
  CreditAccount account = MakeAccount(8, 8);
  ASSERT_EQ(account.threshold(), 4u);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(account.OnMessageReceived(0));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(account.OnReceiveReposted());
    EXPECT_FALSE(account.ShouldSendCreditUpdate()) << i;
    EXPECT_EQ(account.ConsumeForCreditUpdate(), std::nullopt);
  }
  ASSERT_TRUE(account.OnReceiveReposted());
  EXPECT_TRUE(account.ShouldSendCreditUpdate());
  EXPECT_EQ(account.ConsumeForCreditUpdate(), 4);
  EXPECT_EQ(account.owed(), 0u);
  EXPECT_EQ(account.credits(), 7u);
  EXPECT_EQ(account.credit_updates_sent(), 1u);
  EXPECT_FALSE(account.ShouldSendCreditUpdate());
}

TEST(CreditAccountTest, CreditUpdateMayTakeTheLastCreditButNeedsOne) {
  CreditAccount account = MakeAccount(3, 4);
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ReceiveAndRepost(account, 2);
  ASSERT_FALSE(account.CanSendData());
  ASSERT_TRUE(account.ShouldSendCreditUpdate());
  EXPECT_EQ(account.ConsumeForCreditUpdate(), 2);
  EXPECT_EQ(account.credits(), 0u);
  // Owing again, but no credit left to tell the peer with.
  ReceiveAndRepost(account, 2);
  EXPECT_FALSE(account.ShouldSendCreditUpdate());
  EXPECT_EQ(account.ConsumeForCreditUpdate(), std::nullopt);
  EXPECT_EQ(account.owed(), 2u);
}

TEST(CreditAccountTest, ReturnsArePiggybackedAndReset) {
  CreditAccount account = MakeAccount(8, 8);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(account.OnMessageReceived(0));
  ASSERT_TRUE(account.OnReceiveReposted());
  ASSERT_TRUE(account.OnReceiveReposted());
  // Only re-posted buffers are owed; the third is still with the app.
  EXPECT_EQ(account.ConsumeForData(), 2);
  EXPECT_EQ(account.owed(), 0u);
  EXPECT_EQ(account.ConsumeForData(), 0);
  ASSERT_TRUE(account.OnReceiveReposted());
  EXPECT_EQ(account.ConsumeForData(), 1);
  EXPECT_EQ(account.unreposted(), 0u);
}

TEST(CreditAccountTest, ReturnedCreditsComeBack) {
  CreditAccount account = MakeAccount(4, 4);
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_EQ(account.credits(), 1u);
  ASSERT_TRUE(account.OnMessageReceived(2));
  EXPECT_EQ(account.credits(), 3u);
  ASSERT_TRUE(account.OnMessageReceived(1));
  EXPECT_EQ(account.credits(), 4u);
  EXPECT_EQ(account.messages_received(), 2u);
}

TEST(CreditAccountTest, ReturningMoreThanOutstandingIsRejected) {
  CreditAccount account = MakeAccount(5, 5);
  EXPECT_FALSE(account.OnMessageReceived(1));  // none outstanding
  ASSERT_TRUE(account.ConsumeForData().has_value());
  ASSERT_TRUE(account.ConsumeForData().has_value());
  EXPECT_FALSE(account.OnMessageReceived(3));
  EXPECT_FALSE(account.OnMessageReceived(UINT16_MAX));
  // A rejected message changes nothing.
  EXPECT_EQ(account.credits(), 3u);
  EXPECT_EQ(account.unreposted(), 0u);
  EXPECT_EQ(account.messages_received(), 0u);
  EXPECT_TRUE(account.OnMessageReceived(2));
  EXPECT_EQ(account.credits(), 5u);
}

TEST(CreditAccountTest, PeerUsingMoreBuffersThanPostedIsRejected) {
  CreditAccount account = MakeAccount(4, 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(account.OnMessageReceived(0));
  EXPECT_FALSE(account.OnMessageReceived(0));
  // Re-posted but not yet returned: the peer does not know, so may not use it.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(account.OnReceiveReposted());
  EXPECT_FALSE(account.OnMessageReceived(0));
  EXPECT_EQ(account.ConsumeForData(), 3);
  EXPECT_TRUE(account.OnMessageReceived(0));
}

TEST(CreditAccountTest, RepostWithoutReceivedMessageIsRejected) {
  CreditAccount account = MakeAccount(3, 3);
  EXPECT_FALSE(account.OnReceiveReposted());
  ASSERT_TRUE(account.OnMessageReceived(0));
  EXPECT_TRUE(account.OnReceiveReposted());
  EXPECT_FALSE(account.OnReceiveReposted());
  EXPECT_EQ(account.owed(), 1u);
}

TEST(CreditAccountTest, LargestWindowsReturnsFitTheHeader) {
  CreditAccount account = MakeAccount(65535, 65535);
  ReceiveAndRepost(account, 65535);
  EXPECT_EQ(account.ConsumeForData(), 65535);
  EXPECT_EQ(account.owed(), 0u);
}

}  // namespace
}  // namespace demi::rdma
