// DatagramSockets: every SOCK_DGRAM socket of the LibOS, on unreliable-
// datagram queue pairs (rdma::UdEndpoint), and the route cache their sends
// share (see DESIGN.md, "Datagram sockets").
//
// A socket is bound to the address of an RDMA interface before use; a push
// goes to the demi_connect destination, a pushto to its own; a destination is
// resolved once through rdma_cm (pushes and connects wait behind the
// resolution) and then cached by (local address, destination), refreshed in
// the background every options.datagram_route_ttl. A pop returns one
// datagram, with its sender in sga_addr.
//
// Where it is: datagram_sockets.cc (sockets, sends, pops, progress),
// datagram_routes.cc (resolution, refresh and retirement of routes),
// datagram_close.cc (close and reaping).
//
// Lifetime: created by the LibOS with its context, destroyed with it:
// sockets first (their queue pairs), then routes (the address handles their
// sends used), then the rdma_cm channel. Thread-safety: none; the LibOS
// mutex guards every call (and the progress sources it registers).

#ifndef DEMI_LIBOS_DATAGRAM_SOCKETS_H_
#define DEMI_LIBOS_DATAGRAM_SOCKETS_H_

#include <demi/types.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "libos/datagram.h"
#include "libos/qd_table.h"
#include "libos/socket_context.h"
#include "libos/sockets.h"
#include "rdma/cm_event_channel.h"

namespace demi::libos {

class DatagramSockets final : public Sockets {
 public:
  explicit DatagramSockets(SocketContext& context)
      : ctx_(context), queues_(context.worker) {}

  absl::StatusOr<int> Open(int protocol) override;
  absl::Status Bind(int qd, const sockaddr* address, socklen_t size) override;
  absl::Status Listen(int qd, int backlog) override;      // EOPNOTSUPP
  absl::StatusOr<demi_qtoken_t> Accept(int qd) override;  // EOPNOTSUPP
  // Sets the destination of push and the only accepted sender of pops;
  // completes once the destination is resolved.
  absl::StatusOr<demi_qtoken_t> Connect(int qd, const sockaddr* address,
                                        socklen_t size) override;
  absl::StatusOr<demi_qtoken_t> Push(int qd,
                                     const demi_sgarray_t* sga) override;
  absl::StatusOr<demi_qtoken_t> PushTo(int qd, const demi_sgarray_t* sga,
                                       const sockaddr* address,
                                       socklen_t size) override;
  absl::StatusOr<demi_qtoken_t> Pop(int qd) override;
  // Datagram sockets never linger (`*linger` stays unset).
  absl::Status Close(int qd, Linger* linger) override;
  absl::Status GetPeerName(int qd, sockaddr* address, socklen_t* size) override;
  absl::Status SetLinger(int qd, const void* value,
                         socklen_t size) override;  // ENOPROTOOPT
  absl::Status GetLinger(int qd, void* value,
                         socklen_t* size) override;  // ENOPROTOOPT
  void AppendWakeFds(std::vector<int>* fds) const override {
    if (channel_.has_value()) fds->push_back(channel_->fd());
  }
  // Arms every endpoint's own completion queue.
  absl::Status ArmNotify() override;
  void Reap() override {
    if (!retired_.empty()) ReapRetired();
  }

  // The counters behind demi_dgram_stats.
  DatagramStats Statistics() const;

 private:
  class QueueSink;

