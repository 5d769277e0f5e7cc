// Datagram sockets (SOCK_DGRAM) on unreliable-datagram queue pairs: the
// LibOS member functions behind demi_socket(SOCK_DGRAM), demi_bind,
// demi_connect, demi_pushto, demi_push, demi_pop and demi_close for them.
// See DESIGN.md, "Datagram sockets".

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
#include "libos/libos.h"

namespace demi::libos {
namespace {

// Pushes (and connects) that may wait behind one resolution.
constexpr size_t kMaxWaitingPerRoute = 1024;

void* QdContext(int qd) {
  return reinterpret_cast<void*>(static_cast<intptr_t>(qd));
}

int QdOf(const rdma_cm_id* id) {
  return id == nullptr
             ? 0
             : static_cast<int>(reinterpret_cast<intptr_t>(id->context));
}

absl::StatusOr<sockaddr_in> ParseIpv4(const sockaddr* address, socklen_t size) {
  if (address == nullptr) return ErrnoError(EINVAL, "null address");
  if (size < static_cast<socklen_t>(sizeof(sockaddr_in))) {
    return ErrnoError(EINVAL, absl::StrCat("address size ", size));
  }
  if (address->sa_family != AF_INET) {
    return ErrnoError(EINVAL, "only AF_INET addresses are supported");
  }
  sockaddr_in ipv4;
  std::memcpy(&ipv4, address, sizeof(ipv4));
  return ipv4;
}

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

// The destination a route leads to.
sockaddr_in DestinationOf(const DatagramRouteKey& key) {
  sockaddr_in destination{};
  destination.sin_family = AF_INET;
  destination.sin_addr.s_addr = key.ipv4;
  destination.sin_port = key.port;
  return destination;
}

absl::Status NotBound() {
  return ErrnoError(EINVAL,
                    "bind a datagram socket (demi_bind) before using it");
}

}  // namespace

// Routes one datagram socket's completions to its tokens.
class LibOS::DatagramQueueSink final : public rdma::DatagramSink {
 public:
  DatagramQueueSink(LibOS& os, DatagramQueue& queue) : os_(os), queue_(queue) {}

  void OnSendComplete(uint64_t cookie, const absl::Status& status) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {  // called under os_.mu_
    if (os_.pushes_.Find(cookie) == nullptr) return;
    demi_qresult_t result{};
    result.qr_opcode = status.ok() ? DEMI_OPC_PUSH : DEMI_OPC_FAILED;
    result.qr_ret = status.ok()     ? 0
                    : queue_.closed ? ECANCELED
                                    : ErrnoFromStatus(status);
    ++(status.ok() ? os_.datagram_counters_.sent
                   : os_.datagram_counters_.send_failed);
    os_.FinishPush(cookie, result);
  }

  void OnDatagram(const rdma::ReceivedDatagram& datagram) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    ++os_.datagram_counters_.received;
    const bool unwanted = queue_.default_peer.has_value() &&
                          !SameAddress(*queue_.default_peer, datagram.source);
    if (queue_.closed || unwanted) {
      if (unwanted) ++os_.datagram_counters_.filtered;
      (void)queue_.endpoint->Release(datagram.buffer_index);
      return;
    }
    if (!queue_.pop_tokens.empty()) {
      demi_qtoken_t qt = queue_.pop_tokens.front();
      queue_.pop_tokens.pop_front();
      os_.CompleteDatagramPop(queue_, qt, datagram);
    } else {
      if (!queue_.datagrams.Push(datagram)) {
        // Cannot happen (one entry per receive buffer); never lose the
        // buffer if it does.
        DEMI_LOG(kError, "datagram arrival ring full");
        (void)queue_.endpoint->Release(datagram.buffer_index);
      }
    }
  }

 private:
  LibOS& os_;
  DatagramQueue& queue_;
};

