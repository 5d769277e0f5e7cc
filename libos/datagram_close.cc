// DatagramSockets, closing: demi_close of a datagram socket (what waits for
// it is cancelled, routes to it retired) and the reaping of closed sockets
// once their posted sends are done.

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "libos/datagram_sockets.h"

namespace demi::libos {

absl::Status DatagramSockets::Close(int qd, Linger* /*linger*/) {
  std::unique_ptr<DatagramQueue> queue = queues_.Take(qd);
  if (queue == nullptr) {
    return ErrnoError(EBADF, absl::StrCat("no datagram socket ", qd));
  }
  queue->closed = true;
  // Pushes and connects waiting for a resolution never started: cancel them.
  for (auto& [key, route] : routes_) {
    for (auto* waiting : {&route->waiting, &route->refresh_connects}) {
      auto mine = std::stable_partition(
          waiting->begin(), waiting->end(),
          [qd](const PendingDatagram& pending) { return pending.qd != qd; });
      std::vector<PendingDatagram> cancelled(mine, waiting->end());
      waiting->erase(mine, waiting->end());
      for (const PendingDatagram& pending : cancelled) {
        FailPending(pending, ECANCELED);
      }
    }
  }
  // Pops too. Posted pushes complete (ECANCELED) once the device is done.
  for (demi_qtoken_t qt : queue->pop_tokens) ctx_.tokens.Fail(qt, ECANCELED);
  queue->pop_tokens.clear();
  if (queue->endpoint != nullptr) {
    while (!queue->datagrams.empty()) {
      queue->ReleaseArrival(queue->datagrams.front().buffer_index);
      queue->datagrams.pop_front();
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
        EraseRoute(current);
        RetireRoute(std::move(closed));
      }
    }
  }
  retired_.push_back(std::move(queue));
  Reap();
  return absl::OkStatus();
}

void DatagramSockets::ReapRetired() {
  for (size_t i = 0; i < retired_.size();) {
    DatagramQueue& queue = *retired_[i];
    if (queue.held > 0 ||
        (queue.endpoint != nullptr && !queue.endpoint->idle())) {
      ++i;
      continue;
    }
    if (queue.endpoint != nullptr) {
      counters_.malformed += queue.endpoint->malformed();
      counters_.forged += queue.endpoint->forged();
      counters_.receive_queue_empty += queue.endpoint->receive_queue_empty();
    }
    ctx_.handles.Remove(queue.handles);
    retired_[i] = std::move(retired_.back());
    retired_.pop_back();
  }
}

}  // namespace demi::libos
