// The parts of one rdma_bench run, in the order main.cc calls them:
// Measure (the library's cells, measure.cc), RunBaselines and RunPeerRows
// (perftest and the peers beside them, baselines.cc), Output (the table,
// JSON, CSV and plot, output.cc).

#ifndef DEMI_TOOLS_RDMA_BENCH_RUNS_H_
#define DEMI_TOOLS_RDMA_BENCH_RUNS_H_

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/peers.h"
#include "tools/rdma_bench/report.h"

namespace demi::bench {

// Sizes above this are compared with ib_read_bw too (the library reads
// them by rendezvous).
inline constexpr uint64_t kEagerSize = 8 << 10;
// perftest and the peers run up to this size (all sizes with --baseline-all).
inline constexpr uint64_t kAlwaysBaseline = 1 << 20;

// Runs every cell against the server; the rows in table order (workload,
// then memory, then size).
absl::StatusOr<std::vector<Row>> Measure(const Options& options);

// Where the server halves of the baseline and peer pairs run: on the
// server's host (its pair helper, at the server's address over TCP) for
// --client, here otherwise.
std::optional<sockaddr_in> PairHelperOf(const Options& options);

// Runs perftest where the rows want it and attaches the figures; what it
// did goes to *notes.
void RunBaselines(const Options& options, std::vector<Row>& rows,
                  std::string* notes);

// Runs the peers (--peers) at the sizes of the latency, rate and bandwidth
// rows, up to kAlwaysBaseline.
std::vector<PeerRow> RunPeerRows(const Options& options,
                                 const std::vector<Row>& rows);

// Prints the table and writes the JSON, CSV and plot the options ask for;
// the process's exit code.
int Output(const Options& options, std::vector<Row>& rows,
           const std::string& notes, std::vector<PeerRow> peers);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_RUNS_H_
