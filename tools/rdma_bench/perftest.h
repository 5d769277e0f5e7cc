// perftest (ib_send_lat, ib_send_bw, ib_read_bw) as the raw-verbs baseline:
// parsing its reports and running a server/client pair on one device.

#ifndef DEMI_TOOLS_RDMA_BENCH_PERFTEST_H_
#define DEMI_TOOLS_RDMA_BENCH_PERFTEST_H_

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace demi::bench {

// The result line of a latency test (ib_send_lat). Microseconds; perftest's
// send latency is half the round trip, and t_typical is the median.
struct PerftestLatency {
  uint64_t bytes = 0;
  uint64_t iterations = 0;
  double min_us = 0;
  double max_us = 0;
  double typical_us = 0;
  double average_us = 0;
  double stdev_us = 0;
  double p99_us = 0;
  double p999_us = 0;
};

// The result line of a bandwidth test (ib_send_bw, ib_read_bw). perftest's
// "MB/sec" is 2^20 bytes per second (MiB/s).
struct PerftestBandwidth {
  uint64_t bytes = 0;
  uint64_t iterations = 0;
  double peak_mib_s = 0;
  double average_mib_s = 0;
  double mpps = 0;
};

// Parse the first result line after the "#bytes" header of a report.
// NotFound when there is none (e.g. "Can't produce a report" after a failed
// clock calibration under emulation); an error too for a zero median or
// bandwidth (seen under emulation); the message says why if it can.
absl::StatusOr<PerftestLatency> ParseLatencyReport(absl::string_view output);
absl::StatusOr<PerftestBandwidth> ParseBandwidthReport(
    absl::string_view output);

// The value of a "Name : value" line of a report's header (e.g. "TX depth"
// -> "128"), or "" if absent.
std::string ReportField(absl::string_view output, absl::string_view name);

// The outputs (stdout and stderr together) of one server/client pair.
struct PerftestOutputs {
  std::string server;
  std::string client;
};

// A server and a client program run against each other: the client on this
// host, the server here or, with `remote`, on the host of an
// `rdma_bench --server` whose pair helper listens there (server_half.h).
struct PairCommand {
  std::vector<std::string> server;  // argv
  std::vector<std::string> client;
  std::optional<sockaddr_in> remote;
  // The client starts once the server listens on this TCP port; 0: after a
  // short pause (a server listening on an rsocket has no TCP port).
  uint16_t listen_port = 0;
  // A client that fails while the server keeps waiting raced its start and
  // is retried, unless its output holds this (non-empty) text.
  std::string client_final_failure;
  // The run counts as done when the client exited 0 or the server's output
  // holds this (non-empty) text.
  std::string server_report;
};

// Runs `command.server`, then the client (retried a few times while it
// races the server); both are killed after `timeout`. The outputs are
// stdout and stderr together; an error carries the end of them.
absl::StatusOr<PerftestOutputs> RunPair(const PairCommand& command,
                                        absl::Duration timeout);

// Runs `tool ARGS -p PORT` as the server and, once it listens on PORT,
// `tool ARGS -p PORT 127.0.0.1` as the client (perftest exchanges queue pair
// details over TCP; the traffic itself goes over the device named in ARGS).
// With `remote`, the server runs on the host of the pair helper at `remote`
// and the client connects to that host's address.
// A client that fails while the server still waits (it raced the server's
// listen) is retried a few times. Both are killed after `timeout`. OK when
// the client exited 0 or the server printed a report; otherwise an error
// with the end of their output.
absl::StatusOr<PerftestOutputs> RunPerftestPair(
    const std::string& tool, const std::vector<std::string>& args,
    uint16_t port, absl::Duration timeout,
    const std::optional<sockaddr_in>& remote = std::nullopt);

// The path of `program` on $PATH, or "" if it is not there.
std::string FindOnPath(const std::string& program);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_PERFTEST_H_
