// RcConnection: one reliable-connected queue pair carrying demi messages.
//
// It owns everything one connection needs below the demi API: the rdma_cm id,
// a protection domain (or borrows one), a place on a shared completion queue
// (CompletionGroup: the device's, or one of its own), the queue pair, the
// receive buffers (one registered slab, `receive_buffers` buffers of
// eager_limit + wire::kMaxHeaderSize bytes, all kept posted), one registered
// header slot per send-queue entry, and the CreditAccount that keeps every SEND
// matched by a posted receive at the peer (the queue pair uses rnr_retry_count
// 0, so a receiver-not-ready is a visible error).
//
// Its parts, each in its own file: QueuePairResources (the queue pair, the
// receive buffers and header memory, shared with UdEndpoint), SendQueue
// (the send queue's requests by slot, their signaling, the doorbell),
// SendFifo (sends waiting for a credit or a slot), CreditAccount (the
// credits), InboundMessages (what arrives: held buffers, arrival order,
// large messages read or assembled), RendezvousSender (transfers announced
// to the peer and the memory they expose). The connection itself is the
// eager channel: it decides what is posted now and what is queued, builds
// the work requests, and dispatches completions to the parts.
//
// It knows nothing of queue tokens: the caller passes an opaque uint64 cookie
// with each Send and gets it back, exactly once, through
// CompletionSink::OnSendComplete.
//
// Setting up. rdma_cm events stay with the caller:
//  * passive side: on CONNECT_REQUEST call Accept(event, options); it adopts
//    the event's new id, reads the peer's wire::ConnectionParams from the
//    private data, creates the resources, posts the receives and calls
//    rdma_accept with ours. Then on ESTABLISHED call OnEstablished(event).
//  * active side: after ROUTE_RESOLVED call Connect(id, options); it creates
//    the resources, posts receives and calls rdma_connect with our params. On
//    ESTABLISHED call OnEstablished(event), which reads the peer's params.
// Sends made before OnEstablished are queued (posted by the first Poll or
// Release after it).
//
// Completions. The connection's send and receive work requests complete on
// its group's queue. Whoever polls the group (CompletionGroup::Poll, or this
// connection's Poll) delivers them to the connection, which reports what they
// mean to its CompletionSink (set_sink); what they made possible it posts
// once per poll, at the start of the group's next Poll (so a waiter has its
// result first) or at the end of its own Poll. A connection of a shared group
// is polled by polling the group: idle connections cost a progress round
// nothing.
//
// Sending. Each message is one SEND work request: sge[0] is a header slot (the
// wire::MessageHeader and segment lengths), sge[i + 1] is segment i, read in
// place from the caller's registered memory; until its completion is
// reported the caller keeps that memory valid and unchanged. A message that
// fits max_inline_data goes with IBV_SEND_INLINE (copied at post: Send can
// report it done, see done_at_post); of those in a row only every
// signal_interval()-th is signaled (as perftest does), and a completion
// retires every request before it (RC completes in order). Without a
// credit or a send-queue slot a send waits in the SendFifo (send_fifo.h:
// staging of small sends, kBatch runs) and a later Poll(), Release() or
// Flush() posts all that can go, chained under one doorbell with only the
// last request signaled. With options.coalesce_sends (the default) only the
// first Send() after a poll is posted at once; the rest of a burst waits for
// the next poll's doorbell.
//
// Large messages. Above rendezvous_threshold a message is announced
// (kRendezvous: lengths, addresses, keys; RendezvousSender) and the receiver
// pulls it with RDMA READs, then answers kRendezvousDone, which reports the
// sender's cookie. Not above it but too large for one of the peer's receive
// buffers, it goes in parts (SENDs of whole packets back to back, the last
// one's completion reporting the cookie) when every part can go at once (the
// FIFO empty, a credit each, parts <= half the send queue), else rendezvous.
// The receiver (InboundMessages) takes a LargeBuffer for each, in arrival
// order and within its quota. At most send_queue_depth rendezvous sends may
// await their done (EAGAIN beyond).
//
// Receiving. Poll() reports each data message as a ReceivedMessage pointing
// into a receive buffer or a large message's memory (zero copy), in arrival
// order, small and large alike. The buffer stays the caller's until it
// calls Release(buffer_index) once for each message it held (a batch's
// messages share one: ReceivedMessage::part tells them apart); only then is
// it posted again and a credit returned to the peer, so a consumer that stops
// releasing makes the peer's sends queue (backpressure) rather than fail.
//
// Failure. A completion in error, a malformed message from the peer (EPROTO)
// or a failed post marks the connection failed and moves the queue pair to the
// error state, so that every posted send completes (flushed). Each posted
// send's cookie is then reported once with an error: ECONNRESET for flush and
// retry-exceeded errors, EIO otherwise; queued sends are reported with the
// connection's errno by the next Poll() or by FailAll(). Later Send calls fail
// with the connection's error (ECONNRESET after a disconnect).
//
// Thread-safety: none; the caller serializes all calls. The hot path (Send,
// Poll, Release) makes no allocation and no system call other than
// ibv_post_send / ibv_post_recv (the provider's doorbell). Sink callbacks may
// call Send() and Release() on the same connection; they must not destroy it.
//
// Lifetime: the EventChannel of the id must outlive the connection; an
// external protection domain (options.pd) must outlive it too. Destroying the
// connection destroys the queue pair, memory regions, queues and the id
// (which blocks until the id's events are acknowledged: destroy events first).

