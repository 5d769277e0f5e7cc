// Rows of results and their output: the table (stdout; report.cc, with the
// ratios), JSON and CSV (report_files.cc), and a gnuplot chart (plot.cc).

#ifndef DEMI_TOOLS_RDMA_BENCH_REPORT_H_
#define DEMI_TOOLS_RDMA_BENCH_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/peers.h"
#include "tools/rdma_bench/row_workload.h"

namespace demi::bench {

// One figure of perftest beside a library figure.
struct Baseline {
  std::string tool;              // "ib_send_lat", "ib_send_bw", "ib_read_bw"
  std::optional<double> value;   // same unit as the row's value
  std::optional<double> p99_us;  // latency only
  std::optional<double> p999_us;
  std::string reason;  // why there is no value
};

// One line of the results: a workload at a size from one kind of memory.
// A figure the library could not produce is nullopt with `reason` set.
struct Row {
  RowWorkload workload = RowWorkload::kLatency;
  uint64_t size = 0;
  Memory memory = Memory::kLibrary;
  uint32_t connections = 1;
  uint32_t window = 0;  // pushes outstanding per connection (0: ping-pong)
  uint64_t iterations = 0;
  double seconds = 0;
  std::optional<double> value;  // median_us, mpps or mib_per_s
  std::optional<double> median_us, p99_us, p999_us, mean_us;  // latency
  std::string reason;  // why value is missing
  // Set when --baseline was given.
  std::optional<Baseline> baseline;       // ib_send_lat / ib_send_bw
  std::optional<Baseline> read_baseline;  // ib_read_bw, bandwidth > 8 KiB
  // Set by MedianOfRounds when rounds were merged: the median over the
  // rounds of each round's value / baseline value (a round's two figures
  // are closer in time than two rounds' medians).
  std::optional<double> round_ratio;
  // Application-memory rows, set by MedianOfRounds when rounds were merged:
  // the median over the rounds of each round's AppMemoryCost.
  std::optional<double> round_app_cost;
};

// The unit of a workload's value and whether lower is better.
// A ping-pong row (kLatency, kDgramLatency, kDemiLatency): its figure is
// one-way microseconds, beside an ib_send_lat run.
bool IsLatencyWorkload(RowWorkload workload);
const char* UnitOf(RowWorkload workload);
bool LowerIsBetter(RowWorkload workload);

// value / baseline value, if both exist (and the baseline is not zero).
std::optional<double> Ratio(const std::optional<double>& value,
                            const std::optional<Baseline>& baseline);

// The ratio a row reports against its baseline (ib_send_lat / ib_send_bw):
// round_ratio when rounds were merged, else Ratio(value, baseline).
std::optional<double> RowRatio(const Row& row);

// What application memory costs against library memory, for an
// application-memory row of `rows` (one round's, or merged): the
// library-memory row's figure of the same workload and size against this
// one's, oriented so that above 1.00 means application memory is slower
// (latency: app / lib; rate and bandwidth: lib / app). nullopt for a
// library-memory row or when either figure is missing. The target is at
// most 1.05.
std::optional<double> AppMemoryCost(const Row& row,
                                    const std::vector<Row>& rows);

// AppMemoryCost as a merged table reports it: round_app_cost when rounds
// were merged, else AppMemoryCost(row, rows).
std::optional<double> RowAppMemoryCost(const Row& row,
                                       const std::vector<Row>& rows);

struct RunInfo {
  bool baseline = false;  // baseline columns wanted
  uint32_t window = 0;
  uint32_t connections = 1;
  std::string device;
  // Where the server ran: "" on this host, else its address (--client).
  std::string server_host;
  std::string notes;  // free text about the run (e.g. baseline flags)
  // Other libraries' figures in the same run (--peers), compared with the
  // same perftest figures as demi's rows.
  std::vector<PeerRow> peers;
};

// A peer's figure / the perftest figure of demi's library-memory row of the
// same workload and size, if both exist.
std::optional<double> PeerRatio(const PeerRow& peer,
                                const std::vector<Row>& rows);

// The human-readable table: one section per workload, n/a cells with
// numbered reasons below, and the three headline comparisons at the end.
std::string FormatTable(const std::vector<Row>& rows, const RunInfo& info);

// {"tool": "rdma_bench", "run": {...}, "rows": [...]}: every row has every
// key; missing figures are null (with "reason").
std::string FormatJson(const std::vector<Row>& rows, const RunInfo& info);

// A header line and one line per row, the same fields as the JSON rows;
// missing figures are empty.
std::string FormatCsv(const std::vector<Row>& rows, const RunInfo& info);

// The gnuplot script drawing latency (median) and bandwidth against size,
// with the library's memories and the baselines as separate lines.
std::string GnuplotScript(const std::vector<Row>& rows,
                          const std::string& png_path);

// `text` in double quotes with JSON's escapes: a JSON string, and a
// gnuplot string too.
std::string JsonString(absl::string_view text);

// Writes `text` to `path`.
absl::Status WriteFile(const std::string& path, const std::string& text);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_REPORT_H_
