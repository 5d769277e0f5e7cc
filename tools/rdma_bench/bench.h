// The measurements, on the public demi_* API only: a server that echoes or
// sinks messages, and a client that drives it cell by cell.
//
// One run is one session: the client opens `connections` connections, then
// for each cell (workload, size, memory) tells the server on every
// connection what comes (a control message), runs the cell on all
// connections at once, and closes the cell with another control message.
// Control messages have two segments, data messages one: the library keeps
// segment boundaries, so the two never mix.

#ifndef DEMI_TOOLS_RDMA_BENCH_BENCH_H_
#define DEMI_TOOLS_RDMA_BENCH_BENCH_H_

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/stats.h"

namespace demi::bench {

enum class Workload : uint32_t {
  kPingPong = 1,  // latency
  kStream = 2,    // message rate and bandwidth
};

struct Cell {
  Workload workload;
  uint64_t size;
  Memory memory;
};

struct Limits {
  absl::Duration warmup;    // unmeasured time first (at least one iteration)
  absl::Duration duration;  // measured time, about
  uint32_t min_iterations;  // measured round trips / messages, at least
  uint32_t window;          // pushes outstanding per connection (stream)
};

// What one cell measured. `supported` false: the library refused it (the
// reason says how, e.g. "demi_push: EMSGSIZE ..."); nothing else is set.
struct CellResult {
  bool supported = true;
  std::string reason;
  uint64_t iterations = 0;  // round trips, or messages delivered
  double seconds = 0;       // measured time
  uint32_t window = 0;      // stream: pushes outstanding per connection
  LatencySummary latency;   // ping-pong: one way (round trip / 2), in us
  double mpps = 0;          // stream: million messages per second
  double mib_per_s = 0;     // stream: 2^20 bytes per second
};

// Runs the server side of one session on `address`: accepts connections,
// answers the client's cells, and returns when the client has closed every
// connection (or an error, or `idle` passes with nothing happening).
// `listening` is called once the socket listens. demi_init must have run.
// `echo`: how it answers a ping (see EchoMode).
absl::Status Serve(const sockaddr_in& address, absl::Duration idle,
                   EchoMode echo, const std::function<void()>& listening);

// The client side of one session.
class Client {
 public:
  // Connects `connections` queues to the server at `address`, retrying
  // refused connections for up to `retry_for` (a server starting up).
  // demi_init must have run.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const sockaddr_in& address, uint32_t connections,
      absl::Duration retry_for);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Measures one cell on every connection. An error means the session is
  // broken (connection lost, protocol violated); a cell the library cannot
  // run is a CellResult with supported == false.
  absl::StatusOr<CellResult> Run(const Cell& cell, const Limits& limits);

  // Closes every connection (the server then ends its session).
  absl::Status Close();

 private:
  struct Connection;
  class Session;
  Client();
  std::unique_ptr<Session> session_;
};

// The window used for `size`: `window`, but at most what keeps about 32 MiB
// in flight per connection (and at least 2, if `window` allows).
uint32_t EffectiveWindow(uint32_t window, uint64_t size);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_BENCH_H_
