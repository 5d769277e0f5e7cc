// RcConnection, sending: what is posted now and what is queued (credits,
// the FIFO, staging, batches), messages in parts, rendezvous announcements
// and window binds, end of stream, and the pump that posts what waits.

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

absl::Status RcConnection::Send(absl::Span<const Segment> segments,
                                uint64_t cookie, bool* done_at_post) {
  if (done_at_post != nullptr) *done_at_post = false;
  if (!Sendable(segments)) {
    if (!status_.ok()) return status_;
    if (segments.empty() || segments.size() > wire::kMaxSegments) {
      return ErrnoError(EINVAL, "a message has 1 to 16 segments");
    }
    return ErrnoError(EPIPE, "end of stream was sent");
  }
  uint64_t total = 0;
  for (const Segment& segment : segments) total += segment.length;
  if (total > options_.rendezvous_threshold) {
    return SendRendezvous(segments, cookie);
  }
  if (credits_ && wire::HeaderSize(static_cast<int>(segments.size())) + total >
                      peer_receive_buffer_size_) {
    return SendInParts(segments, total, cookie);
  }
  if (PostNow()) {
    switch (PostDataNow(segments, cookie, done_at_post != nullptr)) {
      case Posted::kFailed:
        return status_;
      case Posted::kDoneAtPost:
        *done_at_post = true;
        break;
      case Posted::kReported:
        break;
    }
    return absl::OkStatus();
  }
  // Queued: goes out with whatever else can, chained under one doorbell, at
  // the next Poll(), Release() or Flush(); a full FIFO first posts what
  // credits allow.
  if (DataFifoFull()) Pump();
  return Enqueue(SendKind::kData, segments, cookie, done_at_post);
}

bool RcConnection::TrySendCopied(absl::Span<const Segment> segments) {
  if (!Sendable(segments)) return false;
  uint64_t payload = 0;
  for (const Segment& segment : segments) payload += segment.length;
  const uint64_t size =
      wire::HeaderSize(static_cast<int>(segments.size())) + payload;
  if (size > peer_receive_buffer_size_) return false;
  if (WouldPostNow()) {
    // Too large for inline: Send posts it from its own memory, now.
    if (size > resources_.max_inline_data()) return false;
    RecordPostNow();
    // It fits inline, so it is done at post. (Were it reported, it is
    // still posted: declining now would send it twice.)
    return PostDataNow(segments, 0, /*may_be_done_at_post=*/true) !=
           Posted::kFailed;
  }
  // It would be queued: staged instead, as Send's Enqueue stages it, if it
  // fits a stage. Staged, it needs no cookie (done now) and goes with the
  // next poll's doorbell.
  if (!MayStage() || DataFifoFull() || !fifo_.CanStage(payload)) return false;
  bool staged = false;
  absl::Status queued =
      Enqueue(SendKind::kData, segments, /*cookie=*/0, &staged);
  if (!queued.ok() || !staged) {
    // MayStage, CanStage and room were checked: this class's bug.
    DEMI_LOG(kError, "a send that could be staged was not: ", queued.message());
    Fail(ErrnoError(EIO, "staging a send failed"));
    return false;
  }
  return true;
}

void RcConnection::Flush() { Pump(); }

absl::Status RcConnection::SendInParts(absl::Span<const Segment> segments,
                                       uint64_t total, uint64_t cookie) {
  if (!peer_rendezvous_) {
    return ErrnoError(EMSGSIZE,
                      "message larger than the peer's buffers, and the peer "
                      "takes no large messages");
  }
  if (total > peer_rendezvous_quota_) return SendRendezvous(segments, cookie);
  const int n = static_cast<int>(segments.size());
  const uint64_t first = part_send_bytes_ - wire::HeaderSize(n);
  const uint64_t next = part_send_bytes_ - wire::kHeaderFixedSize;
  const uint64_t parts = 1 + (total - first + next - 1) / next;
  // In parts when every part can go now: nothing queued before them, a
  // credit for each. A rendezvous costs a round trip and an RDMA READ; on
  // rxe that costs more than the receiver's copy of the parts, alone (64 KiB
  // latency) and in a stream (64 KiB bandwidth) alike. A message of more
  // parts than half the send queue goes by rendezvous.
  if (parts > send_queue_depth_ / 2 || !established_ || !fifo_.empty() ||
      credits_->credits() < parts) {
    return SendRendezvous(segments, cookie);
  }
  // The FIFO is empty, and half of it takes every part.
  uint64_t offset = 0;
  for (uint64_t p = 0; p < parts; ++p) {
    const uint64_t bytes = std::min(p == 0 ? first : next, total - offset);
    fifo_.PushPart(p == 0 ? SendKind::kFirstPart : SendKind::kNextPart,
                   segments, cookie, static_cast<uint32_t>(offset),
                   static_cast<uint32_t>(bytes), /*last=*/p + 1 == parts);
    offset += bytes;
  }
  // A message this large pays no delay: its parts go now, as far as credits
  // allow, under one doorbell.
  Pump();
  completion_.RequestAfterPoll();
  return absl::OkStatus();
}

