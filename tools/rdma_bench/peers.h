// The peers: other RDMA messaging libraries measured beside demi in the same
// run (rdma_bench --peers), so a table says where demi stands against what a
// user could pick instead: UCX's ucx_perftest (ucp active messages and tag
// matching) and rsocket's rstream, each at the run's sizes, on the same
// device, with the settings they need on Soft-RoCE (../shared/reference/
// PEERS.md). A peer that is not installed, or fails, gives rows with the
// reason instead of a figure.

#ifndef DEMI_TOOLS_RDMA_BENCH_PEERS_H_
#define DEMI_TOOLS_RDMA_BENCH_PEERS_H_

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tools/rdma_bench/row_workload.h"

namespace demi::bench {

// One peer's figure for one workload at one size, in the unit of demi's row
// of that workload (latency: one-way microseconds; msgrate: million
// messages per second; bandwidth: MiB/s).
struct PeerRow {
  std::string tool;  // "ucx am", "ucx tag", "rstream"
  RowWorkload workload = RowWorkload::kLatency;
  uint64_t size = 0;
  std::optional<double> value;
  std::string reason;  // why there is no value
};

// ucx_perftest's "Final:" line: the median latency (one way for its
// ping-pong tests), overall bandwidth (its MB/s is 2^20 bytes/s) and
// overall message rate.
struct UcxFigures {
  double median_us = 0;
  double mib_per_s = 0;
  double messages_per_s = 0;
};
absl::StatusOr<UcxFigures> ParseUcxPerftest(absl::string_view output);

// rstream's result line: Gb/sec (10^9 bits/s, counting both directions of
// its exchange) and usec/xfer (time per transfer, one way).
struct RstreamFigures {
  double gbit_per_s = 0;
  double usec_per_transfer = 0;
};
absl::StatusOr<RstreamFigures> ParseRstream(absl::string_view output);

struct PeerSettings {
  std::string device;        // e.g. "rxe0"
  std::string rdma_address;  // the server's IPv4 address (rstream -s)
  // Set: the server halves run on the host of the rdma_bench --server whose
  // pair helper listens here (server_half.h).
  std::optional<sockaddr_in> remote;
  uint16_t first_port = 0;                     // each run takes the next port
  absl::Duration timeout = absl::Seconds(60);  // per run
  uint64_t latency_iterations = 2000;
};

// The cells to measure: (workload, size) for kLatency, kMsgRate and
// kBandwidth.
struct PeerCell {
  RowWorkload workload = RowWorkload::kLatency;
  uint64_t size = 0;
};

// Sets UCX's environment for Soft-RoCE (PEERS.md) for the children of this
// process, unless the user set it: `device` is the RDMA device.
void SetUcxEnvironment(const std::string& device);

// Runs every peer for every cell; `progress` (may be null) gets one line per
// run.
std::vector<PeerRow> RunPeers(const std::vector<PeerCell>& cells,
                              const PeerSettings& settings,
                              void (*progress)(const std::string& line));

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_PEERS_H_