#ifndef DEMI_RDMA_RC_CONNECTION_H_
#define DEMI_RDMA_RC_CONNECTION_H_

#include <infiniband/verbs.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/fixed_ring.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/completion_group.h"
#include "rdma/completion_sink.h"
#include "rdma/credit_account.h"
#include "rdma/inbound_messages.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/memory_region.h"
#include "rdma/peer_watch.h"
#include "rdma/protection_domain.h"
#include "rdma/queue_pair.h"
#include "rdma/queue_pair_resources.h"
#include "rdma/rc_connection_options.h"
#include "rdma/rendezvous_sender.h"
#include "rdma/repost_rule.h"
#include "rdma/segment.h"
#include "rdma/send_fifo.h"
#include "rdma/send_queue.h"
#include "rdma/send_records.h"
#include "rdma/wire.h"

namespace demi::rdma {

class RcConnection final : private CompletionHandler {
 public:
  // Most messages reported from one receive buffer (ReceivedMessage::part).
  static constexpr uint32_t kMessagesPerBuffer = wire::kMaxBatchMessages;

  // Passive side. `request` must be a CONNECT_REQUEST; its id is adopted (and
  // the event acknowledged here, so the caller must not use it afterwards).
  // A request with bad or missing parameters is rejected (EPROTO).
  static absl::StatusOr<std::unique_ptr<RcConnection>> Accept(
      CmEvent request, const RcConnectionOptions& options);

  // Active side. `id` must have its route resolved (after ROUTE_RESOLVED).
  static absl::StatusOr<std::unique_ptr<RcConnection>> Connect(
      CmId id, const RcConnectionOptions& options);

  RcConnection(const RcConnection&) = delete;
  RcConnection& operator=(const RcConnection&) = delete;
  ~RcConnection();

  // Handles ESTABLISHED for this connection. On the active side reads the
  // peer's parameters from the event (EPROTO if bad). Queued sends are posted
  // by the next Poll().
  absl::Status OnEstablished(const CmEvent& event);

  // Sends one message of `segments` (1..wire::kMaxSegments, EINVAL
  // otherwise): eagerly up to rendezvous_threshold bytes (in parts if it
  // does not fit one of the peer's buffers), else by rendezvous (EMSGSIZE if
  // the peer takes neither). On OK the send was posted or
  // queued (see coalesce_sends) and `cookie` will be reported exactly once;
  // on error it never will. EAGAIN: the FIFO of queued sends
  // (or of rendezvous transfers) is full (poll and retry). EPIPE after
  // SendEndOfStream.
  // A failed connection returns its error (ECONNRESET after a disconnect).
  //
  // `done_at_post` (optional): set to true when the message's bytes were
  // copied before Send returned (posted at once with its data inline, so
  // copied into the work request by ibv_post_send; or queued and staged):
  // its memory is free again as soon as Send returns, so the cookie is *not*
  // reported later and the caller completes the send itself. False
  // otherwise (the cookie is reported as usual). Null: always report the
  // cookie.
  absl::Status Send(absl::Span<const Segment> segments, uint64_t cookie,
                    bool* done_at_post = nullptr);

