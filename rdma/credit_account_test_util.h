// Shared by the CreditAccount tests: an account that must exist.

#ifndef DEMI_RDMA_CREDIT_ACCOUNT_TEST_UTIL_H_
#define DEMI_RDMA_CREDIT_ACCOUNT_TEST_UTIL_H_

#include <cstdint>
#include <optional>

#include "gtest/gtest.h"
#include "rdma/credit_account.h"

namespace demi::rdma {

// CreditAccount::Create(peer, local), failing the test if it refuses.
inline CreditAccount MakeAccount(uint32_t peer, uint32_t local) {
  std::optional<CreditAccount> account = CreditAccount::Create(peer, local);
  EXPECT_TRUE(account.has_value()) << peer << " " << local;
  return account.value();
}

// A SEND in flight between two simulated sides: data or a credit update,
// with the credits it returns.
struct SentMessage {
  bool data = false;
  uint16_t credits_returned = 0;
  uint64_t seq = 0;  // data only
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_CREDIT_ACCOUNT_TEST_UTIL_H_