  absl::StatusOr<DatagramQueue*> Find(int qd);
  // Registers what a round of progress visits (once, with the first socket:
  // until then rounds cost datagrams nothing): every socket's queue pair
  // and the retired sockets each round, the rdma_cm channel every
  // kCmPollInterval rounds, old routes every kRouteRefreshInterval.
  void AddProgress();
  // `destination` null: the demi_connect destination (EDESTADDRREQ if none).
  absl::StatusOr<demi_qtoken_t> Send(DatagramQueue& queue,
                                     const demi_sgarray_t* sga,
                                     const sockaddr_in* destination);
  // Polls one socket's queue pair; a failed endpoint fails the socket's
  // waiting pops.
  void PollQueue(DatagramQueue& queue);
  void HandleEvent(rdma::CmEvent event);
  // Queues `pending` behind the route of `key`, starting its resolution if
  // there is none; fails the pending token if it cannot start.
  void AwaitRoute(const DatagramRouteKey& key, const sockaddr_in& local,
                  ibv_pd* pd, const PendingDatagram& pending);
  void RouteResolved(DatagramRoute& route);
  // Starts a background resolution of every route older than
  // options.datagram_route_ttl (slow path: reads the clock).
  void RefreshOldRoutes();
  // Starts resolving `key`'s cached route again (route.refresher); the old
  // handle serves until it answers (RouteRefreshed).
  absl::Status StartRefresh(const DatagramRouteKey& key, DatagramRoute& route);
  // Completes the connects that waited for `route`'s refresh: CONNECT, or
  // FAILED with `errnum` when it is not 0.
  void FinishRefreshConnects(DatagramRoute& route, int errnum);
  // A refresh of `key`'s route ended with `peer` (or an error).
  void RouteRefreshed(const DatagramRouteKey& key,
                      absl::StatusOr<rdma::UdPeer> peer);
  // The route to `key` from `queue`'s socket, or null: the socket's last
  // one if still valid, else looked up in routes_ (and remembered).
  DatagramRoute* FindRoute(DatagramQueue& queue, const DatagramRouteKey& key);
  // Send's fast path: `sga` (checked, readable, fitting inline) to `peer`
  // without mapping; the token is done on return.
  absl::StatusOr<demi_qtoken_t> SendInline(DatagramQueue& queue,
                                           const demi_sgarray_t& sga,
                                           const rdma::UdPeer& peer);
  // Erases a route from routes_ (what it owned goes with `it`'s value, moved
  // out first where it must live on); invalidates every socket's last route.
  void EraseRoute(
      absl::flat_hash_map<DatagramRouteKey,
                          std::unique_ptr<DatagramRoute>>::iterator it);
  // Moves `route` out of routes_ to stale_routes_ (its handle may be in
  // posted sends); stops its refresh.
  void RetireRoute(std::unique_ptr<DatagramRoute> route);
  void FailPending(const PendingDatagram& pending, int errnum);
  // Completes the connect token `qt` (its destination is resolved).
  void CompleteConnect(demi_qtoken_t qt);
  void CompletePop(DatagramQueue& queue, demi_qtoken_t qt,
                   const rdma::ReceivedDatagram& datagram);
  void ReapRetired();
  // Calls fn(queue) for every socket: open ones, then closed ones kept
  // (retired_) until their sends finished.
  template <typename Fn>
  void ForEachQueue(Fn fn) {
    queues_.ForEach([&fn](int, DatagramQueue& queue)
                        ABSL_NO_THREAD_SAFETY_ANALYSIS { fn(queue); });
    for (auto& queue : retired_) fn(*queue);
  }
  template <typename Fn>
  void ForEachQueue(Fn fn) const {
    queues_.ForEach([&fn](int, const DatagramQueue& queue)
                        ABSL_NO_THREAD_SAFETY_ANALYSIS { fn(queue); });
    for (const auto& queue : retired_) fn(*queue);
  }
  // Destroys the stale routes no posted send can still use (checked with
  // the rdma_cm channel, every kCmPollInterval rounds).
  void ReapStaleRoutes();

  // Progress rounds between looks for routes to refresh.
  static constexpr uint32_t kRouteRefreshInterval = 1024;

  SocketContext& ctx_;
  // Declared in this order so that sockets (their queue pairs) go before
  // routes (the address handles their sends used) before the channel.
  std::optional<rdma::EventChannel> channel_;  // from the first socket
  DatagramStats counters_;
  absl::flat_hash_map<DatagramRouteKey, std::unique_ptr<DatagramRoute>> routes_;
  uint64_t routes_epoch_ = 1;  // bumped by every EraseRoute
  // Routes retired (a socket of this process closed, a refresh found
  // another queue pair or none) whose handles may still be in posted sends,
  // kept until those completed (ReapStaleRoutes); and resolutions in
  // progress by rdma_cm id.
  std::vector<std::unique_ptr<DatagramRoute>> stale_routes_;
  absl::flat_hash_map<rdma_cm_id*, DatagramRouteKey> resolving_;
  QdTable<DatagramQueue, 1> queues_;
  // Closed sockets kept until their sends finished and popped buffers came
  // back.
  std::vector<std::unique_ptr<DatagramQueue>> retired_;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_DATAGRAM_SOCKETS_H_
