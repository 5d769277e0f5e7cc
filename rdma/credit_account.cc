#include "rdma/credit_account.h"

namespace demi::rdma {

std::optional<CreditAccount> CreditAccount::Create(
    uint32_t peer_receive_buffers, uint32_t local_receive_buffers) {
  auto valid = [](uint32_t buffers) {
    return buffers >= kMinReceiveBuffers && buffers <= kMaxReceiveBuffers;
  };
  if (!valid(peer_receive_buffers) || !valid(local_receive_buffers)) {
    return std::nullopt;
  }
  return CreditAccount(peer_receive_buffers, local_receive_buffers);
}

CreditAccount::CreditAccount(uint32_t peer_receive_buffers,
                             uint32_t local_receive_buffers)
    : peer_receive_buffers_(peer_receive_buffers),
      local_receive_buffers_(local_receive_buffers),
      threshold_(ThresholdFor(local_receive_buffers)),
      credits_(peer_receive_buffers) {}

std::optional<uint16_t> CreditAccount::ConsumeForCreditUpdate() {
  if (!ShouldSendCreditUpdate()) return std::nullopt;
  ++credit_updates_sent_;
  return Consume();
}

bool CreditAccount::OnMessageReceived(uint16_t credits_returned) {
  // The peer can return only credits it spent: outstanding ones.
  if (credits_returned > peer_receive_buffers_ - credits_) return false;
  // Our buffers the peer has not been given back: those holding messages not
  // yet re-posted, and re-posted ones still owed. This message takes one more.
  if (unreposted_ + owed_ >= local_receive_buffers_) return false;
  credits_ += credits_returned;
  ++unreposted_;
  ++messages_received_;
  return true;
}

bool CreditAccount::OnReceiveReposted() {
  if (unreposted_ == 0) return false;
  --unreposted_;
  ++owed_;
  return true;
}

}  // namespace demi::rdma
