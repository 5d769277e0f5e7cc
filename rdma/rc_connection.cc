#include "rdma/rc_connection.h"

#include <errno.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"

// The steps of posting a send (PostNow, PostDataNow, Prepare, StartRequest,
// PostChain) are inlined into their few callers: each is small, a call
// frame costs about as much as its body, and a constant `kind` folds
// Prepare's switch away.
#define DEMI_SEND_STEP ABSL_ATTRIBUTE_ALWAYS_INLINE inline

namespace demi::rdma {
namespace {

// Header slots are spaced to keep each on its own cache lines.
// A send slot's header memory: the header of one SEND, or a whole batch of
// small messages copied there (one IB MTU of rxe: one packet).
constexpr size_t kHeaderSlotSize = 1024;
static_assert(wire::kMaxEncodedSize <= kHeaderSlotSize);
// A FIFO entry's stage: where a small queued send's bytes are copied, so
// that its caller has its memory back at once (see Stage).
constexpr size_t kStageSize = 256;

// RDMA READs in flight per queue pair, at most (the device may allow fewer).
constexpr uint32_t kMaxReadsInFlight = 16;

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

absl::Status ValidateOptions(const RcConnectionOptions& options) {
  if (options.receive_buffers < CreditAccount::kMinReceiveBuffers ||
      options.receive_buffers > CreditAccount::kMaxReceiveBuffers) {
    return ErrnoError(EINVAL,
                      absl::StrCat("receive_buffers ", options.receive_buffers,
                                   " out of range"));
  }
  if (options.eager_limit == 0 ||
      options.eager_limit > (1u << 30) - wire::kMaxHeaderSize) {
    return ErrnoError(EINVAL, "eager_limit out of range");
  }
  if (options.send_queue_depth < 2 || options.send_queue_depth > 1u << 16) {
    return ErrnoError(EINVAL, "send_queue_depth out of range");
  }
  if (options.large_pool != nullptr && options.rendezvous_quota == 0) {
    return ErrnoError(EINVAL, "a rendezvous pool with a quota of 0 bytes");
  }
  if (options.read_chunk == 0) return ErrnoError(EINVAL, "read_chunk of 0");
  if (options.ack_timeout > 31 || options.retry_count > 7) {
    return ErrnoError(EINVAL, "ack_timeout above 31 or retry_count above 7");
  }
  return absl::OkStatus();
}

}  // namespace

RcConnection::RcConnection(CmId id, const RcConnectionOptions& options)
    : id_(std::move(id)),
      options_(options),
      receive_buffer_size_(options.eager_limit + wire::kMaxHeaderSize),
      send_queue_depth_(options.send_queue_depth),
      signal_interval_(std::max<uint32_t>(1, options.send_queue_depth / 4)),
      inbound_(InboundOptions{.receive_buffers = options.receive_buffers,
                              .large_pool = options.large_pool,
                              .quota = options.rendezvous_quota,
                              .read_chunk = options.read_chunk,
                              .relieve_pinning = options.relieve_pinning}),
      posted_(options.send_queue_depth),
      send_wrs_(options.send_queue_depth),
      send_sges_(options.send_queue_depth * kSgesPerSend),
      queued_(options.send_queue_depth),
      rendezvous_(options.send_queue_depth) {
  early_receives_.reserve(options.receive_buffers);
  release_batch_ = std::max<uint32_t>(1, options.receive_buffers / 8);
  release_low_water_ = options.receive_buffers - options.receive_buffers / 4;
  release_wrs_.resize(options.receive_buffers);
  release_sges_.resize(options.receive_buffers);
}

RcConnection::~RcConnection() {
  // The device stops writing into inbound memory once the queue pair is
  // gone; only then does the memory go back to the pool (inbound_'s
  // destructor, after this).
  resources_.DestroyQueuePair();
}

absl::StatusOr<std::unique_ptr<RcConnection>> RcConnection::Accept(
    CmEvent request, const RcConnectionOptions& options) {
  if (request.type() != RDMA_CM_EVENT_CONNECT_REQUEST) {
    return ErrnoError(EINVAL, "Accept needs a CONNECT_REQUEST event");
  }
  CmId id = CmId::Adopt(request.id());
  // Copy the private data, then acknowledge the event: destroying the id (on
  // any error below) would otherwise wait for the acknowledgement forever.
  uint8_t private_data[wire::kConnectionParamsSize] = {};
  size_t private_length = 0;
  const rdma_conn_param& param = request.connection();
  // rdma_cm reports them from this side: initiator_depth is what the
  // peer's responder serves, responder_resources what its initiator asks.
  const uint8_t reads_out_allowed = param.initiator_depth;
  const uint8_t reads_in_asked = param.responder_resources;
  if (param.private_data != nullptr &&
      param.private_data_len >= wire::kConnectionParamsSize) {
    private_length = wire::kConnectionParamsSize;
    std::memcpy(private_data, param.private_data, private_length);
  }
  { CmEvent acknowledged = std::move(request); }

  if (absl::Status valid = ValidateOptions(options); !valid.ok()) {
    (void)id.Reject(nullptr, 0);
    return valid;
  }
  std::unique_ptr<RcConnection> connection(
      new RcConnection(std::move(id), options));
  connection->reads_out_allowed_ = reads_out_allowed;
  connection->reads_in_asked_ = reads_in_asked;
  absl::Status peer = connection->SetPeer(private_data, private_length);
  // Rendezvous messages are pulled with RDMA READs: ours of what the peer
  // announces (it must serve some), the peer's of what we announce (it must
  // issue some, if it takes rendezvous messages at all).
  if (peer.ok() && options.large_pool != nullptr && reads_out_allowed == 0) {
    peer = ErrnoError(EPROTO, "the peer serves no RDMA READs");
  } else if (peer.ok() && connection->peer_rendezvous_ && reads_in_asked == 0) {
    peer = ErrnoError(EPROTO,
                      "the peer takes rendezvous messages but issues no "
                      "RDMA READs");
  }
  if (!peer.ok()) {
    (void)connection->id_->Reject(nullptr, 0);
    return peer;
  }
  absl::Status created = connection->CreateResources();
  if (!created.ok()) {
    (void)connection->id_->Reject(nullptr, 0);
    return created;
  }
  if (options.ack_timeout != 0) {
    absl::Status timeout = connection->id_->SetAckTimeout(options.ack_timeout);
    if (!timeout.ok()) {
      (void)connection->id_->Reject(nullptr, 0);
      return timeout;
    }
  }
  uint8_t ours[wire::kConnectionParamsSize];
  DEMI_RETURN_IF_ERROR(connection->id_->Accept(connection->ConnParam(ours)));
  return connection;
}

absl::StatusOr<std::unique_ptr<RcConnection>> RcConnection::Connect(
    CmId id, const RcConnectionOptions& options) {
  DEMI_RETURN_IF_ERROR(ValidateOptions(options));
  if (id.verbs() == nullptr) {
    return ErrnoError(EINVAL, "Connect needs an id bound to a device");
  }
  std::unique_ptr<RcConnection> connection(
      new RcConnection(std::move(id), options));
  DEMI_RETURN_IF_ERROR(connection->CreateResources());
  if (options.ack_timeout != 0) {
    DEMI_RETURN_IF_ERROR(connection->id_->SetAckTimeout(options.ack_timeout));
  }
  uint8_t ours[wire::kConnectionParamsSize];
  DEMI_RETURN_IF_ERROR(connection->id_->Connect(connection->ConnParam(ours)));
  return connection;
}

rdma_conn_param RcConnection::ConnParam(uint8_t private_data[]) const {
  wire::EncodeConnectionParams(
      wire::ConnectionParams{
          .receive_buffers = static_cast<uint16_t>(options_.receive_buffers),
          .receive_buffer_size = receive_buffer_size_,
          .rendezvous = options_.large_pool != nullptr,
          .rendezvous_quota = options_.rendezvous_quota},
      private_data);
  rdma_conn_param param{};
  param.private_data = private_data;
  param.private_data_len = wire::kConnectionParamsSize;
  // rdma_cm sets the queue pair's READ limits from these: never more READs
  // outstanding toward an accepted peer than it serves, nor more of its own
  // served than it asked for.
  param.responder_resources =
      static_cast<uint8_t>(std::min<uint32_t>(rd_atomic_, reads_in_asked_));
  param.initiator_depth =
      static_cast<uint8_t>(std::min<uint32_t>(rd_atomic_, reads_out_allowed_));
  param.retry_count = options_.retry_count;
  param.rnr_retry_count = 0;  // a SEND without a posted receive is an error
  return param;
}

absl::Status RcConnection::SetPeer(const void* private_data, size_t length) {
  DEMI_ASSIGN_OR_RETURN(wire::ConnectionParams peer,
                        wire::DecodeConnectionParams(private_data, length));
  if (peer.receive_buffer_size <= wire::kMaxHeaderSize) {
    return ErrnoError(EPROTO, absl::StrCat("peer receive buffers of ",
                                           peer.receive_buffer_size,
                                           " bytes hold no payload"));
  }
  credits_ =
      CreditAccount::Create(peer.receive_buffers, options_.receive_buffers);
  if (!credits_) {
    return ErrnoError(EPROTO, absl::StrCat("peer keeps ", peer.receive_buffers,
                                           " receive buffers posted"));
  }
  peer_receive_buffer_size_ = peer.receive_buffer_size;
  peer_rendezvous_ = peer.rendezvous;
  peer_rendezvous_quota_ = peer.rendezvous_quota;
  return absl::OkStatus();
}

absl::Status RcConnection::CreateResources() {
  ibv_context* context = id_->verbs();
  ibv_device_attr device{};
  if (int rc = ibv_query_device(context, &device); rc != 0) {
    return ErrnoStatus(rc, "ibv_query_device");
  }
  if (device.max_sge < wire::kMaxSegments + 1) {
    return ErrnoError(ENOTSUP, absl::StrCat("device allows ", device.max_sge,
                                            " scatter/gather entries, need ",
                                            wire::kMaxSegments + 1));
  }
  const bool windows = MemoryWindow::Supported(device);
  rd_atomic_ = std::max(
      1u,
      std::min({kMaxReadsInFlight, static_cast<uint32_t>(device.max_qp_rd_atom),
                static_cast<uint32_t>(device.max_qp_init_rd_atom)}));
  if (options_.pd != nullptr) {
    pd_ = options_.pd;
  } else {
    DEMI_ASSIGN_OR_RETURN(ProtectionDomain pd,
                          ProtectionDomain::Create(context));
    own_pd_.emplace(std::move(pd));
    pd_ = own_pd_->get();
  }
  rendezvous_.Configure(pd_, windows,
                        [this](void* address, size_t length, int access) {
                          return Register(address, length, access);
                        });
  // Every request of ours can be outstanding at once: that many
  // completions are reserved on the group's queue.
  const uint32_t completions = send_queue_depth_ + options_.receive_buffers;
  CompletionGroup* group = options_.completions;
  if (group == nullptr) {
    DEMI_ASSIGN_OR_RETURN(
        own_completions_,
        CompletionGroup::Create(
            context, CompletionGroupOptions{.queue_entries = 2 * completions}));
    group = own_completions_.get();
  }
  DEMI_ASSIGN_OR_RETURN(completion_, group->Attach(this, completions));

  // Header slots, then the FIFO entries' stages: one registration.
  DEMI_RETURN_IF_ERROR(resources_.CreateMemory(
      {.receive_buffers = options_.receive_buffers,
       .receive_buffer_size = receive_buffer_size_,
       .header_bytes = static_cast<size_t>(send_queue_depth_) *
                       (kHeaderSlotSize + kStageSize)},
      [this](void* address, size_t length, int access) {
        return Register(address, length, access);
      }));
  inbound_.set_receive_buffers(resources_.receive_buffer(0),
                               receive_buffer_size_);

  ibv_qp_init_attr attr{};
  attr.send_cq = completion_.cq();
  attr.recv_cq = completion_.cq();
  attr.qp_type = IBV_QPT_RC;
  attr.sq_sig_all = 0;
  attr.cap.max_send_wr = send_queue_depth_;
  attr.cap.max_recv_wr = options_.receive_buffers;
  attr.cap.max_send_sge = wire::kMaxSegments + 1;
  attr.cap.max_recv_sge = 1;
  attr.cap.max_inline_data = options_.max_inline_data;
  DEMI_RETURN_IF_ERROR(resources_.CreateQueuePair(*id_, pd_, attr));

  for (uint32_t i = 0; i < options_.receive_buffers; ++i) {
    DEMI_RETURN_IF_ERROR(PostReceive(i));
  }
  return absl::OkStatus();
}

absl::Status RcConnection::OnEstablished(const CmEvent& event) {
  if (event.type() != RDMA_CM_EVENT_ESTABLISHED) {
    return ErrnoError(EINVAL, "OnEstablished needs an ESTABLISHED event");
  }
  if (!credits_) {
    const rdma_conn_param& param = event.connection();
    absl::Status peer =
        param.private_data == nullptr
            ? ErrnoError(EPROTO, "peer accepted without parameters")
            : SetPeer(param.private_data, param.private_data_len);
    if (!peer.ok()) {
      Fail(peer);
      return peer;
    }
  }
  established_ = true;
  // Queued sends (and receives that waited for the parameters) go at the
  // next poll.
  completion_.RequestAfterPoll();
  return absl::OkStatus();
}

absl::Status RcConnection::PostReceive(uint32_t buffer_index) {
  ++receive_posts_;
  return resources_.PostReceive(buffer_index,
                                completion_.WrId(kReceiveBit | buffer_index));
}

DEMI_SEND_STEP bool RcConnection::PostNow() {
  if (!queued_.empty() || !established_ || !credits_->CanSendData() ||
      SendQueueFull()) {
    return false;
  }
  if (!options_.coalesce_sends) return true;
  const uint64_t polls = completion_.polls();
  if (polls == posted_at_poll_) return false;  // a burst: queue the rest
  posted_at_poll_ = polls;
  return true;
}

DEMI_SEND_STEP RcConnection::Posted RcConnection::PostDataNow(
    absl::Span<const Segment> segments, uint64_t cookie,
    bool may_be_done_at_post) {
  const uint16_t returned = *credits_->ConsumeForData();
  ibv_send_wr* wr = Prepare(0, Kind::kData, returned, segments.data(),
                            static_cast<uint32_t>(segments.size()), cookie);
  // Inline data is copied by ibv_post_send: the caller may have its memory
  // back at once, and its cookie is not reported again.
  const bool inline_data = (wr->send_flags & IBV_SEND_INLINE) != 0;
  PostedSend& entry = posted_.slot(wr - send_wrs_.data());
  entry.report = !(inline_data && may_be_done_at_post);
  // Done at post: no completion needed, but one now and then retires the
  // send slots.
  const bool signal = entry.report || unsignaled_ + 1 >= signal_interval_;
  if (PostChain(wr, wr, 1, signal) != 1) {
    entry.report = true;  // failed: not posted, never reported
    return Posted::kFailed;
  }
  return entry.report ? Posted::kReported : Posted::kDoneAtPost;
}

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
  return Enqueue(Kind::kData, segments, cookie, done_at_post);
}

