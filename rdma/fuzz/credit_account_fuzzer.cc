// Fuzz target: two CreditAccounts, the two sides of one connection, driven
// by the input: each byte picks a step (a side sends data or a credit
// update, a message is delivered, a side's application frees what it
// popped) or, after a marker, a forged message from a hostile peer.
//
// While both sides are honest it checks what the protocol promises: no
// SEND ever finds the peer's receives used up (the receiver-not-ready error
// rnr_retry_count 0 makes fatal), every honest message is accepted, and
// once everything is delivered and freed both sides may send data again
// (no deadlock). Forged messages must be refused without a change, or, if
// accepted, keep the account within its bounds.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

#include "rdma/credit_account.h"
#include "rdma/fuzz/fuzz_check.h"

namespace {

using demi::rdma::CreditAccount;

// The input, read a byte or a uint16 at a time (zeros once it runs out).
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return offset_ >= size_; }
  uint8_t Byte() { return offset_ < size_ ? data_[offset_++] : 0; }
  uint16_t Word() { return static_cast<uint16_t>(Byte() | (Byte() << 8)); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t offset_ = 0;
};

struct Message {
  uint16_t credits_returned;
  bool data;  // else a credit update (its buffer is re-posted at once)
};

// One side: its account, the receives it has posted and not yet seen used,
// the data messages its application still holds, and what it has sent
// that is still on the wire.
struct Side {
  CreditAccount account;
  uint32_t receives_posted;
  uint32_t held = 0;
  std::deque<Message> outbound;
};

void CheckBounds(const CreditAccount& a) {
  FUZZ_CHECK(a.credits() <= a.peer_receive_buffers());
  FUZZ_CHECK(a.owed() <= a.local_receive_buffers());
  FUZZ_CHECK(a.unreposted() <= a.local_receive_buffers());
}

// `to` receives the oldest message `from` sent. Honest: it must be
// accepted and find a receive posted.
void Deliver(Side& from, Side& to) {
  if (from.outbound.empty()) return;
  const Message message = from.outbound.front();
  from.outbound.pop_front();
  FUZZ_CHECK(to.receives_posted > 0);  // else: receiver not ready
  --to.receives_posted;
  FUZZ_CHECK(to.account.OnMessageReceived(message.credits_returned));
  if (message.data) {
    ++to.held;
  } else {
    FUZZ_CHECK(to.account.OnReceiveReposted());
    ++to.receives_posted;
  }
}

void Free(Side& side) {
  if (side.held == 0) return;
  --side.held;
  FUZZ_CHECK(side.account.OnReceiveReposted());
  ++side.receives_posted;
}

void SendData(Side& side) {
  if (!side.account.CanSendData()) {
    FUZZ_CHECK(!side.account.ConsumeForData().has_value());
    return;
  }
  std::optional<uint16_t> returned = side.account.ConsumeForData();
  FUZZ_CHECK(returned.has_value());
  side.outbound.push_back({*returned, true});
}

void SendCreditUpdate(Side& side) {
  if (!side.account.ShouldSendCreditUpdate()) {
    FUZZ_CHECK(!side.account.ConsumeForCreditUpdate().has_value());
    return;
  }
  std::optional<uint16_t> returned = side.account.ConsumeForCreditUpdate();
  FUZZ_CHECK(returned.has_value());
  side.outbound.push_back({*returned, false});
}

// A message the peer made up: any credits_returned. Refused: nothing
// changed. Accepted: still within bounds.
void Forge(Side& to, uint16_t credits_returned) {
  const CreditAccount before = to.account;
  if (!to.account.OnMessageReceived(credits_returned)) {
    FUZZ_CHECK(to.account.credits() == before.credits());
    FUZZ_CHECK(to.account.owed() == before.owed());
    FUZZ_CHECK(to.account.unreposted() == before.unreposted());
    FUZZ_CHECK(to.account.messages_received() == before.messages_received());
  }
  CheckBounds(to.account);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  // Receive counts from the input: the smallest sound one up to 64 (the
  // bounds are Create's to refuse: tried below).
  const uint32_t a_receives =
      CreditAccount::kMinReceiveBuffers + in.Byte() % 62;
  const uint32_t b_receives =
      CreditAccount::kMinReceiveBuffers + in.Byte() % 62;
  FUZZ_CHECK(!CreditAccount::Create(a_receives, 0).has_value());
  FUZZ_CHECK(
      !CreditAccount::Create(CreditAccount::kMaxReceiveBuffers + 1, b_receives)
           .has_value());
  std::optional<CreditAccount> a =
      CreditAccount::Create(b_receives, a_receives);
  std::optional<CreditAccount> b =
      CreditAccount::Create(a_receives, b_receives);
  FUZZ_CHECK(a.has_value() && b.has_value());
  Side sides[2] = {{*a, a_receives, 0, {}}, {*b, b_receives, 0, {}}};
  bool honest = true;
  while (!in.empty()) {
    const uint8_t step = in.Byte();
    Side& self = sides[step & 1];
    Side& peer = sides[(step & 1) ^ 1];
    switch ((step >> 1) % 8) {
      case 0:
      case 1:
        SendData(self);
        break;
      case 2:
        SendCreditUpdate(self);
        break;
      case 3:
      case 4:
        if (honest) Deliver(self, peer);
        break;
      case 5:
      case 6:
        Free(self);
        break;
      case 7:
        // A forged message; the simulation's honest accounting ends here.
        honest = false;
        Forge(peer, in.Word());
        break;
    }
    CheckBounds(self.account);
    CheckBounds(peer.account);
  }
  if (!honest) return 0;
  // Drain: deliver everything, free everything, send the updates that come
  // due, until nothing moves. Then both sides may send data again.
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < 2; ++s) {
      Side& self = sides[s];
      Side& peer = sides[s ^ 1];
      while (!self.outbound.empty()) {
        Deliver(self, peer);
        moved = true;
      }
      while (peer.held > 0) {
        Free(peer);
        moved = true;
      }
      if (peer.account.ShouldSendCreditUpdate()) {
        SendCreditUpdate(peer);
        moved = true;
      }
    }
  }
  FUZZ_CHECK(sides[0].account.CanSendData());
  FUZZ_CHECK(sides[1].account.CanSendData());
  return 0;
}