absl::Status RcConnection::SendRendezvous(absl::Span<const Segment> segments,
                                          uint64_t cookie) {
  if (credits_ && (!peer_rendezvous_ ||
                   wire::RendezvousSize(static_cast<int>(segments.size())) >
                       peer_receive_buffer_size_)) {
    return ErrnoError(EMSGSIZE,
                      "message above the eager limit, and the peer takes no "
                      "rendezvous");
  }
  if (credits_) {
    uint64_t total = 0;
    for (const Segment& segment : segments) total += segment.length;
    if (total > peer_rendezvous_quota_) {
      return ErrnoError(EMSGSIZE, absl::StrCat("a message of ", total,
                                               " bytes, above the peer's "
                                               "rendezvous quota of ",
                                               peer_rendezvous_quota_));
    }
  }
  if (rendezvous_.windows() && segments.size() + 1 > send_queue_depth_) {
    // Its binds and its announcement could never be in the send queue at
    // once (BindWindows): refused rather than left waiting.
    return ErrnoError(EMSGSIZE, absl::StrCat(segments.size(), " segments need ",
                                             segments.size() + 1,
                                             " send slots, the "
                                             "send queue has ",
                                             send_queue_depth_));
  }
  if (DataFifoFull()) Pump();
  if (DataFifoFull()) {
    return ErrnoError(EAGAIN, "too many rendezvous sends in flight");
  }
  DEMI_ASSIGN_OR_RETURN(const uint32_t index,
                        rendezvous_.Start(segments, cookie));
  // The announcement travels like data (credits, FIFO), after its windows'
  // binds; the cookie is reported when the done message arrives.
  const bool now = PostNow();  // once: it records the post when it says yes
  if (now && !BindWindows(index) && !status_.ok()) {
    rendezvous_.Abandon(index);  // a bind's post failed
    return status_;
  }
  if (now && rendezvous_.bound(index)) {
    uint16_t returned = *credits_->ConsumeForData();
    absl::Status posted = Post(SendKind::kRendezvous, returned, segments.data(),
                               static_cast<uint32_t>(segments.size()), index);
    if (!posted.ok()) {
      Fail(posted);
      rendezvous_.Abandon(index);
    }
    return posted;
  }
  return Enqueue(SendKind::kRendezvous, segments, index);
}

// With windows, posts the binds of rendezvous transfer `index` (one
// chain, before its announcement is posted) unless posted already. True if
// they are posted, or none are needed; false if they must wait for the
// send queue to drain (the connection is usable: a later Pump binds them),
// or if the post failed (status_ says so).
bool RcConnection::BindWindows(uint32_t index) {
  if (rendezvous_.bound(index)) return true;
  const uint32_t count = rendezvous_.num_segments(index);
  if (!status_.ok() || !established_) return false;
  // Only on a drained send queue. Soft-RoCE, retransmitting a request,
  // executes again the local operations posted after it (it restarts from
  // the oldest request not yet completed, and does not skip those already
  // done), and a type-2 window bound a second time fails the queue pair:
  // seen under 10% loss (tools/softroce/faults loss10). With nothing of ours
  // outstanding ahead of them, the binds complete at once (they are
  // signaled) and no retransmission reaches back to them. If requests are
  // outstanding and the last is unsignaled, nothing would retire them: a
  // signaled zero-length RDMA WRITE goes after them, and its completion
  // brings the next Pump.
  if (!sends_.empty()) {
    if (sends_.unsignaled() != 0 && !SendQueueFull()) {
      ibv_send_wr* probe = PrepareZeroWrite(SendKind::kDrain);
      PostChain(probe, probe, 1);
    }
    return false;
  }
  ibv_send_wr* first = nullptr;
  ibv_send_wr* last = nullptr;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t slot = sends_.SlotAfterPosted(i);
    ibv_send_wr& wr =
        sends_.Start(slot, completion_.WrId(slot),
                     /*sge=*/nullptr, /*num_sge=*/0, IBV_WR_BIND_MW);
    rendezvous_.PrepareBind(index, i, &wr);
    sends_.record(slot) = PostedSend{.kind = SendKind::kBind};
    if (last != nullptr) last->next = &wr;
    if (first == nullptr) first = &wr;
    last = &wr;
  }
  // Signaled: the binds' slots come back without waiting for a later send.
  if (PostChain(first, last, count, /*signal=*/true) != count) return false;
  rendezvous_.MarkBound(index);
  return true;
}

