#include "libos/datagram_sockets.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/address.h"

namespace demi::libos {
namespace {

// Pushes (and connects) that may wait behind one resolution.
constexpr size_t kMaxWaitingPerRoute = 1024;

// A destination: a valid IPv4 address with a port and a host.
absl::StatusOr<sockaddr_in> ParseDestination(const sockaddr* address,
                                             socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(sockaddr_in destination, ParseIpv4(address, size));
  if (destination.sin_port == 0 ||
      destination.sin_addr.s_addr == htonl(INADDR_ANY)) {
    return ErrnoError(EINVAL, "a destination needs an address and a port");
  }
  return destination;
}

bool SameAddress(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}

absl::Status NotBound() {
  return ErrnoError(EINVAL,
                    "bind a datagram socket (demi_bind) before using it");
}

}  // namespace

// Routes one datagram socket's completions to its tokens.
class DatagramSockets::QueueSink final : public rdma::DatagramSink {
 public:
  QueueSink(DatagramSockets& sockets, DatagramQueue& queue)
      : sockets_(sockets), queue_(queue) {}

  void OnSendComplete(uint64_t cookie, const absl::Status& status) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {  // called under the worker's mutex
    if (!sockets_.ctx_.FinishPush(cookie, status, queue_.closed)) return;
    ++(status.ok() ? sockets_.counters_.sent : sockets_.counters_.send_failed);
  }

  void OnDatagram(const rdma::ReceivedDatagram& datagram) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    ++sockets_.counters_.received;
    const bool unwanted =
        queue_.default_peer.has_value() && !FromPeer(datagram);
    if (queue_.closed || unwanted) {
      if (unwanted) ++sockets_.counters_.filtered;
      queue_.ReleaseArrival(datagram.buffer_index);
      return;
    }
    if (!queue_.pop_tokens.empty()) {
      demi_qtoken_t qt = queue_.pop_tokens.front();
      queue_.pop_tokens.pop_front();
      sockets_.CompletePop(queue_, qt, datagram);
    } else {
      if (!queue_.datagrams.push_back(datagram)) {
        // Cannot happen (one entry per receive buffer); never lose the
        // buffer if it does.
        DEMI_LOG(kError, "datagram arrival ring full");
        queue_.ReleaseArrival(datagram.buffer_index);
      }
    }
  }

 private:
  // Whether a datagram to a connected socket comes from its peer: the
  // address (its IPv4 part checked against the packet's GRH by the
  // endpoint) and, once the peer's route is resolved, the sending queue
  // pair: another socket of the peer's host cannot pass as the peer by
  // writing its port into the header. One comparison per datagram; the
  // route is looked up only for a queue pair not yet seen.
  bool FromPeer(const rdma::ReceivedDatagram& datagram)
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!SameAddress(*queue_.default_peer, datagram.source)) return false;
    if (datagram.source_qp == queue_.default_peer_qp) return true;
    const sockaddr_in& local = queue_.endpoint->local_address();
    auto route = sockets_.routes_.find(
        DatagramRouteKey{local.sin_addr.s_addr, datagram.source.sin_addr.s_addr,
                         datagram.source.sin_port});
    if (route == sockets_.routes_.end() || !route->second->peer.has_value()) {
      return true;  // not resolved (yet): the address is all there is
    }
    if (route->second->peer->qp_num != datagram.source_qp) return false;
    queue_.default_peer_qp = datagram.source_qp;
    return true;
  }

  DatagramSockets& sockets_;
  DatagramQueue& queue_;
};

absl::StatusOr<int> DatagramSockets::Open(int protocol) {
  if (protocol != 0 && protocol != IPPROTO_UDP) {
    return ErrnoError(ENOTSUP, absl::StrCat("protocol ", protocol));
  }
  if (!channel_.has_value()) {
    DEMI_ASSIGN_OR_RETURN(rdma::EventChannel channel,
                          rdma::EventChannel::Create());
    channel_.emplace(std::move(channel));
    // Progress rounds visit datagram sockets once there are any.
    AddProgress();
  }
  DEMI_ASSIGN_OR_RETURN(const int qd,
                        queues_.Insert(std::make_unique<DatagramQueue>()));
  queues_.Find(qd)->qd = qd;
  return qd;
}