absl::StatusOr<int> LibOS::DatagramSocket(int protocol) {
  if (protocol != 0 && protocol != IPPROTO_UDP) {
    return ErrnoError(ENOTSUP, absl::StrCat("protocol ", protocol));
  }
  demi::MutexLock lock(&mu_);
  if (!datagram_channel_.has_value()) {
    DEMI_ASSIGN_OR_RETURN(rdma::EventChannel channel,
                          rdma::EventChannel::Create());
    datagram_channel_.emplace(std::move(channel));
    // Progress rounds visit datagram sockets once there are any.
    AddDatagramProgress();
  }
  DEMI_ASSIGN_OR_RETURN(
      const int qd, datagram_queues_.Insert(std::make_unique<DatagramQueue>()));
  datagram_queues_.Find(qd)->qd = qd;
  return qd;
}

absl::Status LibOS::DatagramBind(DatagramQueue& queue, const sockaddr* address,
                                 socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(sockaddr_in local, ParseIpv4(address, size));
  if (queue.endpoint != nullptr) {
    return ErrnoError(EINVAL, "the socket is already bound");
  }
  DEMI_ASSIGN_OR_RETURN(
      rdma::CmId id,
      rdma::CmId::Create(*datagram_channel_, RDMA_PS_UDP, QdContext(queue.qd)));
  DEMI_RETURN_IF_ERROR(id.Bind(local));
  ibv_pd* pd = id.verbs() == nullptr ? nullptr : devices_->PdFor(id.verbs());
  if (pd == nullptr) {
    return ErrnoError(EADDRNOTAVAIL,
                      "a datagram socket must be bound to the address of an "
                      "RDMA interface");
  }
  rdma::UdEndpointOptions options = options_.datagram;
  options.pd = pd;
  DEMI_ASSIGN_OR_RETURN(queue.endpoint,
                        rdma::UdEndpoint::Create(std::move(id), options));
  const uint32_t count = options.receive_buffers;
  queue.datagrams.Reserve(count);
  queue.handles = handles_.Add(queue, count);
  if (queue.handles == nullptr) {
    queue.endpoint.reset();
    return ErrnoError(ENOMEM, "no room for the socket's receive handles");
  }
  return absl::OkStatus();
}

absl::StatusOr<demi_qtoken_t> LibOS::DatagramConnect(DatagramQueue& queue,
                                                     const sockaddr* address,
                                                     socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(sockaddr_in peer, ParseDestination(address, size));
  if (queue.endpoint == nullptr) return NotBound();
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        tokens_.Allocate(queue.qd, DEMI_OPC_CONNECT));
  queue.default_peer = peer;
  const sockaddr_in& local = queue.endpoint->local_address();
  const DatagramRouteKey key{local.sin_addr.s_addr, peer.sin_addr.s_addr,
                             peer.sin_port};
  auto route = routes_.find(key);
  if (route != routes_.end() && route->second->peer.has_value()) {
    ++datagram_counters_.ah_hits;
    demi_qresult_t result{};
    result.qr_opcode = DEMI_OPC_CONNECT;
    (void)tokens_.Complete(qt, result);
    return qt;
  }
  ++datagram_counters_.ah_misses;
  PendingDatagram pending;
  pending.qt = qt;
  pending.qd = queue.qd;
  pending.connect = true;
  AwaitRoute(key, local, queue.endpoint->pd(), pending);
  return qt;
}

absl::StatusOr<demi_qtoken_t> LibOS::PushTo(int qd, const demi_sgarray_t* sga,
                                            const sockaddr* address,
                                            socklen_t size) {
  {
    demi::MutexLock lock(&mu_);
    if (IsDatagram(qd)) {
      DEMI_ASSIGN_OR_RETURN(sockaddr_in destination,
                            ParseDestination(address, size));
      DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, FindDatagram(qd));
      return DatagramPush(*queue, sga, &destination);
    }
  }
  // A connection-mode socket ignores the address (as POSIX sendto does);
  // it must still be one.
  DEMI_RETURN_IF_ERROR(ParseIpv4(address, size).status());
  return Push(qd, sga);
}