  // The small-message fast path: sends the data message of `segments` with
  // its bytes copied before return, so the segments' keys are not used and
  // their memory is free again on return, and returns true. Copied either by
  // ibv_post_send (posted at once with its bytes inline) or, when Send would
  // queue it (no credit, a full send queue, sends queued before it, or
  // coalesce_sends), into a SendFifo stage, under Send's staging rule
  // (credits cover the FIFO up to it). Returns false, having changed
  // nothing, when neither is possible: the message fits neither inline nor
  // a stage (or not the peer's buffers), staging is not allowed, end of
  // stream was sent, or the connection failed; also when the post itself
  // fails, which fails the connection. Use Send then, which queues the
  // message or reports the error. No cookie is ever reported for a message
  // sent here.
  bool TrySendCopied(absl::Span<const Segment> segments);
  // The largest message (bytes of its segments) TrySendCopied may take.
  uint32_t copied_send_limit() const {
    return std::max<uint32_t>(resources_.max_inline_data(),
                              SendFifo::kStageSize);
  }

  // Posts now what Send() queued, as far as credits and the send queue
  // allow (one doorbell). Poll() and Release() do this too.
  void Flush();

  // Probes the peer: a zero-length RDMA WRITE, which needs no receive,
  // credit or memory at the peer, only its transport's acknowledgement. A
  // peer that is gone (host down, link cut) never acknowledges: after the
  // retry budget (RcConnectionOptions::ack_timeout, retry_count) the probe
  // completes with IBV_WC_RETRY_EXC_ERR and the connection fails with
  // ETIMEDOUT, reported (OnFailed) by the poll that finds it.
  //
  // `now` is the caller's clock. If the probe posted by an earlier call is
  // still out after twice the retry budget (at least a second), the
  // transport has neither delivered nor given up on it, nor on any request
  // posted before it (RC completes in order): a device that never reports
  // is treated as a peer that never answers, and the connection fails with
  // ETIMEDOUT, instead of leaving its operations pending forever. Does
  // nothing before ESTABLISHED, after a failure, while a younger probe is
  // out, or when the send queue is full (its requests probe the peer).
  void SendKeepalive(absl::Time now);
  // Twice the retry budget, at least 1 s (see SendKeepalive).
  absl::Duration StuckAfter() const;

  // Fails the connection with ETIMEDOUT if it has waited on its peer for
  // longer than `limit` (`now` is the caller's clock, called every second
  // or so) with nothing from the peer meanwhile: sends queued for credits
  // it does not return, or rendezvous messages whose done does not come.
  // Credits returned and dones count as the peer's progress; anything else
  // it sends does not (a peer may send forever and never consume). The
  // failure is reported, and the pushes fail, at the next poll.
  void CheckStall(absl::Time now, absl::Duration limit);

  // Sends end of stream after everything sent before (under the same credit
  // rule as data). No cookie is reported for it. Errors as Send.
  absl::Status SendEndOfStream();

  // Where the connection reports (not owned; must stay valid while the
  // group may be polled, or be replaced first). Set it before the first poll
  // of the group after Accept or Connect: a report with no sink is logged
  // and lost.
  void set_sink(CompletionSink* sink) {
    sink_ = sink != nullptr ? sink : &NoSink();
  }

  // set_sink(&sink), then polls the connection's completion queue (which
  // delivers the completions of any connection sharing it to theirs), then
  // posts queued sends that now have credits and a credit update if one is
  // due. Returns OK while the connection is healthy, its error once it has
  // failed (after reporting what it could). Keep polling a failed connection
  // until idle() to collect the flushed sends.
  absl::Status Poll(CompletionSink& sink);

