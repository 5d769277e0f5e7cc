#include "rdma/ud_endpoint.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "rdma/completion_channel.h"

namespace demi::rdma {
namespace {

namespace dw = datagram_wire;

// Header slots are spaced to keep each on its own cache lines.
constexpr size_t kHeaderSlotSize = 128;
static_assert(dw::kMaxHeaderSize <= kHeaderSlotSize);
constexpr size_t kSgesPerSend = dw::kMaxSegments + 1;
constexpr int kPollBatch = 16;
// In a receive's wr_id, above the buffer index (at most 65536 buffers).
constexpr uint64_t kReceiveBit = uint64_t{1} << 31;

absl::Status CompletionError(const ibv_wc& wc) {
  const int errnum = wc.status == IBV_WC_WR_FLUSH_ERR ? ECONNRESET : EIO;
  return ErrnoError(errnum, absl::StrCat("datagram work completion: ",
                                         ibv_wc_status_str(wc.status),
                                         " (vendor ", wc.vendor_err, ")"));
}

}  // namespace

UdEndpoint::UdEndpoint(CmId id, const UdEndpointOptions& options)
    : id_(std::move(id)),
      options_(options),
      held_(options.receive_buffers, 0),
      repost_(options.receive_buffers),
      posted_(options.send_queue_depth) {
  releases_.reserve(options.receive_buffers);
}

UdEndpoint::~UdEndpoint() = default;

absl::StatusOr<std::unique_ptr<UdEndpoint>> UdEndpoint::Create(
    CmId id, const UdEndpointOptions& options) {
  if (options.pd == nullptr || options.receive_buffers == 0 ||
      options.receive_buffers > 1u << 16 || options.send_queue_depth == 0 ||
      options.send_queue_depth > 1u << 16) {
    return ErrnoError(EINVAL, "bad datagram endpoint options");
  }
  if (id.verbs() == nullptr) {
    return ErrnoError(EADDRNOTAVAIL,
                      "a datagram socket must be bound to the address of an "
                      "RDMA interface");
  }
  if (id.verbs() != options.pd->context) {
    return ErrnoError(EINVAL, "protection domain of another device");
  }
  std::unique_ptr<UdEndpoint> endpoint(new UdEndpoint(std::move(id), options));
  DEMI_RETURN_IF_ERROR(endpoint->CreateResources());
  // Peers resolving this endpoint send connect requests to the id.
  DEMI_RETURN_IF_ERROR(endpoint->id_->Listen(128));
  return endpoint;
}

absl::Status UdEndpoint::CreateResources() {
  ibv_context* context = id_->verbs();
  local_ = id_->LocalAddress();
  port_num_ = id_->get()->port_num;
  ibv_port_attr port{};
  if (int rc = ibv_query_port(context, port_num_, &port); rc != 0) {
    return ErrnoStatus(rc, "ibv_query_port");
  }
  const uint32_t mtu = MtuBytes(port.active_mtu);
  if (mtu <= dw::kMaxHeaderSize) {
    return ErrnoError(ENOTSUP, absl::StrCat("port MTU of ", mtu, " bytes"));
  }
  max_payload_ = mtu - static_cast<uint32_t>(dw::kMaxHeaderSize);
  receive_buffer_size_ = static_cast<uint32_t>(dw::kGrhSize) + mtu;

  // One queue for both directions: a poll is one ibv_poll_cq.
  DEMI_ASSIGN_OR_RETURN(
      CompletionQueue cq,
      CompletionQueue::Create(context,
                              static_cast<int>(options_.send_queue_depth +
                                               options_.receive_buffers),
                              options_.channel));
  cq_.emplace(std::move(cq));
  // Armed at once: a waiter already asleep on the channel wakes for the
  // endpoint's first completion.
  if (options_.channel != nullptr) {
    DEMI_RETURN_IF_ERROR(ArmNotify());
  }

  DEMI_RETURN_IF_ERROR(resources_.CreateMemory(
      {.receive_buffers = options_.receive_buffers,
       .receive_buffer_size = receive_buffer_size_,
       .header_bytes =
           static_cast<size_t>(options_.send_queue_depth) * kHeaderSlotSize},
      [this](void* address, size_t length, int access) {
        return MemoryRegion::Register(options_.pd, address, length, access);
      }));

  ibv_qp_init_attr attr{};
  attr.send_cq = cq_->get();
  attr.recv_cq = cq_->get();
  attr.qp_type = IBV_QPT_UD;
  attr.sq_sig_all = 1;
  attr.cap.max_send_wr = options_.send_queue_depth;
  attr.cap.max_recv_wr = options_.receive_buffers;
  attr.cap.max_send_sge = kSgesPerSend;
  attr.cap.max_recv_sge = 1;
  attr.cap.max_inline_data = options_.max_inline_data;
  DEMI_RETURN_IF_ERROR(resources_.CreateQueuePair(*id_, options_.pd, attr));

  ++receive_posts_;
  DEMI_RETURN_IF_ERROR(resources_.PostAllReceives(
      [](uint32_t index) { return kReceiveBit | index; }));
  posted_receives_ = options_.receive_buffers;
  return absl::OkStatus();
}

absl::Status UdEndpoint::AcceptResolution(CmEvent request) {
  if (request.type() != RDMA_CM_EVENT_CONNECT_REQUEST) {
    return ErrnoError(EINVAL, "AcceptResolution needs a CONNECT_REQUEST");
  }
  CmId requester = CmId::Adopt(request.id());
  { CmEvent acknowledged = std::move(request); }
  if (!status_.ok()) {
    (void)requester.Reject(nullptr, 0);
    return status_;
  }
  // For UD, rdma_accept sends the reply (SIDR REP) at once; no further event
  // comes for this id, so it goes when this function returns.
  rdma_conn_param param{};
  param.qp_num = resources_.qp().qp_num();
  // The reply's Q_Key is rdma_cm's: RDMA_UDP_QKEY for RDMA_PS_UDP, the one
  // rdma_create_qp gave the queue pair.
  return requester.Accept(param);
}

void UdEndpoint::PostReleased() {
  const uint32_t count = static_cast<uint32_t>(releases_.size());
  if (count == 0) return;
  absl::Status posted = resources_.PostReceives(
      releases_, [](uint32_t index) { return kReceiveBit | index; });
  releases_.clear();
  ++receive_posts_;
  if (!posted.ok()) {
    Fail(posted);
    return;
  }
  posted_receives_ += count;
}

absl::Status UdEndpoint::Send(const UdDestination& destination,
                              absl::Span<const Segment> segments,
                              uint64_t cookie, bool* done_at_post) {
  if (done_at_post != nullptr) *done_at_post = false;
  if (!status_.ok()) return status_;
  if (segments.empty() || segments.size() > dw::kMaxSegments) {
    return ErrnoError(EINVAL, "a datagram has 1 to 16 segments");
  }
  if (destination.ah == nullptr) {
    return ErrnoError(EINVAL, "no address handle");
  }
  uint64_t total = 0;
  for (const Segment& segment : segments) total += segment.length;
  if (total > max_payload_) {
    return ErrnoError(EMSGSIZE,
                      absl::StrCat("datagram of ", total, " bytes; at most ",
                                   max_payload_, " fit one"));
  }
  if (posted_.full()) {
    return ErrnoError(EAGAIN, "datagram send queue full");
  }
  const uint32_t slot = posted_.SlotAfterBack(0);
  uint8_t* header_slot = resources_.header_memory() + slot * kHeaderSlotSize;
  dw::DatagramHeader header;
  header.num_segments = static_cast<uint8_t>(segments.size());
  header.source_ipv4 = local_.sin_addr.s_addr;
  header.source_port = ntohs(local_.sin_port);
  for (size_t i = 0; i < segments.size(); ++i) {
    header.segment_lengths[i] = segments[i].length;
  }
  const size_t header_size = dw::EncodeHeader(header, header_slot);

  ibv_sge sge[kSgesPerSend];
  sge[0].addr = reinterpret_cast<uintptr_t>(header_slot);
  sge[0].length = static_cast<uint32_t>(header_size);
  sge[0].lkey = resources_.header_lkey();
  for (size_t i = 0; i < segments.size(); ++i) {
    sge[i + 1].addr = reinterpret_cast<uintptr_t>(segments[i].data);
    sge[i + 1].length = segments[i].length;
    sge[i + 1].lkey = segments[i].lkey;
  }
  ibv_send_wr wr{};
  wr.wr_id = slot;
  wr.sg_list = sge;
  wr.num_sge = static_cast<int>(segments.size() + 1);
  wr.opcode = IBV_WR_SEND;
  const bool inline_data =
      FitsInline(static_cast<uint32_t>(segments.size()), total);
  if (inline_data) wr.send_flags |= IBV_SEND_INLINE;
  // Every send is signaled, even one done at post (inline: its bytes are in
  // the work request and the caller is done now): until the device has sent
  // it, the endpoint is not idle, and a closing socket waits for that.
  wr.send_flags |= IBV_SEND_SIGNALED;
  const bool done = done_at_post != nullptr && inline_data;
  wr.wr.ud.ah = destination.ah;
  wr.wr.ud.remote_qpn = destination.qp_num;
  wr.wr.ud.remote_qkey = destination.qkey;
  // A rejected post leaves the endpoint usable: nothing was posted.
  DEMI_RETURN_IF_ERROR(resources_.qp().PostSend(&wr));
  posted_.slot(slot) = PostedDatagram{.cookie = cookie, .report = !done};
  posted_.Extend(1);
  if (done) *done_at_post = true;
  ++sends_posted_;
  return absl::OkStatus();
}

absl::Status UdEndpoint::ArmNotify() { return rdma::ArmNotify(cq_->get()); }

absl::Status UdEndpoint::Poll(DatagramSink& sink) {
  if (status_.ok() && repost_.Due(releases_.size(), posted_receives_)) {
    PostReleased();
  }
  ibv_wc wc[kPollBatch];
  for (;;) {
    const int n = cq_->Poll(absl::MakeSpan(wc));
    if (n < 0) {
      Fail(CompletionQueue::PollError(n));
      break;
    }
    for (int i = 0; i < n; ++i) {
      if ((wc[i].wr_id & kReceiveBit) != 0) {
        HandleReceiveCompletion(wc[i], sink);
      } else {
        HandleSendCompletion(wc[i], sink);
      }
    }
    if (n < kPollBatch) break;
  }
  return status_;
}

void UdEndpoint::HandleSendCompletion(const ibv_wc& wc, DatagramSink& sink) {
  // Every send is signaled and a queue pair completes its sends in order.
  const uint32_t slot = static_cast<uint32_t>(wc.wr_id);
  if (posted_.empty() || slot != posted_.front_slot()) {
    DEMI_LOG(kError, "datagram send completion for slot ", slot, ", expected ",
             posted_.front_slot(), " (", posted_.size(), " posted)");
    Fail(ErrnoError(EIO, "datagram send completion out of order"));
    return;
  }
  const PostedDatagram posted = posted_.front();
  posted_.pop_front();
  ++sends_completed_;
  absl::Status status;
  if (wc.status != IBV_WC_SUCCESS) {
    status = CompletionError(wc);
    Fail(status);
  }
  if (posted.report) sink.OnSendComplete(posted.cookie, status);
}

void UdEndpoint::HandleReceiveCompletion(const ibv_wc& wc, DatagramSink& sink) {
  const auto index = static_cast<uint32_t>(wc.wr_id & ~kReceiveBit);
  if (index >= options_.receive_buffers || held_[index]) {
    Fail(ErrnoError(EIO, "receive completion for an unknown buffer"));
    return;
  }
  --posted_receives_;
  if (wc.status != IBV_WC_SUCCESS) {
    // Flushed receives of a failed endpoint; buffers are not reused.
    Fail(CompletionError(wc));
    return;
  }
  if (!status_.ok()) return;
  const uint8_t* buffer = resources_.receive_buffer(index);
  absl::StatusOr<dw::DatagramHeader> header =
      wc.byte_len < dw::kGrhSize
          ? ErrnoError(EPROTO, "datagram shorter than the GRH")
          : dw::DecodeHeader(buffer + dw::kGrhSize, wc.byte_len - dw::kGrhSize);
  // Not ours to trust, but not a reason to fail: dropped, counted, the
  // buffer posted again with the released ones.
  auto drop = [&](uint64_t& counter, absl::string_view why) {
    ++counter;
    DEMI_LOG(kDebug, "dropped a datagram: ", why);
    releases_.push_back(index);  // not held: within capacity
  };
  if (!header.ok()) return drop(malformed_, header.status().message());
  // The source address is the packet's, not the header's word for it. (A
  // packet without a network header, possible on InfiniBand within one
  // subnet, has no IPv4 source to check against.)
  const std::optional<uint32_t> wire_source =
      (wc.wc_flags & IBV_WC_GRH) != 0 ? dw::SourceIpv4FromNetworkHeader(buffer)
                                      : std::nullopt;
  if (wire_source.has_value() && *wire_source != header->source_ipv4) {
    return drop(forged_, "its header names another source than its packet");
  }
  ReceivedDatagram datagram;
  datagram.buffer_index = index;
  datagram.source.sin_family = AF_INET;
  datagram.source.sin_addr.s_addr = header->source_ipv4;
  datagram.source.sin_port = htons(header->source_port);
  datagram.source_qp = wc.src_qp;
  datagram.num_segments = header->num_segments;
  const uint8_t* data =
      buffer + dw::kGrhSize + dw::HeaderSize(header->num_segments);
  for (uint32_t i = 0; i < header->num_segments; ++i) {
    datagram.segment_data[i] = data;
    datagram.segment_lengths[i] = header->segment_lengths[i];
    data += header->segment_lengths[i];
  }
  held_[index] = 1;
  if (posted_receives_ == 0) ++receive_queue_empty_;
  sink.OnDatagram(datagram);
}

absl::Status UdEndpoint::Release(uint32_t buffer_index) {
  if (buffer_index >= options_.receive_buffers || !held_[buffer_index]) {
    return ErrnoError(
        EINVAL, absl::StrCat("receive buffer ", buffer_index, " is not held"));
  }
  held_[buffer_index] = 0;
  if (!status_.ok()) return absl::OkStatus();  // nothing to re-post for
  releases_.push_back(buffer_index);  // within capacity: each buffer once
  // A batch, or a receive queue running low (a datagram finding it empty is
  // dropped), goes at once; else at a later poll or release.
  if (repost_.Due(releases_.size(), posted_receives_)) PostReleased();
  return status_;
}

RegisteredSpan UdEndpoint::HeldBuffer(uint32_t buffer_index) const {
  RegisteredSpan span;
  if (buffer_index >= options_.receive_buffers || !held_[buffer_index]) {
    return span;
  }
  span.data = resources_.receive_buffer(buffer_index);
  span.size = receive_buffer_size_;
  span.lkey = resources_.receive_lkey();
  span.rkey = resources_.receive_rkey();
  span.pd = options_.pd;
  return span;  // registered IBV_ACCESS_LOCAL_WRITE only
}

absl::StatusOr<uint64_t> UdEndpoint::DeviceDroppedDatagrams() const {
  // Counters named by the devices that keep one; rxe has none.
  static constexpr const char* kCounters[] = {"out_of_buffer"};
  const char* device = ibv_get_device_name(id_->verbs()->device);
  for (const char* counter : kCounters) {
    std::ifstream in(absl::StrCat("/sys/class/infiniband/", device, "/ports/",
                                  port_num_, "/hw_counters/", counter));
    uint64_t value = 0;
    if (in >> value) return value;
  }
  return ErrnoError(ENOENT, absl::StrCat(device, " reports no receive drops"));
}

void UdEndpoint::Fail(absl::Status status) {
  if (status_.ok()) {
    status_ = std::move(status);
    DEMI_LOG(kInfo, "datagram endpoint failed: ", status_.message());
  }
  resources_.Flush();
}

}  // namespace demi::rdma
