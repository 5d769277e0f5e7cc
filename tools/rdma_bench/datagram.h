// Datagram latency: a ping-pong between SOCK_DGRAM sockets (unreliable-
// datagram queue pairs) in two processes, server and client, as
// `ib_send_lat -c UD` runs; the row beside it in the table.
//
// Protocol. The server's socket is bound to DatagramServerAddress() of the
// session's address (its port + 100). It echoes every datagram, byte for
// byte, to the datagram's sga_addr, until a one-byte datagram holding
// kDatagramQuit arrives or it waits `idle` for one. The client binds a socket
// of its own to this host's address towards the server (any port), and sends
// the quit datagram a few times when it is done (datagrams may be lost).
//
// Both sides run after the connected (RC) session: the server once Serve()
// returns, the client after Client::Close().

#ifndef DEMI_TOOLS_RDMA_BENCH_DATAGRAM_H_
#define DEMI_TOOLS_RDMA_BENCH_DATAGRAM_H_

#include <netinet/in.h>

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/rdma_bench/bench.h"

namespace demi::bench {

inline constexpr uint8_t kDatagramQuit = 'Q';

// Where the datagram server of a session on `session` listens.
sockaddr_in DatagramServerAddress(const sockaddr_in& session);

// Echoes datagrams on `address` until the client's quit datagram (OK), or
// `idle` passes without a datagram (OK as well: the client may have measured
// no datagrams, or lost its quit datagrams; `*quit` tells which). An error
// when the socket cannot be bound or the library fails. demi_init must have
// run.
absl::Status ServeDatagrams(const sockaddr_in& address, absl::Duration idle,
                            bool* quit);

// Measures the one-way latency (round trip / 2) of `size`-byte datagrams
// pushed from library memory to the datagram server at `server` and echoed
// back, for about limits.duration after limits.warmup, then tells the server
// to quit. Resolution is retried while the server is not bound yet (up to
// `wait_for_server`). A cell the library refuses (EMSGSIZE above the payload
// limit, no route, a lost datagram) is supported == false with the reason;
// the server is told to quit in every case. demi_init must have run.
absl::StatusOr<CellResult> MeasureDatagramLatency(
    const sockaddr_in& server, uint64_t size, const Limits& limits,
    absl::Duration wait_for_server);

// Tells the datagram server at `server` to quit without measuring (a run
// without the latency workload). Best effort: the server also stops when
// idle.
void StopDatagramServer(const sockaddr_in& server,
                        absl::Duration wait_for_server);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_DATAGRAM_H_