bool RcConnection::TrySendInline(absl::Span<const Segment> segments) {
  if (!Sendable(segments)) return false;
  uint64_t size = wire::HeaderSize(static_cast<int>(segments.size()));
  for (const Segment& segment : segments) size += segment.length;
  // PostNow last: it records the post when it says yes.
  if (size > resources_.max_inline_data() || size > peer_receive_buffer_size_ ||
      !PostNow()) {
    return false;
  }
  // It fits inline, so it is done at post. (Were it reported, it is still
  // posted: declining now would send it twice.)
  return PostDataNow(segments, 0, /*may_be_done_at_post=*/true) !=
         Posted::kFailed;
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
  const uint64_t first = peer_receive_buffer_size_ - wire::HeaderSize(n);
  const uint64_t next = peer_receive_buffer_size_ - wire::kHeaderFixedSize;
  const uint64_t parts = 1 + (total - first + next - 1) / next;
  // In parts only on a connection with nothing else in flight (a request,
  // a reply): there the round trip a rendezvous adds is what the message
  // waits for. Behind other sends (a stream of large pushes) the peer's
  // reads pipeline without our credits and its bytes are copied once (by
  // the device) instead of twice: rendezvous. So is a message of many parts.
  if (parts > send_queue_depth_ / 2 || !established_ || !idle() ||
      credits_->credits() < parts) {
    return SendRendezvous(segments, cookie);
  }
  // Idle: the FIFO is empty, and half of it takes every part.
  uint64_t offset = 0;
  for (uint64_t p = 0; p < parts; ++p) {
    QueuedSend& entry = queued_.slot(queued_.SlotAfterBack(0));
    entry.cookie = cookie;
    entry.kind = p == 0 ? Kind::kFirstPart : Kind::kNextPart;
    entry.num_segments = static_cast<uint8_t>(n);
    std::copy(segments.begin(), segments.end(), entry.segments);
    entry.part_offset = static_cast<uint32_t>(offset);
    entry.part_bytes =
        static_cast<uint32_t>(std::min(p == 0 ? first : next, total - offset));
    entry.reported = p + 1 < parts;  // only the last part reports the push
    offset += entry.part_bytes;
    queued_.Extend(1);
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
    absl::Status posted = Post(Kind::kRendezvous, returned, segments.data(),
                               static_cast<uint32_t>(segments.size()), index);
    if (!posted.ok()) {
      Fail(posted);
      rendezvous_.Abandon(index);
    }
    return posted;
  }
  return Enqueue(Kind::kRendezvous, segments, index);
}

