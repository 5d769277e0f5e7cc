// Credit-based flow control for one reliable-connected connection: one side's
// view. See credit_account.md for the rules and why they cannot deadlock.
//
// Each side keeps a fixed number of receive buffers posted. A SEND that finds
// no receive posted is a receiver-not-ready error, fatal with rnr_retry_count
// 0, so a side posts a SEND only while it holds a credit: a receive buffer the
// peer is known to have posted and no earlier SEND of ours has consumed.
//
//  * Credits start at the peer's receive count (from the connection's private
//    data) and come back in the credits_returned field of the peer's messages.
//  * Every message received (its receive completion polled), of any type,
//    takes one of our receive buffers. Once that buffer is posted again, the
//    peer is owed one credit; everything owed rides on our next message.
//    A data message's buffer is re-posted when the application frees what it
//    popped (demi_sgafree). A message without payload (credit update, end of
//    stream) must have its buffer re-posted, and OnReceiveReposted() called,
//    while its completion is handled: before this side posts any other SEND.
//  * A data message (or end of stream: anything but a credit update) may not
//    take the last credit. A credit update, a header-only message carrying
//    only returns, may take the last credit but is sent only once at least
//    threshold() >= 2 returns are owed, so one credit update never provokes
//    another.
//
// Returns are owed only for re-posted buffers, so a consumer that stops
// popping makes the peer's pushes wait (CanSendData() turns false) instead of
// failing or being lost: that is the backpressure. It does not stop this
// side's own pushes, which progress as long as the peer keeps popping
// (credit_account.md has the argument).
//
// Not thread-safe: its connection's caller serializes every call (the libOS
// calls under its worker's lock); no allocation; O(1).

#ifndef DEMI_RDMA_CREDIT_ACCOUNT_H_
#define DEMI_RDMA_CREDIT_ACCOUNT_H_

#include <cstdint>
#include <optional>

namespace demi::rdma {

class CreditAccount {
 public:
  // Fewest receive buffers a side may keep posted: with fewer, the rules above
  // can deadlock (see credit_account.md).
  static constexpr uint32_t kMinReceiveBuffers = 3;
  // Most receive buffers a side may keep posted: any number of returns owed
  // then fits the header's uint16 credits_returned.
  static constexpr uint32_t kMaxReceiveBuffers = UINT16_MAX;

  // Returns owed before a side sends an explicit credit update:
  // max(2, local_receive_buffers / 2). Any threshold in
  // [2, local_receive_buffers - 1] is sound (>= 2: no update ping-pong;
  // <= N - 1: no deadlock); half the window keeps updates to one per N/2
  // messages received while leaving the peer half its window to keep
  // sending while the update travels.
  static constexpr uint32_t ThresholdFor(uint32_t local_receive_buffers) {
    return local_receive_buffers / 2 > 2 ? local_receive_buffers / 2 : 2;
  }

  // `peer_receive_buffers`: the receives the peer keeps posted (its private
  // data); `local_receive_buffers`: the receives this side keeps posted. Both
  // must be in [kMinReceiveBuffers, kMaxReceiveBuffers]; otherwise nullopt
  // (the caller refuses the connection, EPROTO or EINVAL).
  static std::optional<CreditAccount> Create(uint32_t peer_receive_buffers,
                                             uint32_t local_receive_buffers);

  // ---- Sending. Credits are taken when the SEND is posted. If posting then
  // fails, the connection is broken; the account is not rolled back.

  // Whether a data message (or end of stream) may be posted now: at least two
  // credits, so one stays for a credit update.
  bool CanSendData() const { return credits_ >= 2; }

  // Takes one credit for a data message and returns the credits_returned to
  // put in its header (everything owed, which is then no longer owed).
  // nullopt, and no change, if !CanSendData().
  // Inline: every data send asks.
  std::optional<uint16_t> ConsumeForData() {
    if (!CanSendData()) return std::nullopt;
    ++data_messages_sent_;
    return Consume();
  }

  // Whether an explicit credit update should be posted now: at least
  // threshold() returns owed and at least one credit. Check it after sending
  // whatever data is queued (data carries the returns for free) and whenever
  // owed() grows, i.e. after OnReceiveReposted().
  bool ShouldSendCreditUpdate() const {
    return credits_ >= 1 && owed_ >= threshold_;
  }

  // Takes one credit (possibly the last) for a credit update and returns its
  // credits_returned. nullopt, and no change, if !ShouldSendCreditUpdate().
  std::optional<uint16_t> ConsumeForCreditUpdate();

  // ---- Receiving.

  // A message from the peer was received (its receive completion polled),
  // whatever its type: adds its returned credits and notes that one of our
  // receive buffers is now in use. Returns false, and changes nothing, if the
  // peer broke the protocol: it returned more credits than it had outstanding,
  // or it used more of our buffers than we keep posted. The caller then fails
  // the connection (EPROTO).
  [[nodiscard]] bool OnMessageReceived(uint16_t credits_returned);

  // A receive buffer that held a received message was posted again; the peer
  // is owed one credit. Call it after ibv_post_recv succeeds, never before.
  // Returns false, and changes nothing, if no received message's buffer is
  // awaiting a re-post (a caller bug).
  [[nodiscard]] bool OnReceiveReposted();

  // ---- Introspection (tests, counters).

  uint32_t peer_receive_buffers() const { return peer_receive_buffers_; }
  uint32_t local_receive_buffers() const { return local_receive_buffers_; }
  uint32_t threshold() const { return threshold_; }
  // SENDs we may still post into the peer's receive buffers.
  uint32_t credits() const { return credits_; }
  // Re-posted receive buffers the peer has not been told about.
  uint32_t owed() const { return owed_; }
  // Received messages whose buffers have not been re-posted yet.
  uint32_t unreposted() const { return unreposted_; }
  uint64_t data_messages_sent() const { return data_messages_sent_; }
  uint64_t credit_updates_sent() const { return credit_updates_sent_; }
  uint64_t messages_received() const { return messages_received_; }

 private:
  CreditAccount(uint32_t peer_receive_buffers, uint32_t local_receive_buffers);

  // Takes one credit and hands out everything owed.
  uint16_t Consume() {
    --credits_;
    // owed_ <= local_receive_buffers_ <= UINT16_MAX (see OnMessageReceived).
    const auto returned = static_cast<uint16_t>(owed_);
    owed_ = 0;
    return returned;
  }

  uint32_t peer_receive_buffers_;
  uint32_t local_receive_buffers_;
  uint32_t threshold_;
  uint32_t credits_;
  uint32_t owed_ = 0;
  uint32_t unreposted_ = 0;
  uint64_t data_messages_sent_ = 0;
  uint64_t credit_updates_sent_ = 0;
  uint64_t messages_received_ = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_CREDIT_ACCOUNT_H_