  // The consumer is done with a message in `buffer_index`: once it is done
  // with every message there, the buffer is re-posted, the peer owed a
  // credit, and queued sends or a credit update
  // posted, at the next poll of the connection's group (off the caller's
  // path, and the buffers released between two polls go in one
  // ibv_post_recv). EINVAL if the buffer is not held by the consumer.
  absl::Status Release(uint32_t buffer_index);

  // The memory of receive buffer `buffer_index` while the consumer holds it
  // (reported, not yet released): the receive buffer, or the LargeBuffer a
  // rendezvous message was pulled into. Every segment of the message lies in
  // it. Empty (data null) if the buffer is not held. Valid until
  // Release(buffer_index) or the connection's destruction.
  RegisteredSpan HeldBuffer(uint32_t buffer_index) const;

  // Fails the connection with `errnum` (if not failed already), reports every
  // queued, not yet posted, send to `sink` with that error, and moves the
  // queue pair to the error state so posted sends flush (reported by Poll).
  // For DISCONNECTED and close.
  void FailAll(int errnum, CompletionSink& sink);

  // The connection's error (OK while healthy).
  const absl::Status& status() const { return status_; }
  // The FIFO of queued sends has no place for data: its last place is kept
  // for the end of stream, so a close can always end a stream whose sends
  // fill it.
  bool DataFifoFull() const { return fifo_.DataFull(); }
  // No send posted, none queued, and no rendezvous send awaiting the peer's
  // done (the peer may still read its memory): nothing of ours in flight.
  bool idle() const {
    return sends_.empty() && fifo_.empty() && rendezvous_.in_use() == 0;
  }

  CmId& id() { return *id_; }
  ibv_pd* pd() const { return pd_; }
  uint32_t max_inline_data() const { return resources_.max_inline_data(); }
  // Sends of more bytes than this go by rendezvous.
  uint32_t rendezvous_threshold() const {
    return options_.rendezvous_threshold;
  }
  uint32_t queued_sends() const { return fifo_.size(); }
  uint32_t posted_sends() const { return sends_.size(); }
  uint32_t send_queue_depth() const { return send_queue_depth_; }
  // Of the sends done at post, one in this many is signaled.
  uint32_t signal_interval() const { return sends_.signal_interval(); }
  // ibv_post_send calls made (one per chain of sends).
  uint64_t doorbells() const { return sends_.doorbells(); }
  // Keepalive probes posted (SendKeepalive).
  uint64_t keepalives() const { return watch_.probes(); }
  // ibv_post_recv calls made (one per poll that re-posts released buffers).
  uint64_t receive_posts() const { return receive_posts_; }
  // Null until the peer's parameters are known.
  const CreditAccount* credits() const {
    return credits_ ? &*credits_ : nullptr;
  }

 private:
  bool BindWindows(uint32_t index);
  ibv_send_wr* PrepareZeroWrite(SendKind kind);
  // A send slot's header memory: the header of one SEND, or a whole batch of
  // small messages copied there (one IB MTU of rxe: one packet); spaced to
  // keep each slot on its own cache lines.
  static constexpr size_t kHeaderSlotSize = 1024;
  static_assert(wire::kMaxEncodedSize <= kHeaderSlotSize);
  // RDMA READs in flight per queue pair, at most (the device may allow
  // fewer).
  static constexpr uint32_t kMaxReadsInFlight = 16;

  RcConnection(CmId id, const RcConnectionOptions& options);

  // CompletionHandler: one completion of ours (`local` is a send-queue slot,
  // or kReceiveBit | a receive buffer), and the step after a poll.
  static constexpr uint32_t kReceiveBit = 1u << 31;
  void OnWorkCompletion(const ibv_wc& wc, uint32_t local) override;
  void AfterPoll() override;
  // Where reports go: the sink set last, or one that logs and drops them.
  CompletionSink& sink() { return *sink_; }
  // The sink of a connection nobody set one for (shared, stateless).
  static CompletionSink& NoSink();