absl::StatusOr<MemoryRegion> RcConnection::Register(void* address,
                                                    size_t length, int access) {
  absl::StatusOr<MemoryRegion> region =
      MemoryRegion::Register(pd_, address, length, access);
  if (!region.ok() && ErrnoFromStatus(region.status()) == ENOMEM &&
      options_.relieve_pinning && options_.relieve_pinning()) {
    region = MemoryRegion::Register(pd_, address, length, access);
  }
  return region;
}

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
  if (!posted_.empty()) {
    if (unsignaled_ != 0 && !SendQueueFull()) {
      ibv_send_wr* probe = PrepareZeroWrite(Kind::kDrain);
      PostChain(probe, probe, 1);
    }
    return false;
  }
  ibv_send_wr* first = nullptr;
  ibv_send_wr* last = nullptr;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t slot = SendSlotAfterPosted(i);
    ibv_send_wr& wr = send_wrs_[slot];
    StartRequest(slot, /*sge=*/nullptr, /*num_sge=*/0, IBV_WR_BIND_MW, &wr);
    rendezvous_.PrepareBind(index, i, &wr);
    posted_.slot(slot) = PostedSend{.kind = Kind::kBind};
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
  if (queued_.empty() && established_ && credits_->CanSendData() &&
      !SendQueueFull()) {
    uint16_t returned = *credits_->ConsumeForData();
    absl::Status posted = Post(Kind::kEndOfStream, returned, nullptr, 0, 0);
    if (!posted.ok()) Fail(posted);
    end_of_stream_sent_ = posted.ok();
    return posted;
  }
  DEMI_RETURN_IF_ERROR(Enqueue(Kind::kEndOfStream, {}, 0));
  end_of_stream_sent_ = true;
  return absl::OkStatus();
}