absl::StatusOr<DatagramQueue*> DatagramSockets::Find(int qd) {
  DatagramQueue* queue = queues_.Find(qd);
  if (queue == nullptr) {
    return ErrnoError(EBADF, absl::StrCat("no datagram socket ", qd));
  }
  return queue;
}

absl::Status DatagramSockets::Bind(int qd, const sockaddr* address,
                                   socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(DatagramQueue * found, Find(qd));
  DatagramQueue& queue = *found;
  DEMI_ASSIGN_OR_RETURN(sockaddr_in local, ParseIpv4(address, size));
  if (queue.endpoint != nullptr) {
    return ErrnoError(EINVAL, "the socket is already bound");
  }
  DEMI_ASSIGN_OR_RETURN(
      rdma::CmId id,
      rdma::CmId::Create(*channel_, RDMA_PS_UDP, QdContext(queue.qd)));
  DEMI_RETURN_IF_ERROR(id.Bind(local));
  ibv_pd* pd = id.verbs() == nullptr ? nullptr : ctx_.devices.PdFor(id.verbs());
  if (pd == nullptr) {
    return ErrnoError(EADDRNOTAVAIL,
                      "a datagram socket must be bound to the address of an "
                      "RDMA interface");
  }
  rdma::UdEndpointOptions options = ctx_.options.datagram;
  options.pd = pd;
  options.channel = ctx_.completions.ChannelFor(pd);
  DEMI_ASSIGN_OR_RETURN(queue.endpoint,
                        rdma::UdEndpoint::Create(std::move(id), options));
  const uint32_t count = options.receive_buffers;
  queue.datagrams.Reset(count);
  // No flow control: a freed buffer is re-posted at once.
  queue.handles = ctx_.handles.Add(queue, count, 1, ctx_.worker,
                                   /*return_at_once=*/true);
  if (queue.handles == nullptr) {
    queue.endpoint.reset();
    return ErrnoError(ENOMEM, "no room for the socket's receive handles");
  }
  return absl::OkStatus();
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::Connect(int qd,
                                                       const sockaddr* address,
                                                       socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(DatagramQueue * found, Find(qd));
  DatagramQueue& queue = *found;
  DEMI_ASSIGN_OR_RETURN(sockaddr_in peer, ParseDestination(address, size));
  if (queue.endpoint == nullptr) return NotBound();
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        ctx_.tokens.Allocate(queue.qd, DEMI_OPC_CONNECT));
  queue.default_peer = peer;
  queue.default_peer_qp = 0;
  const sockaddr_in& local = queue.endpoint->local_address();
  const DatagramRouteKey key{local.sin_addr.s_addr, peer.sin_addr.s_addr,
                             peer.sin_port};
  PendingDatagram pending;
  pending.qt = qt;
  pending.qd = queue.qd;
  pending.connect = true;
  auto route = routes_.find(key);
  if (route != routes_.end() && route->second->peer.has_value()) {
    // A connect finds the peer as it is now: the cached destination is
    // resolved again (a process that bound the address since is found at
    // once, not after the route's age), and the token completes when that
    // answers. Pushes keep the cached handle meanwhile.
    DatagramRoute& cached = *route->second;
    if (cached.refresher != nullptr || StartRefresh(key, cached).ok()) {
      cached.refresh_connects.push_back(pending);
      return qt;
    }
    ++counters_.ah_hits;  // cannot resolve now: the cached handle serves
    CompleteConnect(qt);
    return qt;
  }
  ++counters_.ah_misses;
  AwaitRoute(key, local, queue.endpoint->pd(), pending);
  return qt;
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::PushTo(int qd,
                                                      const demi_sgarray_t* sga,
                                                      const sockaddr* address,
                                                      socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(sockaddr_in destination,
                        ParseDestination(address, size));
  DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, Find(qd));
  return Send(*queue, sga, &destination);
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::Push(int qd,
                                                    const demi_sgarray_t* sga) {
  DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, Find(qd));
  return Send(*queue, sga, nullptr);
}

