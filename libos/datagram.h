// The state of datagram sockets (SOCK_DGRAM); the code is DatagramSockets
// (datagram_sockets.h; see DESIGN.md, "Datagram sockets"). Internal to the
// libOS: plain structs, guarded by the worker's mutex.

#ifndef DEMI_LIBOS_DATAGRAM_H_
#define DEMI_LIBOS_DATAGRAM_H_

#include <demi/types.h>
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "common/fifo.h"
#include "common/fixed_ring.h"
#include "libos/receive_handles.h"
#include "rdma/rc_connection.h"
#include "rdma/ud_endpoint.h"
#include "rdma/ud_resolver.h"

namespace demi::libos {

struct DatagramQueue;
struct DatagramRoute;

// One datagram socket. Its receive buffers are lent out by pops
// (ReceiveBufferOwner).
// Where a route goes: from one local address to one destination.
struct DatagramRouteKey {
  uint32_t local_ipv4 = 0;  // the sending socket's address (network order)
  uint32_t ipv4 = 0;        // the destination's (network order)
  uint16_t port = 0;        // the destination's (network order)

  friend bool operator==(const DatagramRouteKey&,
                         const DatagramRouteKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const DatagramRouteKey& key) {
    return H::combine(std::move(h), key.local_ipv4, key.ipv4, key.port);
  }
};

// The destination a route leads to.
inline sockaddr_in DestinationOf(const DatagramRouteKey& key) {
  sockaddr_in destination{};
  destination.sin_family = AF_INET;
  destination.sin_addr.s_addr = key.ipv4;
  destination.sin_port = key.port;
  return destination;
}

struct DatagramQueue final : ReceiveBufferOwner {
  rdma::RegisteredSpan HeldBuffer(uint32_t index) const override {
    return endpoint->HeldBuffer(index);
  }
  void ReturnBuffer(uint32_t index) override;
  // Gives an arrival's buffer back to the endpoint without lending it (a
  // datagram filtered, dropped at close, or with no room to wait); a
  // failure, which only a bug can cause, is logged.
  void ReleaseArrival(uint32_t index);

  int qd = 0;
  std::unique_ptr<rdma::UdEndpoint> endpoint;  // null until demi_bind
  std::optional<sockaddr_in> default_peer;     // set by demi_connect
  // The default peer's queue pair once a datagram from it was checked
  // against its resolved route (0: not yet); see QueueSink::FromPeer.
  uint32_t default_peer_qp = 0;
  Fifo<demi_qtoken_t> pop_tokens;  // waiting pops
  // Arrived, not popped, oldest first. Each holds one of the socket's
  // receive buffers, so a ring of that many (Reset when the socket is
  // bound) never fills and queueing an arrival never allocates.
  FixedRing<rdma::ReceivedDatagram> datagrams;
  ReceiveHandle* handles = nullptr;  // one per receive buffer
  uint32_t held = 0;    // buffers lent out by pops, not yet returned
  bool closed = false;  // demi_close was called; kept to finish sends
  // The route of the last destination looked up (a one-entry cache in front
  // of the route table, so that a push to the same peer again hashes
  // nothing): valid while last_route_epoch is the table's epoch.
  DatagramRouteKey last_route_key;
  DatagramRoute* last_route = nullptr;
  uint64_t last_route_epoch = 0;
};

// A pushto, push or connect waiting for its destination to be resolved.
struct PendingDatagram {
  demi_qtoken_t qt = 0;
  int qd = 0;
  bool connect = false;  // a connect: completes when resolved, sends nothing
  uint32_t num_segments = 0;
  rdma::Segment segments[DEMI_SGARRAY_MAXSIZE];
};

// How to reach one destination from one local address: being resolved
// (resolver set) or resolved (peer set; refresher set while it is resolved
// again in the background, see LibOSOptions::datagram_route_ttl).
struct DatagramRoute {
  std::unique_ptr<rdma::UdResolver> resolver;
  std::optional<rdma::UdPeer> peer;
  std::vector<PendingDatagram> waiting;
  std::unique_ptr<rdma::UdResolver> refresher;
  // Connects waiting for the refresher: a demi_connect to a cached
  // destination resolves it again and completes when that answers.
  std::vector<PendingDatagram> refresh_connects;
  absl::Time resolved_at;  // when peer was last resolved
  // Once retired (stale): the sends that may still use its address handle,
  // as (endpoint, its sends_posted() at retirement); the route is destroyed
  // once each of those endpoints completed that many, or is gone.
  std::vector<std::pair<const rdma::UdEndpoint*, uint64_t>> sends_before;
};

// Counters behind demi_dgram_stats (see <demi/stats.h>).
struct DatagramStats {
  uint64_t sent = 0;         // pushes the device sent
  uint64_t send_failed = 0;  // pushes that completed FAILED
  uint64_t received = 0;     // datagrams received
  uint64_t malformed = 0;    // datagrams dropped: bad header
  uint64_t filtered = 0;     // dropped: not from the connected peer
  uint64_t forged = 0;  // dropped: header names another source than the GRH
  uint64_t receive_queue_empty = 0;    // times a socket had no receive posted
  uint64_t device_dropped = 0;         // the device's own drop counter
  bool device_drops_reported = false;  // whether device_dropped is known
  uint64_t ah_hits = 0;     // pushes and connects with a cached handle
  uint64_t ah_misses = 0;   // those that waited for a resolution
  uint64_t ah_entries = 0;  // resolved destinations cached now
  uint64_t ah_stale = 0;    // retired ones kept for posted sends
  uint64_t resolution_failures = 0;
  uint64_t route_refreshes = 0;  // background resolutions that succeeded
  uint64_t route_changes = 0;    // ... and found another queue pair there
  uint64_t route_drops = 0;      // ... and failed: the entry was dropped
  uint32_t max_payload = 0;      // smallest over bound sockets (0: none bound)
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_DATAGRAM_H_