bool RcConnection::Stage(uint32_t slot, QueuedSend& entry) {
  // Only while credits cover the FIFO up to it: a send staged and reported
  // done must go out without waiting for the peer (a close posts it). None
  // before the peer's parameters are known (the active side, connecting).
  if (!credits_ || queued_.size() + 2 > credits_->credits()) return false;
  size_t total = 0;
  for (uint32_t i = 0; i < entry.num_segments; ++i) {
    total += entry.segments[i].length;
  }
  if (total > kStageSize) return false;
  uint8_t* stage = resources_.header_memory() +
                   static_cast<size_t>(send_queue_depth_) * kHeaderSlotSize +
                   static_cast<size_t>(slot) * kStageSize;
  for (uint32_t i = 0; i < entry.num_segments; ++i) {
    Segment& segment = entry.segments[i];
    std::memcpy(stage, segment.data, segment.length);
    segment.data = stage;
    segment.lkey = resources_.header_lkey();
    segment.rkey = 0;
    stage += segment.length;
  }
  return true;
}

absl::Status RcConnection::Enqueue(Kind kind,
                                   absl::Span<const Segment> segments,
                                   uint64_t cookie, bool* done_at_post) {
  if (kind == Kind::kEndOfStream ? queued_.full() : DataFifoFull()) {
    return ErrnoError(EAGAIN, "send queue full");
  }
  const uint32_t slot = queued_.SlotAfterBack(0);
  QueuedSend& entry = queued_.slot(slot);
  entry.cookie = cookie;
  entry.kind = kind;
  entry.num_segments = static_cast<uint8_t>(segments.size());
  std::copy(segments.begin(), segments.end(), entry.segments);
  entry.reported =
      done_at_post != nullptr && kind == Kind::kData && Stage(slot, entry);
  if (entry.reported) *done_at_post = true;
  queued_.Extend(1);
  // The next poll posts it (if credits allow), whether or not this
  // connection has a completion by then: a queued send is never stranded.
  completion_.RequestAfterPoll();
  return absl::OkStatus();
}