absl::Status RcConnection::SendEndOfStream() {
  if (!status_.ok()) return status_;
  if (end_of_stream_sent_) return ErrnoError(EPIPE, "end of stream was sent");
  // The one decision data and announcements take too (PostNow): after a
  // send posted since the last poll it waits for that poll's doorbell.
  if (PostNow()) {
    uint16_t returned = *credits_->ConsumeForData();
    absl::Status posted = Post(SendKind::kEndOfStream, returned, nullptr, 0, 0);
    if (!posted.ok()) Fail(posted);
    end_of_stream_sent_ = posted.ok();
    return posted;
  }
  DEMI_RETURN_IF_ERROR(Enqueue(SendKind::kEndOfStream, {}, 0));
  end_of_stream_sent_ = true;
  return absl::OkStatus();
}

absl::Status RcConnection::Enqueue(SendKind kind,
                                   absl::Span<const Segment> segments,
                                   uint64_t cookie, bool* done_at_post) {
  // Staged only under MayStage.
  const bool stage = done_at_post != nullptr && MayStage();
  bool staged = false;
  DEMI_RETURN_IF_ERROR(fifo_.Push(kind, segments, cookie, stage, &staged));
  if (staged) *done_at_post = true;
  // The next poll posts it (if credits allow), whether or not this
  // connection has a completion by then: a queued send is never stranded.
  completion_.RequestAfterPoll();
  return absl::OkStatus();
}

absl::Status RcConnection::Post(SendKind kind, uint16_t credits_returned,
                                const Segment* segments, uint32_t num_segments,
                                uint64_t cookie) {
  ibv_send_wr* wr =
      Prepare(0, kind, credits_returned, segments, num_segments, cookie);
  if (PostChain(wr, wr, 1) != 1) return status_;
  return absl::OkStatus();
}

