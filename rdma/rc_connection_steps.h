// RcConnection's send steps (PostNow, PostDataNow, Prepare, PostChain),
// defined here so that every file of the send path inlines
// them. Private to RcConnection's implementation files.

#ifndef DEMI_RDMA_RC_CONNECTION_STEPS_H_
#define DEMI_RDMA_RC_CONNECTION_STEPS_H_

#include <algorithm>
#include <cstdint>

#include "absl/base/attributes.h"
#include "rdma/rc_connection.h"

// The steps of posting a send (PostNow, PostDataNow, Prepare, PostChain)
// are inlined into their few callers: each is small, a call
// frame costs about as much as its body, and a constant `kind` folds
// Prepare's switch away.
#define DEMI_SEND_STEP ABSL_ATTRIBUTE_ALWAYS_INLINE inline

namespace demi::rdma {

// Whether a send may be posted now instead of queued: nothing queued
// before it, a credit, a free slot, and (coalesce_sends) no send posted
// at once since the last poll. Records the post when it answers true.
DEMI_SEND_STEP bool RcConnection::PostNow() {
  if (!WouldPostNow()) return false;
  RecordPostNow();
  return true;
}

// Records a send posted at once (what PostNow does when it says yes), for
// a caller that asked WouldPostNow itself.
DEMI_SEND_STEP void RcConnection::RecordPostNow() {
  posted_at_poll_ = completion_.polls();
}

// PostNow's answer without recording anything.
DEMI_SEND_STEP bool RcConnection::WouldPostNow() const {
  if (!fifo_.empty() || !established_ || !credits_->CanSendData() ||
      SendQueueFull()) {
    return false;
  }
  // With coalesce_sends, a burst: after a send posted at once since the
  // last poll, the rest are queued.
  return !options_.coalesce_sends || completion_.polls() != posted_at_poll_;
}

// Posts one data message now (PostNow() said yes) with a credit. With
// `may_be_done_at_post`, a message whose bytes went inline is done at
// post (kDoneAtPost: its cookie is never reported); otherwise its
// completion reports `cookie` (kReported). kFailed: not posted, the
// connection failed (status_).
DEMI_SEND_STEP RcConnection::Posted RcConnection::PostDataNow(
    absl::Span<const Segment> segments, uint64_t cookie,
    bool may_be_done_at_post) {
  const uint16_t returned = *credits_->ConsumeForData();
  ibv_send_wr* wr = Prepare(0, SendKind::kData, returned, segments.data(),
                            static_cast<uint32_t>(segments.size()), cookie);
  // Inline data is copied by ibv_post_send: the caller may have its memory
  // back at once, and its cookie is not reported again.
  const bool inline_data = (wr->send_flags & IBV_SEND_INLINE) != 0;
  PostedSend& entry = sends_.record(sends_.SlotOf(wr));
  entry.report = !(inline_data && may_be_done_at_post);
  // Done at post: no completion needed, but one now and then retires the
  // send slots.
  const bool signal = entry.report || sends_.SignalDue();
  if (PostChain(wr, wr, 1, signal) != 1) {
    entry.report = true;  // failed: not posted, never reported
    return Posted::kFailed;
  }
  return entry.report ? Posted::kReported : Posted::kDoneAtPost;
}

// Builds the work request for the send-queue slot `position` places after
// the last posted one (header, scatter-gather list, send-queue record); does
// not post it.
// A part (kFirstPart, kNextPart) is bytes [part_offset, part_offset +
// part_bytes) of the message `segments`.
DEMI_SEND_STEP ibv_send_wr* RcConnection::Prepare(
    uint32_t position, SendKind kind, uint16_t credits_returned,
    const Segment* segments, uint32_t num_segments, uint64_t cookie,
    uint32_t part_offset, uint32_t part_bytes) {
  const uint32_t slot = sends_.SlotAfterPosted(position);
  uint8_t* header_slot = resources_.header_memory() + slot * kHeaderSlotSize;
  uint64_t total = 0;
  size_t header_size;
  if (kind == SendKind::kData) {  // the common case, without a MessageHeader
    header_size = wire::EncodeDataHeader(
        credits_returned, static_cast<uint8_t>(num_segments),
        [segments](int i) { return segments[i].length; }, header_slot);
    for (uint32_t i = 0; i < num_segments; ++i) total += segments[i].length;
  } else if (kind == SendKind::kFirstPart) {
    header_size = wire::EncodeDataHeader(
        credits_returned, static_cast<uint8_t>(num_segments),
        [segments](int i) { return segments[i].length; }, header_slot,
        wire::MessageType::kFragmented);
  } else if (kind == SendKind::kNextPart) {
    wire::EncodeFixedPart(wire::MessageType::kFragment, credits_returned, 0,
                          header_slot);
    header_size = wire::kHeaderFixedSize;
  } else {
    wire::MessageHeader header;
    switch (kind) {
      case SendKind::kCreditUpdate:
        header.type = wire::MessageType::kCreditUpdate;
        break;
      case SendKind::kEndOfStream:
        header.type = wire::MessageType::kEndOfStream;
        break;
      case SendKind::kRendezvous:
        header.type = wire::MessageType::kRendezvous;
        break;
      case SendKind::kRendezvousDone:
        header.type = wire::MessageType::kRendezvousDone;
        header.transfer_id = static_cast<uint32_t>(cookie);
        break;
      case SendKind::kData:       // above
      case SendKind::kFirstPart:  // above
      case SendKind::kNextPart:   // above
      case SendKind::kRead:       // not a SEND; see PrepareRead
      case SendKind::kKeepalive:  // not a SEND; see SendKeepalive
      case SendKind::kBind:       // not a SEND; see BindWindows
      case SendKind::kDrain:      // not a SEND; see BindWindows
        break;
    }
    header.credits_returned = credits_returned;
    header.num_segments = static_cast<uint8_t>(num_segments);
    for (uint32_t i = 0; i < num_segments; ++i) {
      header.segment_lengths[i] = segments[i].length;
    }
    if (kind == SendKind::kRendezvous) {
      rendezvous_.Announce(static_cast<uint32_t>(cookie),
                           absl::MakeConstSpan(segments, num_segments),
                           &header);
    }
    header_size = wire::EncodeHeader(header, header_slot);
  }
  // A rendezvous announcement carries no payload: only the header slot
  // (total stays 0 for every kind but data).
  uint32_t gathered = kind == SendKind::kData ? num_segments : 0;

  ibv_sge* sge = sends_.sges(slot);
  sge[0].addr = reinterpret_cast<uintptr_t>(header_slot);
  sge[0].length = static_cast<uint32_t>(header_size);
  sge[0].lkey = resources_.header_lkey();
  for (uint32_t i = 0; i < gathered; ++i) {
    sge[i + 1].addr = reinterpret_cast<uintptr_t>(segments[i].data);
    sge[i + 1].length = segments[i].length;
    sge[i + 1].lkey = segments[i].lkey;
  }
  if (kind == SendKind::kFirstPart || kind == SendKind::kNextPart) {
    // The slices of the segments that make bytes [part_offset, part_offset
    // + part_bytes) of the message.
    uint64_t skip = part_offset;
    uint64_t left = part_bytes;
    for (uint32_t i = 0; i < num_segments && left > 0; ++i) {
      const uint64_t length = segments[i].length;
      if (skip >= length) {
        skip -= length;
        continue;
      }
      const uint64_t take = std::min(length - skip, left);
      ibv_sge& slice = sge[++gathered];
      slice.addr = reinterpret_cast<uintptr_t>(segments[i].data) + skip;
      slice.length = static_cast<uint32_t>(take);
      slice.lkey = segments[i].lkey;
      left -= take;
      skip = 0;
    }
    total = part_bytes;
  }
  ibv_send_wr& wr = sends_.Start(slot, completion_.WrId(slot), sge,
                                 static_cast<int>(gathered + 1), IBV_WR_SEND);
  if (header_size + total <= resources_.max_inline_data()) {
    wr.send_flags |= IBV_SEND_INLINE;
  }
  sends_.record(slot) = PostedSend{.cookie = cookie, .kind = kind};
  return &wr;
}

// Posts a chain of `count` prepared requests with one ibv_post_send,
// signaling only the last (none if !signal); returns how many were posted
// (all, unless the post failed, which fails the connection).
DEMI_SEND_STEP uint32_t RcConnection::PostChain(ibv_send_wr* first,
                                                ibv_send_wr* last,
                                                uint32_t count, bool signal) {
  absl::Status failed;
  const uint32_t posted = sends_.Post(
      first, last, count, signal,
      [this](ibv_send_wr* chain, ibv_send_wr** bad) {
        return resources_.qp().PostSend(chain, bad);
      },
      &failed);
  // Requests before a rejected one went out unsignaled; the queue pair is
  // failed here, so each completes with a flush error of its own.
  if (!failed.ok()) Fail(std::move(failed));
  return posted;
}

}  // namespace demi::rdma

#endif  // DEMI_RDMA_RC_CONNECTION_STEPS_H_
