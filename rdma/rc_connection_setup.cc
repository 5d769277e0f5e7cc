// RcConnection, setup: construction, the resources (protection domain,
// completion queue place, memory, queue pair, posted receives), the
// connection parameters exchanged through rdma_cm, and ESTABLISHED.

#include <errno.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "rdma/rc_connection.h"

namespace demi::rdma {
namespace {

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
      inbound_(InboundOptions{.receive_buffers = options.receive_buffers,
                              .large_pool = options.large_pool,
                              .quota = options.rendezvous_quota,
                              .read_chunk = options.read_chunk,
                              .relieve_pinning = options.relieve_pinning}),
      repost_(options.receive_buffers),
      // Of the sends done at post, one in a quarter of the queue is
      // signaled.
      sends_(options.send_queue_depth, kSgesPerSend,
             std::max<uint32_t>(1, options.send_queue_depth / 4)),
      fifo_(options.send_queue_depth),
      rendezvous_(options.send_queue_depth) {
  early_receives_.reserve(options.receive_buffers);
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
                       (kHeaderSlotSize + SendFifo::kStageSize)},
      [this](void* address, size_t length, int access) {
        return Register(address, length, access);
      }));
  inbound_.set_receive_buffers(resources_.receive_buffer(0),
                               receive_buffer_size_);
  fifo_.set_stages(resources_.header_memory() +
                       static_cast<size_t>(send_queue_depth_) * kHeaderSlotSize,
                   resources_.header_lkey());

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

  ++receive_posts_;
  return resources_.PostAllReceives(
      [this](uint32_t index) { return completion_.WrId(kReceiveBit | index); });
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
  // Parts fill whole packets: the path MTU is known once the queue pair is
  // ready to receive, which it is by now.
  absl::StatusOr<uint32_t> mtu = resources_.qp().PathMtuBytes();
  if (!mtu.ok()) {
    DEMI_LOG(kInfo, "parts fill receive buffers: ", mtu.status().message());
  }
  part_send_bytes_ = PartSendBytes(peer_receive_buffer_size_, mtu.value_or(0));
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

}  // namespace demi::rdma