  absl::Status CreateResources();
  absl::Status PostReceive(uint32_t buffer_index);
  // Whether the buffers in inbound_.releases() are to be posted now
  // (repost_; before the peer's parameters, always).
  bool ReleasesDue() const;
  // Posts the buffers in inbound_.releases() as one chain when
  // ReleasesDue(), then counts each re-posted for the credit account. Fails
  // the connection on error.
  void PostReleased();
  absl::Status SetPeer(const void* private_data, size_t length);
  rdma_conn_param ConnParam(uint8_t private_data[]) const;

  bool SendQueueFull() const { return sends_.full(); }
  // Whether a send queued now may be staged and reported done: only while
  // the peer's credits cover the FIFO up to it, so it goes out without
  // waiting for the peer (a close posts it). Never before the peer's
  // parameters are known (the active side, connecting).
  bool MayStage() const {
    return credits_ && fifo_.size() + 2 <= credits_->credits();
  }
  // The send path's private steps are documented at their definitions
  // (rc_connection_steps.h, rc_connection_send.cc).
  bool PostNow();
  bool WouldPostNow() const;
  void RecordPostNow();
  // Whether a data message of `segments` may be sent at all: the connection
  // has not failed, 1 to kMaxSegments segments, no end of stream sent. The
  // one prelude of Send and TrySendCopied.
  bool Sendable(absl::Span<const Segment> segments) const {
    return status_.ok() && !segments.empty() &&
           segments.size() <= wire::kMaxSegments && !end_of_stream_sent_;
  }
  // How PostDataNow went.
  enum class Posted { kFailed, kReported, kDoneAtPost };
  Posted PostDataNow(absl::Span<const Segment> segments, uint64_t cookie,
                     bool may_be_done_at_post);
  // Queues a send; with `done_at_post` a small data send may be staged
  // (SendFifo) and *done_at_post set.
  absl::Status Enqueue(SendKind kind, absl::Span<const Segment> segments,
                       uint64_t cookie, bool* done_at_post = nullptr);
  ibv_send_wr* Prepare(uint32_t position, SendKind kind,
                       uint16_t credits_returned, const Segment* segments,
                       uint32_t num_segments, uint64_t cookie,
                       uint32_t part_offset = 0, uint32_t part_bytes = 0);
  uint32_t PostChain(ibv_send_wr* first, ibv_send_wr* last, uint32_t count,
                     bool signal = true);
  // Posts one SEND now; the caller checked credits and send-queue room.
  absl::Status Post(SendKind kind, uint16_t credits_returned,
                    const Segment* segments, uint32_t num_segments,
                    uint64_t cookie);
  ibv_send_wr* PrepareBatch(uint32_t position, uint16_t credits_returned,
                            uint32_t from, uint32_t n);
  // Posts queued sends while credits allow (runs of staged ones batched),
  // then a credit update if due.
  void Pump();
  // Rendezvous: starts a send of `segments` as an announcement.
  // Send() of a message that does not fit one of the peer's buffers: all
  // its parts queued (EAGAIN if the FIFO cannot take them), then pumped.
  absl::Status SendInParts(absl::Span<const Segment> segments, uint64_t total,
                           uint64_t cookie);
  absl::Status SendRendezvous(absl::Span<const Segment> segments,
                              uint64_t cookie);
  ibv_send_wr* PrepareRead(uint32_t position, const ReadChunk& chunk);
  void HandleSendCompletion(const ibv_wc& wc, uint32_t slot);
  void HandleReceiveCompletion(const ibv_wc& wc, uint32_t buffer_index);
  // Marks the connection failed (first error wins) and flushes the QP.
  void Fail(absl::Status status);
  void FailQueued(CompletionSink& sink);

  // Destruction order matters: declared so that the queue pair goes first,
  // then memory regions, memory, the place on the completion queue (and the
  // group of our own), protection domain, id.
  std::optional<CmId> id_;
  std::optional<ProtectionDomain> own_pd_;
  ibv_pd* pd_ = nullptr;
  std::unique_ptr<CompletionGroup> own_completions_;
  CompletionGroup::Attachment completion_;
  // Receive buffers, header slots and stages, and the queue pair (which
  // goes first).
  QueuePairResources resources_;