absl::Status DatagramSockets::Listen(int qd, int) {
  DEMI_RETURN_IF_ERROR(Find(qd).status());
  return ErrnoError(EOPNOTSUPP, "datagram socket");
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::Accept(int qd) {
  DEMI_RETURN_IF_ERROR(Find(qd).status());
  return ErrnoError(EOPNOTSUPP, "datagram socket");
}

absl::Status DatagramSockets::SetLinger(int qd, const void*, socklen_t) {
  DEMI_RETURN_IF_ERROR(Find(qd).status());
  return ErrnoError(ENOPROTOOPT, "SO_LINGER on datagrams");
}

absl::Status DatagramSockets::GetLinger(int qd, void*, socklen_t*) {
  DEMI_RETURN_IF_ERROR(Find(qd).status());
  return ErrnoError(ENOPROTOOPT, "SO_LINGER on datagrams");
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::Send(
    DatagramQueue& queue, const demi_sgarray_t* sga,
    const sockaddr_in* destination) {
  uint64_t total = 0;
  const char* why = nullptr;
  if (int e = CheckPushArray(sga, &total, &why); e != 0) {
    return ErrnoError(e, why);
  }
  PushMemory::Buffer buffer;
  if (int e = ctx_.memory.Describe(sga->sga_buf, &buffer, &why); e != 0) {
    return ErrnoError(e, why);
  }
  if (destination == nullptr) {
    if (!queue.default_peer.has_value()) {
      return ErrnoError(EDESTADDRREQ, "push on an unconnected datagram socket");
    }
    destination = &*queue.default_peer;
  }
  if (queue.endpoint == nullptr) return NotBound();
  rdma::UdEndpoint& endpoint = *queue.endpoint;
  if (total > endpoint.max_payload()) {
    return ErrnoError(EMSGSIZE,
                      absl::StrCat("datagram of ", total, " bytes; at most ",
                                   endpoint.max_payload(), " fit one"));
  }
  // Pushes done at post leave their send slots to be reclaimed by a poll; a
  // sender whose waits find every push done never polls, so the push does it
  // once half the send queue is in use (before the route is looked up: a
  // poll may change routes).
  if (endpoint.posted_sends() >= endpoint.send_queue_depth() / 2) {
    PollQueue(queue);
  }
  const sockaddr_in& local = endpoint.local_address();
  const DatagramRouteKey key{local.sin_addr.s_addr,
                             destination->sin_addr.s_addr,
                             destination->sin_port};
  // The common small datagram to a known peer: inline, without mapping, and
  // done now (a datagram waiting for its route keeps its memory mapped).
  if (DatagramRoute* route = FindRoute(queue, key);
      route != nullptr && route->peer.has_value() && endpoint.status().ok() &&
      endpoint.FitsInline(sga->sga_numsegs, total) &&
      ctx_.memory.InlineReadable(*sga, buffer, endpoint.pd())) {
    return SendInline(queue, *sga, *route->peer);
  }
  PushRecord record;
  PendingDatagram pending;
  pending.qd = queue.qd;
  pending.num_segments = sga->sga_numsegs;
  DEMI_RETURN_IF_ERROR(
      ctx_.memory.Map(*sga, buffer, endpoint.pd(), pending.segments, &record));
  absl::StatusOr<demi_qtoken_t> allocated =
      ctx_.tokens.Allocate(queue.qd, DEMI_OPC_PUSH);
  if (!allocated.ok()) {
    ctx_.memory.Unmap(record);
    return allocated.status();
  }
  const demi_qtoken_t qt = *allocated;
  pending.qt = qt;
  if (!endpoint.status().ok()) {
    ctx_.memory.Unmap(record);
    ctx_.tokens.Fail(qt, ErrnoFromStatus(endpoint.status()));
    return qt;
  }
  DatagramRoute* route = FindRoute(queue, key);
  if (route != nullptr && route->peer.has_value()) {
    // The destination is known.
    const rdma::UdPeer& peer = *route->peer;
    bool done_at_post = false;
    absl::Status sent = endpoint.Send(
        {peer.ah.get(), peer.qp_num, peer.qkey},
        absl::MakeConstSpan(pending.segments, pending.num_segments), qt,
        &done_at_post);
    if (!sent.ok()) {
      ctx_.memory.Unmap(record);
      ctx_.tokens.Release(qt);
      return sent;
    }
    ++counters_.ah_hits;
    if (done_at_post) {
      ++counters_.sent;
      ctx_.CompletePushAtPost(qt, record);
      return qt;
    }
    ctx_.Track(qt, record);
    return qt;
  }
  if (route != nullptr && route->waiting.size() >= kMaxWaitingPerRoute) {
    ctx_.memory.Unmap(record);
    ctx_.tokens.Release(qt);
    return ErrnoError(EAGAIN, "too many pushes wait for this destination");
  }
  ++counters_.ah_misses;
  ctx_.Track(qt, record);
  AwaitRoute(key, local, endpoint.pd(), pending);
  return qt;
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::SendInline(
    DatagramQueue& queue, const demi_sgarray_t& sga, const rdma::UdPeer& peer) {
  rdma::UdEndpoint& endpoint = *queue.endpoint;
  const demi_qtoken_t qt = ctx_.tokens.TryAllocate(queue.qd, DEMI_OPC_PUSH);
  if (qt == 0) return ErrnoError(EAGAIN, "too many operations in flight");
  rdma::Segment segments[DEMI_SGARRAY_MAXSIZE];
  UnmappedSegments(sga, segments);
  bool done_at_post = false;
  absl::Status sent = endpoint.Send(
      {peer.ah.get(), peer.qp_num, peer.qkey},
      absl::MakeConstSpan(segments, sga.sga_numsegs), qt, &done_at_post);
  if (!sent.ok()) {
    ctx_.tokens.Release(qt);
    return sent;
  }
  ++counters_.ah_hits;
  ++counters_.sent;
  // FitsInline promised done at post: the segments' memory is not needed.
  ctx_.CompletePushInline(qt, sga);
  return qt;
}

absl::StatusOr<demi_qtoken_t> DatagramSockets::Pop(int qd) {
  DEMI_ASSIGN_OR_RETURN(DatagramQueue * found, Find(qd));
  DatagramQueue& queue = *found;
  if (queue.endpoint == nullptr) return NotBound();
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        ctx_.tokens.Allocate(queue.qd, DEMI_OPC_POP));
  if (!queue.datagrams.empty()) {
    const rdma::ReceivedDatagram datagram = queue.datagrams.front();
    queue.datagrams.pop_front();
    CompletePop(queue, qt, datagram);
  } else if (!queue.endpoint->status().ok()) {
    ctx_.tokens.Fail(qt, ErrnoFromStatus(queue.endpoint->status()));
  } else {
    queue.pop_tokens.push_back(qt);
  }
  return qt;
}

void DatagramSockets::CompletePop(DatagramQueue& queue, demi_qtoken_t qt,
                                  const rdma::ReceivedDatagram& datagram) {
  demi_qresult_t* result = ctx_.tokens.CompleteInPlace(qt, DEMI_OPC_POP);
  if (result == nullptr) return;
  demi_sgarray_t& sga = result->qr_value.sga;
  LendPopped(queue.handles[datagram.buffer_index], datagram.segment_data,
             datagram.segment_lengths, datagram.num_segments, &sga);
  sga.sga_addr = datagram.source;
  ++queue.held;
}

absl::Status DatagramSockets::GetPeerName(int qd, sockaddr* address,
                                          socklen_t* size) {
  DEMI_ASSIGN_OR_RETURN(DatagramQueue * found, Find(qd));
  const DatagramQueue& queue = *found;
  if (address == nullptr || size == nullptr) {
    return ErrnoError(EINVAL, "null address or size");
  }
  if (*size < static_cast<socklen_t>(sizeof(sockaddr_in))) {
    return ErrnoError(EINVAL, absl::StrCat("address size ", *size));
  }
  if (!queue.default_peer.has_value()) {
    return ErrnoError(ENOTCONN, "the datagram socket is not connected");
  }
  std::memcpy(address, &*queue.default_peer, sizeof(sockaddr_in));
  *size = sizeof(sockaddr_in);
  return absl::OkStatus();
}

void DatagramQueue::ReturnBuffer(uint32_t index) {
  --held;
  ReleaseArrival(index);
}

void DatagramQueue::ReleaseArrival(uint32_t index) {
  absl::Status released = endpoint->Release(index);
  if (!released.ok()) {
    DEMI_LOG(kWarning, "re-posting a datagram buffer: ", released.message());
  }
}

void DatagramSockets::PollQueue(DatagramQueue& queue) {
  if (queue.endpoint == nullptr) return;
  QueueSink sink(*this, queue);
  absl::Status polled = queue.endpoint->Poll(sink);
  if (!polled.ok()) {
    const int errnum = ErrnoFromStatus(polled);
    for (demi_qtoken_t qt : queue.pop_tokens) ctx_.tokens.Fail(qt, errnum);
    queue.pop_tokens.clear();
  }
}

absl::Status DatagramSockets::ArmNotify() {
  absl::Status armed = absl::OkStatus();
  auto arm = [&armed](DatagramQueue& queue) {
    if (queue.endpoint != nullptr && armed.ok()) {
      armed = queue.endpoint->ArmNotify();
    }
  };
  ForEachQueue(arm);
  return armed;
}

void DatagramSockets::AddProgress() {
  ctx_.progress.Add(
      1, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under the worker's mutex
        ForEachQueue([this](DatagramQueue& queue)
                         ABSL_NO_THREAD_SAFETY_ANALYSIS { PollQueue(queue); });
        Reap();
      });
  // As for the stream channel: a system call, so every kCmPollInterval
  // rounds.
  ctx_.progress.Add(kCmPollInterval, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    while (std::optional<rdma::CmEvent> event = channel_->TryNext()) {
      HandleEvent(std::move(*event));
    }
    if (!stale_routes_.empty()) ReapStaleRoutes();
  });
  if (ctx_.options.datagram_route_ttl > absl::ZeroDuration()) {
    ctx_.progress.Add(
        kRouteRefreshInterval,
        [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { RefreshOldRoutes(); });
  }
}

DatagramStats DatagramSockets::Statistics() const {
  DatagramStats stats = counters_;
  std::vector<const ibv_context*> devices;
  auto add = [&](const DatagramQueue& queue) {
    if (queue.endpoint == nullptr) return;
    const rdma::UdEndpoint& endpoint = *queue.endpoint;
    stats.malformed += endpoint.malformed();
    stats.forged += endpoint.forged();
    stats.receive_queue_empty += endpoint.receive_queue_empty();
    if (stats.max_payload == 0 || endpoint.max_payload() < stats.max_payload) {
      stats.max_payload = endpoint.max_payload();
    }
    // The device counter is per device (port): read it once per device.
    const ibv_context* device = endpoint.device();
    if (std::find(devices.begin(), devices.end(), device) != devices.end()) {
      return;
    }
    devices.push_back(device);
    absl::StatusOr<uint64_t> dropped = endpoint.DeviceDroppedDatagrams();
    if (dropped.ok()) {
      stats.device_dropped += *dropped;
      stats.device_drops_reported = true;
    }
  };
  ForEachQueue(add);
  for (const auto& [key, route] : routes_) {
    if (route->peer.has_value()) ++stats.ah_entries;
  }
  stats.ah_stale = stale_routes_.size();
  return stats;
}

}  // namespace demi::libos
