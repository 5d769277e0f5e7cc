#include "rdma/repost_rule.h"

#include "gtest/gtest.h"

namespace demi::rdma {
namespace {

TEST(RepostRuleTest, BatchesWhileMostArePostedAndGoesAtOnceWhenLow) {
  const RepostRule rule(64);  // a batch of 8; low at 48 posted or fewer
  EXPECT_EQ(rule.batch(), 8u);
  EXPECT_FALSE(rule.Due(0, 0)) << "nothing released, nothing to post";
  EXPECT_FALSE(rule.Due(1, 63));
  EXPECT_FALSE(rule.Due(7, 49));
  EXPECT_TRUE(rule.Due(8, 56)) << "a whole batch";
  EXPECT_TRUE(rule.Due(1, 48)) << "a quarter out: at once";
}

TEST(RepostRuleTest, FewBuffersPostEachRelease) {
  const RepostRule one(1);
  EXPECT_EQ(one.batch(), 1u);
  EXPECT_TRUE(one.Due(1, 0));
  const RepostRule four(4);  // batch 1
  EXPECT_TRUE(four.Due(1, 3));
}

}  // namespace
}  // namespace demi::rdma