DEMI_SEND_STEP ibv_send_wr* RcConnection::Prepare(
    uint32_t position, Kind kind, uint16_t credits_returned,
    const Segment* segments, uint32_t num_segments, uint64_t cookie,
    uint32_t part_offset, uint32_t part_bytes) {
  const uint32_t slot = SendSlotAfterPosted(position);
  uint8_t* header_slot = resources_.header_memory() + slot * kHeaderSlotSize;
  uint64_t total = 0;
  size_t header_size;
  if (kind == Kind::kData) {  // the common case, without a MessageHeader
    header_size = wire::EncodeDataHeader(
        credits_returned, static_cast<uint8_t>(num_segments),
        [segments](int i) { return segments[i].length; }, header_slot);
    for (uint32_t i = 0; i < num_segments; ++i) total += segments[i].length;
  } else if (kind == Kind::kFirstPart) {
    header_size = wire::EncodeDataHeader(
        credits_returned, static_cast<uint8_t>(num_segments),
        [segments](int i) { return segments[i].length; }, header_slot,
        wire::MessageType::kFragmented);
  } else if (kind == Kind::kNextPart) {
    wire::EncodeFixedPart(wire::MessageType::kFragment, credits_returned, 0,
                          header_slot);
    header_size = wire::kHeaderFixedSize;
  } else {
    wire::MessageHeader header;
    switch (kind) {
      case Kind::kCreditUpdate:
        header.type = wire::MessageType::kCreditUpdate;
        break;
      case Kind::kEndOfStream:
        header.type = wire::MessageType::kEndOfStream;
        break;
      case Kind::kRendezvous:
        header.type = wire::MessageType::kRendezvous;
        break;
      case Kind::kRendezvousDone:
        header.type = wire::MessageType::kRendezvousDone;
        header.transfer_id = static_cast<uint32_t>(cookie);
        break;
      case Kind::kData:       // above
      case Kind::kFirstPart:  // above
      case Kind::kNextPart:   // above
      case Kind::kRead:       // not a SEND; see PrepareRead
      case Kind::kKeepalive:  // not a SEND; see SendKeepalive
      case Kind::kBind:       // not a SEND; see BindWindows
      case Kind::kDrain:      // not a SEND; see BindWindows
        break;
    }
    header.credits_returned = credits_returned;
    header.num_segments = static_cast<uint8_t>(num_segments);
    for (uint32_t i = 0; i < num_segments; ++i) {
      header.segment_lengths[i] = segments[i].length;
    }
    if (kind == Kind::kRendezvous) {
      rendezvous_.Announce(static_cast<uint32_t>(cookie),
                           absl::MakeConstSpan(segments, num_segments),
                           &header);
    }
    header_size = wire::EncodeHeader(header, header_slot);
  }
  // A rendezvous announcement carries no payload: only the header slot
  // (total stays 0 for every kind but data).
  uint32_t gathered = kind == Kind::kData ? num_segments : 0;

  ibv_sge* sge = &send_sges_[static_cast<size_t>(slot) * kSgesPerSend];
  sge[0].addr = reinterpret_cast<uintptr_t>(header_slot);
  sge[0].length = static_cast<uint32_t>(header_size);
  sge[0].lkey = resources_.header_lkey();
  for (uint32_t i = 0; i < gathered; ++i) {
    sge[i + 1].addr = reinterpret_cast<uintptr_t>(segments[i].data);
    sge[i + 1].length = segments[i].length;
    sge[i + 1].lkey = segments[i].lkey;
  }
  if (kind == Kind::kFirstPart || kind == Kind::kNextPart) {
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
  ibv_send_wr& wr = send_wrs_[slot];
  StartRequest(slot, sge, static_cast<int>(gathered + 1), IBV_WR_SEND, &wr);
  if (header_size + total <= resources_.max_inline_data()) {
    wr.send_flags |= IBV_SEND_INLINE;
  }
  posted_.slot(slot) = PostedSend{.cookie = cookie, .kind = kind};
  return &wr;
}

DEMI_SEND_STEP void RcConnection::StartRequest(uint32_t slot, ibv_sge* sge,
                                               int num_sge,
                                               ibv_wr_opcode opcode,
                                               ibv_send_wr* wr) {
  // Field by field rather than zeroing the whole request: the union of
  // opcode-specific fields is read only for the opcodes that use it (the
  // RDMA read sets wr.rdma after this).
  wr->next = nullptr;
  wr->wr_id = completion_.WrId(slot);
  wr->sg_list = sge;
  wr->num_sge = num_sge;
  wr->opcode = opcode;
  wr->send_flags = 0;
  wr->imm_data = 0;
}

DEMI_SEND_STEP uint32_t RcConnection::PostChain(ibv_send_wr* first,
                                                ibv_send_wr* last,
                                                uint32_t count, bool signal) {
  // One doorbell for the whole chain; only the last request is signaled:
  // RC completes in order, so its completion retires the ones before it.
  last->next = nullptr;
  if (signal) {
    last->send_flags |= IBV_SEND_SIGNALED;
    unsignaled_ = 0;
  } else {
    unsignaled_ += count;
  }
  ibv_send_wr* rejected = nullptr;
  absl::Status status = resources_.qp().PostSend(first, &rejected);
  uint32_t posted = count;
  if (!status.ok()) {
    posted = 0;
    for (ibv_send_wr* wr = first; wr != rejected && wr != nullptr;
         wr = wr->next) {
      ++posted;
    }
    // Requests before the rejected one went out unsignaled; the queue pair
    // is failed below, so each completes with a flush error of its own.
    Fail(status);
  }
  posted_.Extend(posted);
  ++doorbells_;
  return posted;
}

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
  if (status_.ok() && keepalive_posted_ &&
      now - keepalive_posted_at_ > StuckAfter()) {
    Fail(ErrnoError(
        ETIMEDOUT,
        absl::StrCat("a keepalive probe got no completion in ",
                     absl::FormatDuration(now - keepalive_posted_at_),
                     ": the transport is stuck")));
    return;
  }
  // Not while one is out, nor into a full send queue. Sends posted before
  // it may be in flight or long acknowledged (unsignaled ones stay in
  // posted_ until a signaled completion retires them): the probe goes
  // anyway, and its completion retires them.
  if (!status_.ok() || !established_ || keepalive_posted_ || SendQueueFull()) {
    return;
  }
  ibv_send_wr* wr = PrepareZeroWrite(Kind::kKeepalive);
  if (PostChain(wr, wr, 1) == 1) {
    keepalive_posted_ = true;
    keepalive_posted_at_ = now;
  }
  ++keepalives_;
}