absl::StatusOr<demi_qtoken_t> LibOS::DatagramPush(
    DatagramQueue& queue, const demi_sgarray_t* sga,
    const sockaddr_in* destination) {
  DEMI_ASSIGN_OR_RETURN(const uint64_t total, CheckPushArray(sga));
  DEMI_ASSIGN_OR_RETURN(const PushMemory::Buffer buffer,
                        memory_->Identify(sga->sga_buf));
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
  PushRecord record;
  PendingDatagram pending;
  pending.qd = queue.qd;
  pending.num_segments = sga->sga_numsegs;
  DEMI_RETURN_IF_ERROR(memory_->Map(*sga, buffer, endpoint.pd(),
                                    /*remote_read=*/false, pending.segments,
                                    &record));
  absl::StatusOr<demi_qtoken_t> allocated =
      tokens_.Allocate(queue.qd, DEMI_OPC_PUSH);
  if (!allocated.ok()) {
    memory_->Unmap(record);
    return allocated.status();
  }
  const demi_qtoken_t qt = *allocated;
  pending.qt = qt;
  if (!endpoint.status().ok()) {
    memory_->Unmap(record);
    (void)tokens_.Fail(qt, ErrnoFromStatus(endpoint.status()));
    return qt;
  }
  const sockaddr_in& local = endpoint.local_address();
  const DatagramRouteKey key{local.sin_addr.s_addr,
                             destination->sin_addr.s_addr,
                             destination->sin_port};
  auto route = routes_.find(key);
  if (route != routes_.end() && route->second->peer.has_value()) {
    // The hot path: the destination is known.
    const rdma::UdPeer& peer = *route->second->peer;
    // Pushes done at post leave their send slots to be reclaimed by a poll;
    // a sender whose waits find every push done never polls, so the push
    // does it once half the send queue is in use.
    if (endpoint.posted_sends() >= endpoint.send_queue_depth() / 2) {
      PollDatagramQueue(queue);
    }
    bool done_at_post = false;
    absl::Status sent = endpoint.Send(
        {peer.ah.get(), peer.qp_num, peer.qkey},
        absl::MakeConstSpan(pending.segments, pending.num_segments), qt,
        &done_at_post);
    if (!sent.ok()) {
      memory_->Unmap(record);
      (void)tokens_.Release(qt);
      return sent;
    }
    ++datagram_counters_.ah_hits;
    if (done_at_post) {
      ++datagram_counters_.sent;
      CompletePushAtPost(qt, record);
      return qt;
    }
    memory_->Started(record);
    pushes_.Insert(qt, record);
    return qt;
  }
  if (route != routes_.end() &&
      route->second->waiting.size() >= kMaxWaitingPerRoute) {
    memory_->Unmap(record);
    (void)tokens_.Release(qt);
    return ErrnoError(EAGAIN, "too many pushes wait for this destination");
  }
  ++datagram_counters_.ah_misses;
  memory_->Started(record);
  pushes_.Insert(qt, record);
  AwaitRoute(key, local, endpoint.pd(), pending);
  return qt;
}

void LibOS::AwaitRoute(const DatagramRouteKey& key, const sockaddr_in& local,
                       ibv_pd* pd, const PendingDatagram& pending) {
  auto [it, inserted] = routes_.try_emplace(key);
  if (inserted) {
    absl::StatusOr<std::unique_ptr<rdma::UdResolver>> resolver =
        rdma::UdResolver::Start(*datagram_channel_, local, DestinationOf(key),
                                pd, options_.resolve_timeout);
    if (!resolver.ok()) {
      routes_.erase(it);
      ++datagram_counters_.resolution_failures;
      FailPendingDatagram(pending, ErrnoFromStatus(resolver.status()));
      return;
    }
    it->second = std::make_unique<DatagramRoute>();
    it->second->resolver = std::move(*resolver);
    resolving_[it->second->resolver->id()] = key;
  }
  it->second->waiting.push_back(pending);
}

void LibOS::FailPendingDatagram(const PendingDatagram& pending, int errnum) {
  demi_qresult_t result{};
  result.qr_opcode = DEMI_OPC_FAILED;
  result.qr_ret = errnum;
  if (PushRecord* push = pushes_.Find(pending.qt)) {
    // The application gets its array back, as with any finished push.
    result.qr_value.sga = push->sga;
    memory_->Finished(*push);
    pushes_.Erase(pending.qt);
    ++datagram_counters_.send_failed;
  }
  (void)tokens_.Complete(pending.qt, result);
}