void RcConnection::Pump() {
  // Nothing is posted before ESTABLISHED: the peer's queue pair may not be
  // ready to receive yet.
  if (!status_.ok() || !established_) return;
  // Usually nothing to send (the common call, after a re-post).
  FixedRing<uint32_t>& dones = inbound_.dones();
  if (dones.empty() && fifo_.empty() && !inbound_.waiting() &&
      !credits_->ShouldSendCreditUpdate()) {
    return;
  }
  // Queued announcements go after their windows' binds, posted first (a
  // doorbell of their own; a rendezvous message is large, one more system
  // call is nothing beside it). One the send queue has no room to bind for
  // yet stops the queue here.
  uint32_t bound = fifo_.size();
  for (uint32_t q = 0; rendezvous_.windows() && q < fifo_.size(); ++q) {
    const QueuedSend& entry = fifo_[q];
    if (entry.kind == SendKind::kRendezvous &&
        !BindWindows(static_cast<uint32_t>(entry.cookie))) {
      if (!status_.ok()) return;
      bound = q;
      break;
    }
  }
  // Chain, for one doorbell: done messages owed to the peer, queued sends
  // that have a credit, RDMA READs of inbound transfers, then a credit update
  // if one is due; all within the send queue's free slots.
  const uint32_t room = sends_.room();
  uint32_t count = 0;
  ibv_send_wr* first = nullptr;
  ibv_send_wr* last = nullptr;
  auto append = [&](ibv_send_wr* wr) {
    if (last != nullptr) last->next = wr;
    if (first == nullptr) first = wr;
    last = wr;
    ++count;
  };
  uint32_t done_count = 0;
  while (done_count < dones.size() && count < room && credits_->CanSendData()) {
    uint16_t returned = *credits_->ConsumeForData();
    append(Prepare(count, SendKind::kRendezvousDone, returned, nullptr, 0,
                   dones[done_count]));
    ++done_count;
  }
  // Queued sends: one SEND each, or a run of staged ones copied into one
  // kBatch SEND. Those already reported done (staged) are never reported
  // again: their completions retire their slots silently.
  uint32_t data = 0;   // SENDs of queued sends in the chain
  uint32_t taken = 0;  // queued sends they carry
  while (taken < bound && count < room && credits_->CanSendData()) {
    const uint32_t run = fifo_.BatchRun(
        taken, bound - taken,
        std::min<size_t>(kHeaderSlotSize, peer_receive_buffer_size_));
    uint16_t returned = *credits_->ConsumeForData();
    ibv_send_wr* wr;
    if (run > 1) {
      wr = PrepareBatch(count, returned, taken, run);
    } else {
      const QueuedSend& entry = fifo_[taken];
      wr = Prepare(count, entry.kind, returned, entry.segments,
                   entry.num_segments, entry.cookie, entry.part_offset,
                   entry.part_bytes);
      if (entry.reported) sends_.record(sends_.SlotOf(wr)).report = false;
    }
    append(wr);
    ++data;
    taken += run;
  }
  if (inbound_.waiting()) {
    inbound_.PrepareReads(room - count, [&](const ReadChunk& chunk) {
      append(PrepareRead(count, chunk));
    });
  }
  if (count < room && credits_->ShouldSendCreditUpdate()) {
    uint16_t returned = *credits_->ConsumeForCreditUpdate();
    append(Prepare(count, SendKind::kCreditUpdate, returned, nullptr, 0, 0));
  }
  if (count == 0) return;
  uint32_t posted = PostChain(first, last, count);
  // What was not posted stays queued (the connection has failed; Poll or
  // FailAll reports it).
  const uint32_t posted_dones = std::min(posted, done_count);
  dones.pop_front(posted_dones);
  const uint32_t posted_data = std::min(posted - posted_dones, data);
  // The queued sends the posted SENDs carried leave the FIFO. The chain is
  // the newest `posted` records of the send queue.
  const uint32_t chain_front = sends_.size() - posted;
  uint32_t consumed = 0;
  for (uint32_t i = done_count; i < done_count + posted_data; ++i) {
    consumed += sends_.posted()[chain_front + i].entries;
  }
  fifo_.pop_front(consumed);
}

// Builds the kBatch SEND of queued sends from..from + n - 1 for the send
// queue slot `position` places after the last posted one: their headers
// and staged bytes are copied into the slot's header memory.
ibv_send_wr* RcConnection::PrepareBatch(uint32_t position,
                                        uint16_t credits_returned,
                                        uint32_t from, uint32_t n) {
  const uint32_t slot = sends_.SlotAfterPosted(position);
  uint8_t* out = resources_.header_memory() + slot * kHeaderSlotSize;
  const size_t at = fifo_.EncodeBatch(from, n, credits_returned, out);
  ibv_sge* sge = sends_.sges(slot);
  sge[0].addr = reinterpret_cast<uintptr_t>(out);
  sge[0].length = static_cast<uint32_t>(at);
  sge[0].lkey = resources_.header_lkey();
  ibv_send_wr& wr =
      sends_.Start(slot, completion_.WrId(slot), sge, 1, IBV_WR_SEND);
  if (at <= resources_.max_inline_data()) wr.send_flags |= IBV_SEND_INLINE;
  // Staged: every message of it was reported done by its Send().
  sends_.record(slot) = PostedSend{.cookie = 0,
                                   .kind = SendKind::kData,
                                   .report = false,
                                   .entries = static_cast<uint8_t>(n)};
  return &wr;
}

// Builds the RDMA READ of `chunk` for the send-queue slot `position`
// places after the last posted one.
ibv_send_wr* RcConnection::PrepareRead(uint32_t position,
                                       const ReadChunk& chunk) {
  const uint32_t slot = sends_.SlotAfterPosted(position);
  ibv_sge* sge = sends_.sges(slot);
  sge[0].addr = chunk.local_address;
  sge[0].length = chunk.length;
  sge[0].lkey = chunk.lkey;
  ibv_send_wr& wr =
      sends_.Start(slot, completion_.WrId(slot), sge, 1, IBV_WR_RDMA_READ);
  wr.wr.rdma.remote_addr = chunk.remote_address;
  wr.wr.rdma.rkey = chunk.rkey;
  sends_.record(slot) =
      PostedSend{.cookie = chunk.buffer_index, .kind = SendKind::kRead};
  return &wr;
}

}  // namespace demi::rdma