ibv_send_wr* RcConnection::PrepareZeroWrite(Kind kind) {
  // A zero-length RDMA WRITE: no address, key or receive at the peer (a
  // zero-length request is not checked against either), only its
  // transport's acknowledgement.
  const uint32_t slot = SendSlotAfterPosted(0);
  ibv_send_wr& wr = send_wrs_[slot];
  StartRequest(slot, /*sge=*/nullptr, /*num_sge=*/0, IBV_WR_RDMA_WRITE, &wr);
  wr.wr.rdma.remote_addr = 0;
  wr.wr.rdma.rkey = 0;
  posted_.slot(slot) = PostedSend{.kind = kind};
  return &wr;
}

void RcConnection::CheckStall(absl::Time now, absl::Duration limit) {
  const bool waiting = status_.ok() && established_ &&
                       ((!queued_.empty() && !credits_->CanSendData()) ||
                        rendezvous_.in_use() != 0);
  if (!waiting) {
    waiting_since_ = absl::InfiniteFuture();
    return;
  }
  // The wait (re)starts when it begins and whenever the peer moved.
  if (waiting_since_ == absl::InfiniteFuture() ||
      peer_progress_ != progress_at_check_) {
    progress_at_check_ = peer_progress_;
    waiting_since_ = now;
    return;
  }
  if (limit <= absl::ZeroDuration() || now - waiting_since_ <= limit) return;
  Fail(ErrnoError(
      ETIMEDOUT,
      absl::StrCat("waited ", absl::FormatDuration(now - waiting_since_),
                   " for the peer's credits or rendezvous reads (",
                   queued_.size(), " sends queued, ", rendezvous_.in_use(),
                   " rendezvous messages unanswered)")));
  completion_.RequestAfterPoll();  // reported by the next poll
}