void LibOS::RouteResolved(DatagramRoute& route) {
  const rdma::UdPeer& peer = *route.peer;
  std::vector<PendingDatagram> waiting = std::move(route.waiting);
  route.waiting.clear();
  for (const PendingDatagram& pending : waiting) {
    DatagramQueue* queue = datagram_queues_.Find(pending.qd);
    if (queue == nullptr) {
      FailPendingDatagram(pending, ECANCELED);  // closed meanwhile
      continue;
    }
    if (pending.connect) {
      demi_qresult_t result{};
      result.qr_opcode = DEMI_OPC_CONNECT;
      (void)tokens_.Complete(pending.qt, result);
      continue;
    }
    absl::Status sent = queue->endpoint->Send(
        {peer.ah.get(), peer.qp_num, peer.qkey},
        absl::MakeConstSpan(pending.segments, pending.num_segments),
        pending.qt);
    if (!sent.ok()) {
      // No room now is the datagram equivalent of a full device queue.
      const int errnum = ErrnoFromStatus(sent);
      FailPendingDatagram(pending, errnum == EAGAIN ? ENOBUFS : errnum);
    }
  }
}

void LibOS::HandleDatagramEvent(rdma::CmEvent event) {
  if (event.type() == RDMA_CM_EVENT_CONNECT_REQUEST) {
    // A peer resolving one of our sockets.
    DatagramQueue* queue = datagram_queues_.Find(QdOf(event.listen_id()));
    if (queue == nullptr || queue->endpoint == nullptr) {
      rdma::CmId::RejectRequest(std::move(event));
      return;
    }
    absl::Status accepted = queue->endpoint->AcceptResolution(std::move(event));
    if (!accepted.ok()) {
      DEMI_LOG(kWarning,
               "answering a datagram resolution: ", accepted.message());
    }
    return;
  }
  auto resolving = resolving_.find(event.id());
  if (resolving == resolving_.end()) return;  // acknowledged, nothing waits
  const DatagramRouteKey key = resolving->second;
  auto it = routes_.find(key);
  DatagramRoute* route = it == routes_.end() ? nullptr : it->second.get();
  const bool refresh = route != nullptr && route->refresher != nullptr &&
                       route->refresher->id() == event.id();
  if (route == nullptr || (!refresh && (route->resolver == nullptr ||
                                        route->resolver->id() != event.id()))) {
    resolving_.erase(resolving);
    return;
  }
  rdma::UdResolver& resolver = refresh ? *route->refresher : *route->resolver;
  absl::StatusOr<std::optional<rdma::UdPeer>> peer =
      resolver.OnEvent(std::move(event));
  if (peer.ok() && !peer->has_value()) return;  // more steps to come
  resolving_.erase(resolving);
  if (refresh) {
    RouteRefreshed(key, peer.ok()
                            ? absl::StatusOr<rdma::UdPeer>(std::move(**peer))
                            : absl::StatusOr<rdma::UdPeer>(peer.status()));
    return;
  }
  if (!peer.ok()) {
    DEMI_LOG(kInfo, peer.status().message());
    ++datagram_counters_.resolution_failures;
    const int errnum = ErrnoFromStatus(peer.status());
    std::unique_ptr<DatagramRoute> failed = std::move(it->second);
    routes_.erase(it);  // not cached: the next push tries again
    for (const PendingDatagram& pending : failed->waiting) {
      FailPendingDatagram(pending, errnum);
    }
    return;
  }
  route->peer.emplace(std::move(**peer));
  route->resolved_at = absl::Now();
  route->resolver.reset();
  RouteResolved(*route);
}

void LibOS::RefreshOldRoutes() {
  const absl::Time now = absl::Now();
  for (auto& [key, route] : routes_) {
    if (!route->peer.has_value() || route->refresher != nullptr ||
        now - route->resolved_at < options_.datagram_route_ttl) {
      continue;
    }
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = key.local_ipv4;
    absl::StatusOr<std::unique_ptr<rdma::UdResolver>> refresher =
        rdma::UdResolver::Start(*datagram_channel_, local, DestinationOf(key),
                                route->peer->ah.get()->pd,
                                options_.resolve_timeout);
    if (!refresher.ok()) {
      // Out of rdma_cm resources, say: the old handle stays; try later.
      DEMI_LOG(kInfo,
               "refreshing a datagram route: ", refresher.status().message());
      route->resolved_at = now;
      continue;
    }
    route->refresher = std::move(*refresher);
    resolving_[route->refresher->id()] = key;
  }
}

