// RcConnection, completions: polling, what each send and receive completion
// means, releases and re-posting, failure. (Setup is rc_connection_setup.cc,
// sending rc_connection_send.cc, probes rc_connection_liveness.cc.)

#include "rdma/rc_connection.h"

#include <errno.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace demi::rdma {
namespace {

// Where completions go while nobody set a sink: logged, and lost.
class UnsetSink final : public CompletionSink {
 public:
  void OnSendComplete(uint64_t cookie, const absl::Status&) override {
    DEMI_LOG(kError, "send ", cookie, " completed with no sink set");
  }
  void OnMessage(const ReceivedMessage&) override {
    DEMI_LOG(kError, "message received with no sink set");
  }
  void OnEndOfStream() override {
    DEMI_LOG(kError, "end of stream with no sink set");
  }
};

int ErrnoForCompletion(ibv_wc_status status) {
  switch (status) {
    case IBV_WC_RETRY_EXC_ERR:  // the peer stopped acknowledging
      return ETIMEDOUT;
    case IBV_WC_WR_FLUSH_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return ECONNRESET;
    default:
      return EIO;
  }
}

absl::Status CompletionError(const ibv_wc& wc) {
  return ErrnoError(
      ErrnoForCompletion(wc.status),
      absl::StrCat("work completion: ", ibv_wc_status_str(wc.status),
                   " (vendor ", wc.vendor_err, ")"));
}

}  // namespace

CompletionSink& RcConnection::NoSink() {
  static UnsetSink unset;
  return unset;
}

absl::Status RcConnection::Poll(CompletionSink& sink) {
  sink_ = &sink;
  completion_.RequestAfterPoll();  // pump even if nothing completed
  completion_.Poll();
  return status_;
}

void RcConnection::OnWorkCompletion(const ibv_wc& wc, uint32_t local) {
  if ((local & kReceiveBit) == 0) {
    HandleSendCompletion(wc, local);
    return;
  }
  // Receives wait, in order, until the peer's parameters (and so the
  // credit account) are known.
  if (!credits_ || !early_receives_.empty()) {
    if (early_receives_.size() == options_.receive_buffers) {
      Fail(ErrnoError(EIO, "more receive completions than receives"));
      return;
    }
    early_receives_.push_back(wc);
    return;
  }
  HandleReceiveCompletion(wc, local & ~kReceiveBit);
}

void RcConnection::AfterPoll() {
  if (credits_ && !early_receives_.empty()) {
    for (const ibv_wc& wc : early_receives_) {
      HandleReceiveCompletion(wc,
                              static_cast<uint32_t>(wc.wr_id) & ~kReceiveBit);
    }
    early_receives_.clear();
  }
  CompletionSink& report = sink();
  if (status_.ok()) PostReleased();
  if (status_.ok() && inbound_.waiting()) {
    absl::Status advanced =
        inbound_.Advance([&report](const ReceivedMessage& message) {
          report.OnMessage(message);
        });
    if (!advanced.ok()) Fail(std::move(advanced));
    // Parts copied into memory taken now free their buffers: this poll
    // re-posted what it could already, the next one posts these.
    if (!inbound_.releases().empty()) completion_.RequestAfterPoll();
  }
  if (status_.ok()) Pump();
  if (!status_.ok()) {
    FailQueued(report);
    inbound_.DropUnreported();
    if (!failure_reported_) {
      failure_reported_ = true;
      report.OnFailed(status_);  // last: the sink may call FailAll
    }
    return;
  }
  // A message waiting for memory (another connection's release may free
  // some) is looked at again by the next poll, with or without completions.
  if (inbound_.waiting() && inbound_.WaitingForMemory()) {
    completion_.RequestAfterPoll();
  }
}

void RcConnection::HandleSendCompletion(const ibv_wc& wc, uint32_t slot) {
  // A completion retires its own request and every unsignaled one posted
  // before it (RC completes in order; an error completes only its request,
  // those before it having succeeded).
  CompletionSink& sink = this->sink();
  const uint32_t distance = sends_.PlacesAfterFront(slot);
  if (distance >= sends_.size()) {
    DEMI_LOG(kError, "send completion for slot ", slot, ", expected one of ",
             sends_.size(), " from ", sends_.front_slot());
    Fail(ErrnoError(EIO, "send completion for no posted request"));
    return;
  }
  for (uint32_t i = 0; i <= distance; ++i) {
    const PostedSend posted = sends_.TakeFront();
    absl::Status status;
    if (i == distance && wc.status != IBV_WC_SUCCESS) {
      status = CompletionError(wc);
      Fail(status);
    }
    if ((posted.kind == SendKind::kData ||
         posted.kind == SendKind::kNextPart) &&
        posted.report) {
      sink.OnSendComplete(posted.cookie, status);
    }
    if (posted.kind == SendKind::kKeepalive) watch_.ProbeDone();
    if (posted.kind == SendKind::kRead) {
      inbound_.OnReadComplete(static_cast<uint32_t>(posted.cookie),
                              status_.ok());
    }
  }
}