absl::Status RcConnection::Post(Kind kind, uint16_t credits_returned,
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
  if (dones.empty() && queued_.empty() && !inbound_.waiting() &&
      !credits_->ShouldSendCreditUpdate()) {
    return;
  }
  // Queued announcements go after their windows' binds, posted first (a
  // doorbell of their own; a rendezvous message is large, one more system
  // call is nothing beside it). One the send queue has no room to bind for
  // yet stops the queue here.
  uint32_t bound = queued_.size();
  for (uint32_t q = 0; rendezvous_.windows() && q < queued_.size(); ++q) {
    const QueuedSend& entry = queued_[q];
    if (entry.kind == Kind::kRendezvous &&
        !BindWindows(static_cast<uint32_t>(entry.cookie))) {
      if (!status_.ok()) return;
      bound = q;
      break;
    }
  }
  // Chain, for one doorbell: done messages owed to the peer, queued sends
  // that have a credit, RDMA READs of inbound transfers, then a credit update
  // if one is due; all within the send queue's free slots.
  const uint32_t room = send_queue_depth_ - posted_.size();
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
    append(Prepare(count, Kind::kRendezvousDone, returned, nullptr, 0,
                   dones[done_count]));
    ++done_count;
  }
  // Queued sends: one SEND each, or a run of staged ones copied into one
  // kBatch SEND. Those already reported done (staged) are never reported
  // again: their completions retire their slots silently.
  uint32_t data = 0;   // SENDs of queued sends in the chain
  uint32_t taken = 0;  // queued sends they carry
  while (taken < bound && count < room && credits_->CanSendData()) {
    const uint32_t run = BatchRun(taken, bound - taken);
    uint16_t returned = *credits_->ConsumeForData();
    ibv_send_wr* wr;
    if (run > 1) {
      wr = PrepareBatch(count, returned, taken, run);
    } else {
      const QueuedSend& entry = queued_[taken];
      wr = Prepare(count, entry.kind, returned, entry.segments,
                   entry.num_segments, entry.cookie, entry.part_offset,
                   entry.part_bytes);
      if (entry.reported) posted_.slot(wr - send_wrs_.data()).report = false;
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
    append(Prepare(count, Kind::kCreditUpdate, returned, nullptr, 0, 0));
  }
  if (count == 0) return;
  uint32_t posted = PostChain(first, last, count);
  // What was not posted stays queued (the connection has failed; Poll or
  // FailAll reports it).
  const uint32_t posted_dones = std::min(posted, done_count);
  dones.pop_front(posted_dones);
  const uint32_t posted_data = std::min(posted - posted_dones, data);
  // The queued sends the posted SENDs carried leave the FIFO. The chain is
  // the newest `posted` records of posted_.
  const uint32_t chain_front = posted_.size() - posted;
  uint32_t consumed = 0;
  for (uint32_t i = done_count; i < done_count + posted_data; ++i) {
    consumed += posted_[chain_front + i].entries;
  }
  queued_.pop_front(consumed);
}

uint32_t RcConnection::BatchRun(uint32_t from, uint32_t available) const {
  const size_t limit =
      std::min<size_t>(kHeaderSlotSize, peer_receive_buffer_size_);
  size_t bytes = wire::kHeaderFixedSize;
  uint32_t n = 0;
  while (n < available && n < wire::kMaxBatchMessages) {
    const QueuedSend& entry = queued_[from + n];
    if (entry.kind != Kind::kData || !entry.reported) break;
    size_t size = wire::HeaderSize(entry.num_segments);
    for (uint32_t i = 0; i < entry.num_segments; ++i) {
      size += entry.segments[i].length;
    }
    if (bytes + size > limit) break;
    bytes += size;
    ++n;
  }
  return n >= 2 ? n : 1;
}

