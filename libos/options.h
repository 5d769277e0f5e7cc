// LibOSOptions: every setting of the libOS (demi_init reads them from the
// environment: libos/settings.h).

#ifndef DEMI_LIBOS_OPTIONS_H_
#define DEMI_LIBOS_OPTIONS_H_

#include <cstdint>

#include "absl/time/time.h"
#include "rdma/buffer_pool.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/rc_connection.h"
#include "rdma/region_cache.h"
#include "rdma/ud_endpoint.h"

namespace demi::libos {

struct LibOSOptions {
  // Operations in flight at once (tokens issued and not yet waited for).
  uint32_t max_operations = 1 << 16;
  // pd is filled in per device. Messages up to 64 KiB go eagerly (in parts
  // above the eager limit: a copy at the receiver, no round trip, no memory
  // exposed), larger ones by rendezvous. DEMI_RENDEZVOUS_THRESHOLD.
  rdma::RcConnectionOptions connection = [] {
    rdma::RcConnectionOptions options;
    options.rendezvous_threshold = 64 * 1024;
    return options;
  }();
  rdma::BufferPoolOptions pool;  // max_buffer_size = eager limit
  // The memory-region cache for application memory; when disabled (or when
  // userfaultfd is refused) application memory is registered per push.
  rdma::RegionCacheOptions region_cache;
  bool region_cache_enabled = true;
  // Memory for messages above the eager limit (received by rendezvous, or
  // from demi_sgaalloc), per device.
  rdma::LargeBufferPoolOptions large_pool;
  // How long address and route resolution may take.
  absl::Duration resolve_timeout = absl::Seconds(2);
  // Datagram sockets' queue pairs (pd is filled in per device).
  rdma::UdEndpointOptions datagram;
  // A resolved datagram destination is resolved again in the background
  // once it is this old (zero: never), so a peer that re-bound its address
  // in another process (a new queue pair) is found again; sends keep using
  // the old handle meanwhile. A destination nobody answers for any more is
  // dropped from the cache, and the next push resolves it (and fails).
  absl::Duration datagram_route_ttl = absl::Seconds(5);
  // Every this often, each connection with nothing in flight probes its
  // peer (rdma::RcConnection::SendKeepalive): a peer whose host went down
  // or whose link was cut fails the connection (ETIMEDOUT) within this
  // interval plus the retry budget, even when only a pop is pending. Zero:
  // never (an idle connection to a vanished peer then waits forever).
  absl::Duration keepalive = absl::Seconds(5);
  // A closed connection (demi_close) is kept until what it sent is done:
  // acknowledged, and rendezvous messages read by the peer (their done
  // received). One still busy this long after its close is reset: its
  // pushes fail (ECANCELED), their memory and records are released, and
  // the peer's reads of it fail. So a peer that never reads or never
  // answers holds nothing forever. DEMI_CLOSE_TIMEOUT_MS.
  absl::Duration close_timeout = absl::Seconds(60);
  // An open connection that has waited this long on its peer with nothing
  // from it (sends queued for credits it does not return, or rendezvous
  // messages it neither reads to the end nor answers) fails with
  // ETIMEDOUT: its pushes fail and their memory is released, so a peer
  // that stops consuming holds nothing forever. Long, since a consumer may
  // be slow and a large rendezvous message takes a while to pull (1 GiB:
  // about a minute under emulation). Zero: never. DEMI_STALL_TIMEOUT_MS.
  absl::Duration stall_timeout = absl::Minutes(5);
  // Connections a worker (the queues one thread made) holds at most, open
  // or closed and not yet gone: a connection request beyond it is refused
  // before anything is built for it, whatever the listener's backlog. Each
  // costs a queue pair, completion queue entries and pinned receive buffers
  // (about 0.5 MiB with the default settings). Connections this side opens
  // are not refused, only counted. DEMI_MAX_CONNECTIONS.
  uint32_t max_connections = 4096;
  // How long a wait polls before it sleeps (LibOS::WaitLoop): zero sleeps
  // after the first round that finds nothing; InfiniteDuration() never
  // sleeps (spins for as long as it waits). DEMI_SPIN_US.
  absl::Duration spin = kDefaultSpin;

  // The default spin budget: longer than a 64 B round trip on Soft-RoCE
  // (tens of microseconds under emulation, a few on hardware), so a
  // ping-pong never sleeps between its messages, and short enough that a
  // waiter with nothing coming burns a core for a millisecond at most.
  static constexpr absl::Duration kDefaultSpin = absl::Milliseconds(1);
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_OPTIONS_H_
