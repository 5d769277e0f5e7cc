// Datagram latency: SOCK_DGRAM sockets (unreliable-datagram queue pairs)
// ping-ponging inside this process, for the row beside `ib_send_lat -c UD`.

#ifndef DEMI_TOOLS_RDMA_BENCH_DATAGRAM_H_
#define DEMI_TOOLS_RDMA_BENCH_DATAGRAM_H_

#include <netinet/in.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "tools/rdma_bench/bench.h"

namespace demi::bench {

// Binds two datagram sockets to `ip` (ports `port` and `port` + 1) and
// measures the one-way latency (round trip / 2) of `size`-byte datagrams
// pushed from library memory, one socket echoing the other, for about
// limits.duration after limits.warmup. Both ends run in this process (one
// thread drives both), so a round trip includes no process switch. A cell
// the library refuses (e.g. EMSGSIZE above the datagram payload limit, or
// EADDRNOTAVAIL when `ip` is not this host's) is supported == false with
// the reason. demi_init must have run.
absl::StatusOr<CellResult> MeasureDatagramLatency(in_addr ip, uint16_t port,
                                                  uint64_t size,
                                                  const Limits& limits);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_DATAGRAM_H_