void RcConnection::HandleReceiveCompletion(const ibv_wc& wc, uint32_t index) {
  if (wc.status != IBV_WC_SUCCESS) {
    // Flushed receives after a failure or disconnect; buffers are not reused.
    Fail(CompletionError(wc));
    return;
  }
  if (!status_.ok()) return;  // failed: drop what still arrives
  CompletionSink& sink = this->sink();
  if (index >= options_.receive_buffers || inbound_.held(index)) {
    Fail(ErrnoError(EIO, "receive completion for an unknown buffer"));
    return;
  }
  if (wc.opcode != IBV_WC_RECV) {
    Fail(ErrnoError(EPROTO, "unexpected receive opcode"));
    return;
  }
  const uint8_t* buffer = resources_.receive_buffer(index);
  wire::MessageHeader decoded;
  if (absl::Status status = wire::DecodeHeader(buffer, wc.byte_len, &decoded);
      !status.ok()) {
    Fail(status);
    return;
  }
  const wire::MessageHeader* header = &decoded;
  if (!credits_->OnMessageReceived(header->credits_returned)) {
    Fail(ErrnoError(EPROTO, "peer broke the credit protocol"));
    return;
  }
  if (header->credits_returned != 0) watch_.PeerProgressed();
  if (inbound_.assembling() && header->type != wire::MessageType::kFragment &&
      header->type != wire::MessageType::kCreditUpdate &&
      header->type != wire::MessageType::kRendezvousDone) {
    Fail(ErrnoError(EPROTO, "a message inside the parts of another"));
    return;
  }
  // A message with data (or the promise of it) holds its buffer until the
  // consumer releases it; the others go back at once, below.
  auto report = [&sink](const ReceivedMessage& message) {
    sink.OnMessage(message);
  };
  std::optional<absl::Status> held;
  switch (header->type) {
    case wire::MessageType::kData:
      held = inbound_.OnData(index, *header, report);
      break;
    case wire::MessageType::kBatch:
      held = inbound_.OnBatch(index, wc.byte_len, header->num_segments, report);
      break;
    case wire::MessageType::kRendezvous:  // AfterPoll advances it
      held = inbound_.OnRendezvous(index, *header);
      break;
    case wire::MessageType::kFragmented:  // AfterPoll takes its memory
      held = inbound_.OnFirstPart(index, *header, wc.byte_len);
      break;
    case wire::MessageType::kFragment:  // copied, or held until it can be
      held = inbound_.OnPart(index, wc.byte_len);
      break;
    default:
      break;
  }
  if (held.has_value()) {
    if (!held->ok()) {
      Fail(*std::move(held));
    } else if (header->type == wire::MessageType::kFragment && ReleasesDue()) {
      completion_.RequestAfterPoll();  // a part copied: its buffer is free
    }
    return;
  }
  if (header->type == wire::MessageType::kRendezvousDone) {
    const std::optional<uint64_t> cookie =
        rendezvous_.Finish(header->transfer_id);
    if (!cookie.has_value()) {
      Fail(ErrnoError(EPROTO,
                      "done message for no transfer announced to the peer"));
      return;
    }
    watch_.PeerProgressed();
    sink.OnSendComplete(*cookie, absl::OkStatus());
    // Then re-post below, as for the other header-only messages.
  }
  // Header-only: re-post at once, before any other SEND of ours.
  absl::Status reposted = PostReceive(index);
  if (!reposted.ok()) {
    Fail(reposted);
    return;
  }
  if (!credits_->OnReceiveReposted()) {
    Fail(ErrnoError(EIO, "credit account: nothing to re-post"));
    return;
  }
  if (header->type == wire::MessageType::kEndOfStream) sink.OnEndOfStream();
}

absl::Status RcConnection::Release(uint32_t buffer_index) {
  // After a failure there is nothing to re-post for.
  DEMI_RETURN_IF_ERROR(inbound_.Release(buffer_index, status_.ok()));
  if (ReleasesDue()) completion_.RequestAfterPoll();
  return absl::OkStatus();
}

bool RcConnection::ReleasesDue() const {
  const std::vector<uint32_t>& releases = inbound_.releases();
  if (releases.empty()) return false;
  if (!credits_) return true;
  // Buffers posted now: the peer's credits can be no more than these.
  return repost_.Due(releases.size(), credits_->local_receive_buffers() -
                                          credits_->unreposted());
}

void RcConnection::PostReleased() {
  // One ibv_post_recv (and the credits it returns) per batch of releases
  // while most buffers are posted; at once when they run low.
  if (!ReleasesDue()) return;
  std::vector<uint32_t>& releases = inbound_.releases();
  const size_t count = releases.size();
  absl::Status posted = resources_.PostReceives(
      releases,
      [this](uint32_t index) { return completion_.WrId(kReceiveBit | index); });
  releases.clear();
  ++receive_posts_;
  if (!posted.ok()) {
    Fail(posted);
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    if (!credits_->OnReceiveReposted()) {
      Fail(ErrnoError(EIO, "credit account: nothing to re-post"));
      return;
    }
  }
}

void RcConnection::Fail(absl::Status status) {
  if (status_.ok()) {
    status_ = std::move(status);
    DEMI_LOG(kInfo, "connection failed: ", status_.message());
  }
  resources_.Flush();
}

void RcConnection::FailQueued(CompletionSink& sink) {
  absl::Status status =
      ErrnoError(ErrnoFromStatus(status_),
                 absl::StrCat("connection failed: ", status_.message()));
  // (A staged send was reported done by its Send(): its bytes are lost
  // with the connection, as an inline one's after its post.)
  fifo_.Drain([&](uint64_t cookie) { sink.OnSendComplete(cookie, status); });
  // Rendezvous sends (queued, posted or awaiting their done message): the
  // peer will not read them now.
  rendezvous_.EndAll(
      [&](uint64_t cookie) { sink.OnSendComplete(cookie, status); });
}

void RcConnection::FailAll(int errnum, CompletionSink& sink) {
  Fail(ErrnoError(errnum, "connection closed"));
  FailQueued(sink);
}

}  // namespace demi::rdma