  // MemoryRegion::Register in pd_, tried once more if the locked-memory
  // limit (ENOMEM) met it and options_.relieve_pinning dropped something.
  absl::StatusOr<MemoryRegion> Register(void* address, size_t length,
                                        int access);

  const RcConnectionOptions options_;
  const uint32_t receive_buffer_size_;
  const uint32_t send_queue_depth_;
  // completion_.polls() at the last send posted at once by Send(): with
  // coalesce_sends, a second one before the next poll is queued instead.
  uint64_t posted_at_poll_ = ~uint64_t{0};
  uint32_t peer_receive_buffer_size_ = 0;
  uint32_t part_send_bytes_ = 0;  // a full part's SEND: PartSendBytes
  bool peer_rendezvous_ = false;  // the peer has a pool for rendezvous
  std::optional<CreditAccount> credits_;
  bool established_ = false;
  bool end_of_stream_sent_ = false;
  absl::Status status_;
  bool failure_reported_ = false;     // sink().OnFailed was called
  CompletionSink* sink_ = &NoSink();  // never null
  // Receive completions delivered before the peer's parameters (and so the
  // credit account) were known, handled in order once they are (capacity
  // receive_buffers).
  std::vector<ibv_wc> early_receives_;

  // What arrives: messages held by the consumer, those waiting their turn,
  // large ones being read or assembled; and the buffers to re-post.
  InboundMessages inbound_;
  // Re-posting released buffers (inbound_.releases()) in batches: a consumer
  // that frees one message at a time pays one ibv_post_recv per batch; a
  // peer short of credits never waits for one (its credits cannot exceed the
  // posted buffers, and few posted means at once).
  const RepostRule repost_;
  // The send queue: requests being built and those posted, by slot, in
  // completion order; which are signaled.
  static constexpr uint32_t kSgesPerSend = wire::kMaxSegments + 1;
  SendQueue sends_;
  // Keepalive probes and the peer's progress (SendKeepalive, CheckStall).
  PeerWatch watch_;
  uint64_t receive_posts_ = 0;  // ibv_post_recv calls

  // Queued sends, oldest first (a ring of send_queue_depth; a send is
  // staged in the stage slot of its ring slot).
  SendFifo fifo_;

  // Rendezvous, sending side: the transfers awaiting the peer's done
  // (send_queue_depth of them).
  RendezvousSender rendezvous_;
  // The peer's quota for our large messages.
  uint64_t peer_rendezvous_quota_ = 0;
  uint32_t rd_atomic_ = 1;  // RDMA READs in flight the QP allows
  // An accepted peer's request, in rdma_cm's terms from this side: the
  // RDMA READs this side may have outstanding toward the peer (the peer's
  // responder resources) and those it must serve at once (the peer's
  // initiator depth). UINT8_MAX on the connecting side (the peer answers
  // within what we asked).
  uint8_t reads_out_allowed_ = UINT8_MAX;
  uint8_t reads_in_asked_ = UINT8_MAX;
};

// Inline: every push of a popped array asks.
inline RegisteredSpan RcConnection::HeldBuffer(uint32_t buffer_index) const {
  RegisteredSpan span;
  if (buffer_index >= options_.receive_buffers ||
      !inbound_.held(buffer_index)) {
    return span;
  }
  span.pd = pd_;
  const LargeBuffer* memory = inbound_.memory(buffer_index);
  if (memory != nullptr) {
    span.data = static_cast<const uint8_t*>(memory->data());
    span.size = memory->capacity();
    span.lkey = memory->keys().lkey;
    span.rkey = memory->keys().rkey;
    return span;
  }
  span.data = resources_.receive_buffer(buffer_index);
  span.size = receive_buffer_size_;
  span.lkey = resources_.receive_lkey();
  span.rkey = resources_.receive_rkey();
  return span;  // registered IBV_ACCESS_LOCAL_WRITE only
}

}  // namespace demi::rdma

#endif  // DEMI_RDMA_RC_CONNECTION_H_
