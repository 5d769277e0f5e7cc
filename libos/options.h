// LibOSOptions: every setting of the libOS (demi_init reads them from the
// environment: demi_api.cc).

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
  rdma::RcConnectionOptions connection;  // pd is filled in per device
  rdma::BufferPoolOptions pool;          // max_buffer_size = eager limit
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
};
}  // namespace demi::libos

#endif  // DEMI_LIBOS_OPTIONS_H_
