// DatagramSockets, routes: finding and awaiting a destination's route, its
// resolution through rdma_cm, the background refresh, and retiring routes
// no send uses any more.

#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/address.h"
#include "libos/datagram_sockets.h"

namespace demi::libos {

DatagramRoute* DatagramSockets::FindRoute(DatagramQueue& queue,
                                          const DatagramRouteKey& key) {
  if (queue.last_route != nullptr && queue.last_route_epoch == routes_epoch_ &&
      queue.last_route_key == key) {
    return queue.last_route;
  }
  auto it = routes_.find(key);
  if (it == routes_.end()) return nullptr;
  queue.last_route_key = key;
  queue.last_route = it->second.get();
  queue.last_route_epoch = routes_epoch_;
  return queue.last_route;
}

void DatagramSockets::EraseRoute(
    absl::flat_hash_map<DatagramRouteKey,
                        std::unique_ptr<DatagramRoute>>::iterator it) {
  routes_.erase(it);
  ++routes_epoch_;
}

void DatagramSockets::AwaitRoute(const DatagramRouteKey& key,
                                 const sockaddr_in& local, ibv_pd* pd,
                                 const PendingDatagram& pending) {
  auto [it, inserted] = routes_.try_emplace(key);
  if (inserted) {
    absl::StatusOr<std::unique_ptr<rdma::UdResolver>> resolver =
        rdma::UdResolver::Start(*channel_, local, DestinationOf(key), pd,
                                ctx_.options.resolve_timeout);
    if (!resolver.ok()) {
      EraseRoute(it);
      ++counters_.resolution_failures;
      FailPending(pending, ErrnoFromStatus(resolver.status()));
      return;
    }
    it->second = std::make_unique<DatagramRoute>();
    it->second->resolver = std::move(*resolver);
    resolving_[it->second->resolver->id()] = key;
  }
  it->second->waiting.push_back(pending);
}

void DatagramSockets::CompleteConnect(demi_qtoken_t qt) {
  demi_qresult_t result{};
  result.qr_opcode = DEMI_OPC_CONNECT;
  ctx_.tokens.Complete(qt, result);
}

void DatagramSockets::FailPending(const PendingDatagram& pending, int errnum) {
  demi_qresult_t result{};
  result.qr_opcode = DEMI_OPC_FAILED;
  result.qr_ret = errnum;
  if (PushRecord* push = ctx_.pushes.Find(pending.qt)) {
    // The application gets its array back, as with any finished push.
    result.qr_value.sga = push->sga;
    ctx_.memory.Finished(*push);
    ctx_.pushes.Erase(pending.qt);
    ++counters_.send_failed;
  }
  ctx_.tokens.Complete(pending.qt, result);
}

void DatagramSockets::RouteResolved(DatagramRoute& route) {
  const rdma::UdPeer& peer = *route.peer;
  std::vector<PendingDatagram> waiting = std::move(route.waiting);
  route.waiting.clear();
  for (const PendingDatagram& pending : waiting) {
    DatagramQueue* queue = queues_.Find(pending.qd);
    if (queue == nullptr) {
      FailPending(pending, ECANCELED);  // closed meanwhile
      continue;
    }
    if (pending.connect) {
      CompleteConnect(pending.qt);
      continue;
    }
    absl::Status sent = queue->endpoint->Send(
        {peer.ah.get(), peer.qp_num, peer.qkey},
        absl::MakeConstSpan(pending.segments, pending.num_segments),
        pending.qt);
    if (!sent.ok()) {
      // No room now is the datagram equivalent of a full device queue.
      const int errnum = ErrnoFromStatus(sent);
      FailPending(pending, errnum == EAGAIN ? ENOBUFS : errnum);
    }
  }
}

void DatagramSockets::HandleEvent(rdma::CmEvent event) {
  if (event.type() == RDMA_CM_EVENT_CONNECT_REQUEST) {
    // A peer resolving one of our sockets.
    DatagramQueue* queue = queues_.Find(QdOf(event.listen_context()));
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
    ++counters_.resolution_failures;
    const int errnum = ErrnoFromStatus(peer.status());
    std::unique_ptr<DatagramRoute> failed = std::move(it->second);
    EraseRoute(it);  // not cached: the next push tries again
    for (const PendingDatagram& pending : failed->waiting) {
      FailPending(pending, errnum);
    }
    return;
  }
  route->peer.emplace(std::move(**peer));
  route->resolved_at = absl::Now();
  route->resolver.reset();
  RouteResolved(*route);
}

absl::Status DatagramSockets::StartRefresh(const DatagramRouteKey& key,
                                           DatagramRoute& route) {
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = key.local_ipv4;
  DEMI_ASSIGN_OR_RETURN(
      route.refresher,
      rdma::UdResolver::Start(*channel_, local, DestinationOf(key),
                              route.peer->ah.get()->pd,
                              ctx_.options.resolve_timeout));
  resolving_[route.refresher->id()] = key;
  return absl::OkStatus();
}

void DatagramSockets::RefreshOldRoutes() {
  const absl::Time now = absl::Now();
  for (auto& [key, route] : routes_) {
    if (!route->peer.has_value() || route->refresher != nullptr ||
        now - route->resolved_at < ctx_.options.datagram_route_ttl) {
      continue;
    }
    if (absl::Status started = StartRefresh(key, *route); !started.ok()) {
      // Out of rdma_cm resources, say: the old handle stays; try later.
      DEMI_LOG(kInfo, "refreshing a datagram route: ", started.message());
      route->resolved_at = now;
    }
  }
}

void DatagramSockets::FinishRefreshConnects(DatagramRoute& route, int errnum) {
  std::vector<PendingDatagram> connects = std::move(route.refresh_connects);
  route.refresh_connects.clear();
  for (const PendingDatagram& pending : connects) {
    if (errnum != 0) {
      FailPending(pending, errnum);
    } else {
      CompleteConnect(pending.qt);
    }
  }
}

void DatagramSockets::RouteRefreshed(const DatagramRouteKey& key,
                                     absl::StatusOr<rdma::UdPeer> peer) {
  auto it = routes_.find(key);
  if (it == routes_.end()) return;
  DatagramRoute& route = *it->second;
  route.refresher.reset();
  FinishRefreshConnects(route, peer.ok() ? 0 : ErrnoFromStatus(peer.status()));
  if (!peer.ok()) {
    // Nobody answers there now (or not in time): forget the destination,
    // so the next push resolves it and reports what it finds.
    DEMI_LOG(kInfo, "dropping a cached datagram destination: ",
             peer.status().message());
    ++counters_.route_drops;
    std::unique_ptr<DatagramRoute> dropped = std::move(it->second);
    EraseRoute(it);
    RetireRoute(std::move(dropped));
    return;
  }
  ++counters_.route_refreshes;
  route.resolved_at = absl::Now();
  if (peer->qp_num == route.peer->qp_num && peer->qkey == route.peer->qkey) {
    return;  // the same queue pair: keep the handle sends already use
  }
  ++counters_.route_changes;
  auto old = std::make_unique<DatagramRoute>();
  old->peer.emplace(std::move(*route.peer));
  route.peer.emplace(std::move(*peer));
  RetireRoute(std::move(old));
}

void DatagramSockets::RetireRoute(std::unique_ptr<DatagramRoute> route) {
  // A refresh that stops: its connects had the cached destination.
  FinishRefreshConnects(*route, 0);
  if (route->refresher != nullptr) {
    resolving_.erase(route->refresher->id());
    route->refresher.reset();
  }
  // Its handle may be in sends posted so far, by any socket.
  route->sends_before.clear();
  auto note = [&route](const DatagramQueue& queue) {
    if (queue.endpoint != nullptr && !queue.endpoint->idle()) {
      route->sends_before.emplace_back(queue.endpoint.get(),
                                       queue.endpoint->sends_posted());
    }
  };
  ForEachQueue(note);
  stale_routes_.push_back(std::move(route));
}

void DatagramSockets::ReapStaleRoutes() {
  // An endpoint that is gone has completed all its sends (a closed socket
  // is destroyed only once idle).
  auto completed = [this](const rdma::UdEndpoint* endpoint, uint64_t sends) {
    const rdma::UdEndpoint* found = nullptr;
    auto match = [&](const DatagramQueue& queue) {
      if (queue.endpoint.get() == endpoint) found = endpoint;
    };
    ForEachQueue(match);
    return found == nullptr || found->sends_completed() >= sends;
  };
  for (size_t i = 0; i < stale_routes_.size();) {
    const auto& waits = stale_routes_[i]->sends_before;
    if (!std::all_of(waits.begin(), waits.end(), [&](const auto& wait) {
          return completed(wait.first, wait.second);
        })) {
      ++i;
      continue;
    }
    stale_routes_[i] = std::move(stale_routes_.back());
    stale_routes_.pop_back();
  }
}

}  // namespace demi::libos