ibv_send_wr* RcConnection::PrepareBatch(uint32_t position,
                                        uint16_t credits_returned,
                                        uint32_t from, uint32_t n) {
  const uint32_t slot = SendSlotAfterPosted(position);
  uint8_t* out = resources_.header_memory() + slot * kHeaderSlotSize;
  wire::EncodeFixedPart(wire::MessageType::kBatch, credits_returned,
                        static_cast<uint8_t>(n), out);
  size_t at = wire::kHeaderFixedSize;
  for (uint32_t k = 0; k < n; ++k) {
    const QueuedSend& entry = queued_[from + k];
    const Segment* segments = entry.segments;
    at += wire::EncodeDataHeader(
        0, entry.num_segments, [segments](int i) { return segments[i].length; },
        out + at);
    for (uint32_t i = 0; i < entry.num_segments; ++i) {
      std::memcpy(out + at, segments[i].data, segments[i].length);
      at += segments[i].length;
    }
  }
  ibv_sge* sge = &send_sges_[static_cast<size_t>(slot) * kSgesPerSend];
  sge[0].addr = reinterpret_cast<uintptr_t>(out);
  sge[0].length = static_cast<uint32_t>(at);
  sge[0].lkey = resources_.header_lkey();
  ibv_send_wr& wr = send_wrs_[slot];
  StartRequest(slot, sge, 1, IBV_WR_SEND, &wr);
  if (at <= resources_.max_inline_data()) wr.send_flags |= IBV_SEND_INLINE;
  // Staged: every message of it was reported done by its Send().
  posted_.slot(slot) = PostedSend{.cookie = 0,
                                  .kind = Kind::kData,
                                  .report = false,
                                  .entries = static_cast<uint8_t>(n)};
  return &wr;
}

ibv_send_wr* RcConnection::PrepareRead(uint32_t position,
                                       const ReadChunk& chunk) {
  const uint32_t slot = SendSlotAfterPosted(position);
  ibv_sge* sge = &send_sges_[static_cast<size_t>(slot) * kSgesPerSend];
  sge[0].addr = chunk.local_address;
  sge[0].length = chunk.length;
  sge[0].lkey = chunk.lkey;
  ibv_send_wr& wr = send_wrs_[slot];
  StartRequest(slot, sge, 1, IBV_WR_RDMA_READ, &wr);
  wr.wr.rdma.remote_addr = chunk.remote_address;
  wr.wr.rdma.rkey = chunk.rkey;
  posted_.slot(slot) =
      PostedSend{.cookie = chunk.buffer_index, .kind = Kind::kRead};
  return &wr;
}

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
  const uint32_t distance = posted_.PlacesAfterFront(slot);
  if (distance >= posted_.size()) {
    DEMI_LOG(kError, "send completion for slot ", slot, ", expected one of ",
             posted_.size(), " from ", posted_.front_slot());
    Fail(ErrnoError(EIO, "send completion for no posted request"));
    return;
  }
  for (uint32_t i = 0; i <= distance; ++i) {
    const PostedSend posted = posted_.front();
    posted_.pop_front();
    absl::Status status;
    if (i == distance && wc.status != IBV_WC_SUCCESS) {
      status = CompletionError(wc);
      Fail(status);
    }
    if ((posted.kind == Kind::kData || posted.kind == Kind::kNextPart) &&
        posted.report) {
      sink.OnSendComplete(posted.cookie, status);
    }
    if (posted.kind == Kind::kKeepalive) keepalive_posted_ = false;
    if (posted.kind == Kind::kRead) {
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
  if (header->credits_returned != 0) ++peer_progress_;
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
    ++peer_progress_;
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
  if (releases.size() >= release_batch_ || !credits_) return true;
  // Buffers posted now: the peer's credits can be no more than these.
  const uint32_t posted =
      credits_->local_receive_buffers() - credits_->unreposted();
  return posted <= release_low_water_;
}

void RcConnection::PostReleased() {
  // One ibv_post_recv (and the credits it returns) per batch of releases
  // while most buffers are posted; at once when they run low.
  if (!ReleasesDue()) return;
  std::vector<uint32_t>& releases = inbound_.releases();
  const size_t count = releases.size();
  for (size_t i = 0; i < count; ++i) {
    resources_.PrepareReceive(releases[i],
                              completion_.WrId(kReceiveBit | releases[i]),
                              &release_wrs_[i], &release_sges_[i]);
    if (i > 0) release_wrs_[i - 1].next = &release_wrs_[i];
  }
  releases.clear();
  ++receive_posts_;
  if (absl::Status posted = resources_.qp().PostRecv(release_wrs_.data());
      !posted.ok()) {
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
  while (!queued_.empty()) {
    const QueuedSend& entry = queued_.front();
    queued_.pop_front();  // the slot keeps its value until reused
    // (A staged send was reported done by its Send(): its bytes are lost
    // with the connection, as an inline one's after its post.)
    if ((entry.kind == Kind::kData || entry.kind == Kind::kNextPart) &&
        !entry.reported) {
      sink.OnSendComplete(entry.cookie, status);
    }
  }
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