void LibOS::RouteRefreshed(const DatagramRouteKey& key,
                           absl::StatusOr<rdma::UdPeer> peer) {
  auto it = routes_.find(key);
  if (it == routes_.end()) return;
  DatagramRoute& route = *it->second;
  route.refresher.reset();
  if (!peer.ok()) {
    // Nobody answers there now (or not in time): forget the destination,
    // so the next push resolves it and reports what it finds.
    DEMI_LOG(kInfo, "dropping a cached datagram destination: ",
             peer.status().message());
    ++datagram_counters_.route_drops;
    std::unique_ptr<DatagramRoute> dropped = std::move(it->second);
    routes_.erase(it);
    RetireRoute(std::move(dropped));
    return;
  }
  ++datagram_counters_.route_refreshes;
  route.resolved_at = absl::Now();
  if (peer->qp_num == route.peer->qp_num && peer->qkey == route.peer->qkey) {
    return;  // the same queue pair: keep the handle sends already use
  }
  ++datagram_counters_.route_changes;
  auto old = std::make_unique<DatagramRoute>();
  old->peer.emplace(std::move(*route.peer));
  route.peer.emplace(std::move(*peer));
  RetireRoute(std::move(old));
}

void LibOS::RetireRoute(std::unique_ptr<DatagramRoute> route) {
  if (route->refresher != nullptr) {
    resolving_.erase(route->refresher->id());
    route->refresher.reset();
  }
  stale_routes_.push_back(std::move(route));
}

absl::StatusOr<demi_qtoken_t> LibOS::DatagramPop(DatagramQueue& queue) {
  if (queue.endpoint == nullptr) return NotBound();
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        tokens_.Allocate(queue.qd, DEMI_OPC_POP));
  if (!queue.datagrams.empty()) {
    const rdma::ReceivedDatagram datagram = queue.datagrams.Pop();
    CompleteDatagramPop(queue, qt, datagram);
  } else if (!queue.endpoint->status().ok()) {
    (void)tokens_.Fail(qt, ErrnoFromStatus(queue.endpoint->status()));
  } else {
    queue.pop_tokens.push_back(qt);
  }
  return qt;
}

void LibOS::CompleteDatagramPop(DatagramQueue& queue, demi_qtoken_t qt,
                                const rdma::ReceivedDatagram& datagram) {
  demi_qresult_t* result = tokens_.CompleteInPlace(qt, DEMI_OPC_POP);
  if (result == nullptr) return;
  demi_sgarray_t& sga = result->qr_value.sga;
  LendPopped(queue.handles[datagram.buffer_index], datagram.segment_data,
             datagram.segment_lengths, datagram.num_segments, &sga);
  sga.sga_addr = datagram.source;
  ++queue.held;
}

absl::Status LibOS::DatagramGetPeerName(const DatagramQueue& queue,
                                        sockaddr* address, socklen_t* size) {
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
  absl::Status released = endpoint->Release(index);
  if (!released.ok()) {
    DEMI_LOG(kWarning, "re-posting a datagram buffer: ", released.message());
  }
}

absl::Status LibOS::DatagramClose(int qd) {
  std::unique_ptr<DatagramQueue> queue = datagram_queues_.Take(qd);
  if (queue == nullptr) {
    return ErrnoError(EBADF, absl::StrCat("no datagram socket ", qd));
  }
  queue->closed = true;
  // Pushes and connects waiting for a resolution never started: cancel them.
  for (auto& [key, route] : routes_) {
    auto& waiting = route->waiting;
    auto mine = std::stable_partition(
        waiting.begin(), waiting.end(),
        [qd](const PendingDatagram& pending) { return pending.qd != qd; });
    std::vector<PendingDatagram> cancelled(mine, waiting.end());
    waiting.erase(mine, waiting.end());
    for (const PendingDatagram& pending : cancelled) {
      FailPendingDatagram(pending, ECANCELED);
    }
  }
  // Pops too. Posted pushes complete (ECANCELED) once the device is done.
  for (demi_qtoken_t qt : queue->pop_tokens) (void)tokens_.Fail(qt, ECANCELED);
  queue->pop_tokens.clear();
  if (queue->endpoint != nullptr) {
    while (!queue->datagrams.empty()) {
      (void)queue->endpoint->Release(queue->datagrams.Pop().buffer_index);
    }
    // Cached routes to this socket name a queue pair that is going away; a
    // socket bound to the address later gets resolved anew. The handles may
    // still be in posted sends, so they are kept until the LibOS goes.
    const sockaddr_in& local = queue->endpoint->local_address();
    for (auto route = routes_.begin(); route != routes_.end();) {
      auto current = route++;
      if (current->first.ipv4 == local.sin_addr.s_addr &&
          current->first.port == local.sin_port &&
          current->second->peer.has_value()) {
        std::unique_ptr<DatagramRoute> closed = std::move(current->second);
        routes_.erase(current);
        RetireRoute(std::move(closed));
      }
    }
  }
  datagram_retired_.push_back(std::move(queue));
  ReapDatagramQueues();
  return absl::OkStatus();
}

