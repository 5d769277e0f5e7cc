// The Demikernel-style ping-pong row: the loop Demikernel's own examples
// run, strictly in turn on both sides. Client: demi_sgaalloc, fill, push,
// wait for the push, free, pop, wait for the pop, free. Server: pop, wait,
// push the popped array back, wait for that push, free. Unlike the latency
// row (which keeps pops posted and never waits for a push), every push's
// completion is on the path here, so it shows what a push costs until its
// token completes.
//
// Protocol. The server listens on DemiStyleServerAddress() of the session's
// address (its port + 101) once the datagram server is done, accepts one
// connection and echoes until the client closes it (end of stream), or
// stops when nobody connects within `idle`. A client that measures nothing
// connects and closes at once.

#ifndef DEMI_TOOLS_RDMA_BENCH_DEMI_STYLE_H_
#define DEMI_TOOLS_RDMA_BENCH_DEMI_STYLE_H_

#include <netinet/in.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/rdma_bench/bench.h"

namespace demi::bench {

// Where the Demikernel-style server of a session on `session` listens.
sockaddr_in DemiStyleServerAddress(const sockaddr_in& session);

// Serves one Demikernel-style client on `address` (see above). OK also when
// nobody came within `idle` (`*served` false then). demi_init must have run.
absl::Status ServeDemiStyle(const sockaddr_in& address, absl::Duration idle,
                            bool* served);

// Runs the client loop with `size`-byte library messages for about
// limits.duration after limits.warmup (at least limits.min_iterations),
// connecting with retries while the server is not listening yet (up to
// `wait_for_server`), then closes. `measure` false: connects and closes
// only (the server's cue to stop). A push or pop the library refuses makes
// the cell unsupported with the reason. demi_init must have run.
absl::StatusOr<CellResult> MeasureDemiStyle(const sockaddr_in& server,
                                            uint64_t size, const Limits& limits,
                                            absl::Duration wait_for_server,
                                            bool measure);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_DEMI_STYLE_H_
