#include "rdma/transfer_nonces.h"

#include <cstdint>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace demi::rdma {
namespace {

TEST(TransferNoncesTest, NeverZeroAcrossManyRefills) {
  TransferNonces nonces;
  for (int i = 0; i < 100000; ++i) ASSERT_NE(nonces.Next(), 0);
}

TEST(TransferNoncesTest, SpreadOverTheRange) {
  // 4096 draws from 65535 values: about 3,970 distinct if uniform; a
  // counter, a constant or a short cycle gives far fewer or a pattern.
  TransferNonces nonces;
  std::set<uint16_t> seen;
  uint32_t high_half = 0;
  for (int i = 0; i < 4096; ++i) {
    const uint16_t nonce = nonces.Next();
    seen.insert(nonce);
    high_half += nonce >= 0x8000;
  }
  EXPECT_GT(seen.size(), 3800u);
  EXPECT_GT(high_half, 1800u);
  EXPECT_LT(high_half, 2300u);
}

TEST(TransferNoncesTest, EachConnectionDrawsItsOwn) {
  // Two connections' first ids do not follow from one another.
  TransferNonces a, b;
  std::vector<uint16_t> first_a, first_b;
  for (int i = 0; i < 8; ++i) {
    first_a.push_back(a.Next());
    first_b.push_back(b.Next());
  }
  EXPECT_NE(first_a, first_b);
}

}  // namespace
}  // namespace demi::rdma
