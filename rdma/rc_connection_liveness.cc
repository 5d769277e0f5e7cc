// RcConnection, liveness: keepalive probes (zero-length RDMA WRITEs) and
// the check for a peer that stopped returning credits or dones.

#include <errno.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "rdma/rc_connection.h"
#include "rdma/rc_connection_steps.h"

namespace demi::rdma {

absl::Duration RcConnection::StuckAfter() const {
  // A retransmission every 4.096 us * 2^ack_timeout, retry_count of them
  // after the first try; rdma_cm's default (ack_timeout 0) is taken as 19.
  const int exponent = options_.ack_timeout != 0 ? options_.ack_timeout : 19;
  const absl::Duration budget = absl::Nanoseconds(4096) *
                                (int64_t{1} << exponent) *
                                (options_.retry_count + 1);
  return std::max(2 * budget, absl::Seconds(1));
}

void RcConnection::SendKeepalive(absl::Time now) {
  if (std::optional<absl::Duration> out =
          watch_.ProbeStuckFor(now, StuckAfter());
      status_.ok() && out.has_value()) {
    Fail(ErrnoError(
        ETIMEDOUT,
        absl::StrCat("a keepalive probe got no completion in ",
                     absl::FormatDuration(*out), ": the transport is stuck")));
    return;
  }
  // Not while one is out, nor into a full send queue. Sends posted before
  // it may be in flight or long acknowledged (unsignaled ones stay in
  // the send queue until a signaled completion retires them): the probe goes
  // anyway, and its completion retires them.
  if (!status_.ok() || !established_ || watch_.probe_out() || SendQueueFull()) {
    return;
  }
  ibv_send_wr* wr = PrepareZeroWrite(SendKind::kKeepalive);
  if (PostChain(wr, wr, 1) == 1) watch_.ProbePosted(now);
}

// Prepares, in the next free send slot, a zero-length
// RDMA WRITE of `kind` (kKeepalive, kDrain): no address, key or receive at
// the peer (a zero-length request is checked against none), only its
// transport's acknowledgement. The caller checked there is a free slot.
ibv_send_wr* RcConnection::PrepareZeroWrite(SendKind kind) {
  // A zero-length RDMA WRITE: no address, key or receive at the peer (a
  // zero-length request is not checked against either), only its
  // transport's acknowledgement.
  const uint32_t slot = sends_.SlotAfterPosted(0);
  ibv_send_wr& wr = sends_.Start(slot, completion_.WrId(slot), /*sge=*/nullptr,
                                 /*num_sge=*/0, IBV_WR_RDMA_WRITE);
  wr.wr.rdma.remote_addr = 0;
  wr.wr.rdma.rkey = 0;
  sends_.record(slot) = PostedSend{.kind = kind};
  return &wr;
}

void RcConnection::CheckStall(absl::Time now, absl::Duration limit) {
  const bool waiting = status_.ok() && established_ &&
                       ((!fifo_.empty() && !credits_->CanSendData()) ||
                        rendezvous_.in_use() != 0);
  const std::optional<absl::Duration> stalled =
      watch_.StalledFor(now, waiting, limit);
  if (!stalled.has_value()) return;
  Fail(ErrnoError(
      ETIMEDOUT,
      absl::StrCat("waited ", absl::FormatDuration(*stalled),
                   " for the peer's credits or rendezvous reads (",
                   fifo_.size(), " sends queued, ", rendezvous_.in_use(),
                   " rendezvous messages unanswered)")));
  completion_.RequestAfterPoll();  // reported by the next poll
}

}  // namespace demi::rdma