void LibOS::ReapRetiredDatagramQueues() {
  for (size_t i = 0; i < datagram_retired_.size();) {
    DatagramQueue& queue = *datagram_retired_[i];
    if (queue.held > 0 ||
        (queue.endpoint != nullptr && !queue.endpoint->idle())) {
      ++i;
      continue;
    }
    if (queue.endpoint != nullptr) {
      datagram_counters_.malformed += queue.endpoint->malformed();
      datagram_counters_.receive_queue_empty +=
          queue.endpoint->receive_queue_empty();
    }
    handles_.Remove(queue.handles);
    datagram_retired_[i] = std::move(datagram_retired_.back());
    datagram_retired_.pop_back();
  }
}

void LibOS::PollDatagramQueue(DatagramQueue& queue) {
  if (queue.endpoint == nullptr) return;
  DatagramQueueSink sink(*this, queue);
  absl::Status polled = queue.endpoint->Poll(sink);
  if (!polled.ok()) {
    const int errnum = ErrnoFromStatus(polled);
    for (demi_qtoken_t qt : queue.pop_tokens) (void)tokens_.Fail(qt, errnum);
    queue.pop_tokens.clear();
  }
}

void LibOS::AddDatagramProgress() {
  progress_.Add(1, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under mu_
    datagram_queues_.ForEach(
        [this](int, DatagramQueue& queue)
            ABSL_NO_THREAD_SAFETY_ANALYSIS { PollDatagramQueue(queue); });
    for (auto& queue : datagram_retired_) PollDatagramQueue(*queue);
    ReapDatagramQueues();
  });
  // As for the stream channel: a system call, so every kCmPollInterval
  // rounds.
  progress_.Add(kCmPollInterval, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    while (std::optional<rdma::CmEvent> event = datagram_channel_->TryNext()) {
      HandleDatagramEvent(std::move(*event));
    }
  });
  if (options_.datagram_route_ttl > absl::ZeroDuration()) {
    progress_.Add(kRouteRefreshInterval,
                  [this]()
                      ABSL_NO_THREAD_SAFETY_ANALYSIS { RefreshOldRoutes(); });
  }
}

DatagramStats LibOS::DatagramStatistics() const {
  demi::MutexLock lock(&mu_);
  DatagramStats stats = datagram_counters_;
  std::vector<const ibv_context*> devices;
  auto add = [&](const DatagramQueue& queue) {
    if (queue.endpoint == nullptr) return;
    const rdma::UdEndpoint& endpoint = *queue.endpoint;
    stats.malformed += endpoint.malformed();
    stats.receive_queue_empty += endpoint.receive_queue_empty();
    if (stats.max_payload == 0 || endpoint.max_payload() < stats.max_payload) {
      stats.max_payload = endpoint.max_payload();
    }
    // The device counter is per device (port): read it once per device.
    const ibv_context* device = endpoint.pd()->context;
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
  datagram_queues_.ForEach(
      [&](int, const DatagramQueue& queue) { add(queue); });
  for (const auto& queue : datagram_retired_) add(*queue);
  for (const auto& [key, route] : routes_) {
    if (route->peer.has_value()) ++stats.ah_entries;
  }
  return stats;
}

}  // namespace demi::libos
