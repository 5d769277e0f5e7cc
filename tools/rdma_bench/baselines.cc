// rdma_bench: the runs beside the library's: perftest (the baseline of
// every ratio) and the peers (UCX, rsocket), in the same guest and run.

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/rdma_bench/bench.h"
#include "tools/rdma_bench/datagram.h"
#include "tools/rdma_bench/demi_style.h"
#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/peers.h"
#include "tools/rdma_bench/perftest.h"
#include "tools/rdma_bench/progress.h"
#include "tools/rdma_bench/report.h"
#include "tools/rdma_bench/rounds.h"
#include "tools/rdma_bench/row_workload.h"
#include "tools/rdma_bench/runs.h"
#include "tools/rdma_bench/server_half.h"

namespace demi::bench {

std::optional<sockaddr_in> PairHelperOf(const Options& options) {
  if (options.role != Role::kClient) return std::nullopt;
  return options.address;
}

namespace {

// The baseline of the datagram latency row (ib_send_lat with -c UD).
constexpr char kUdLatencyTool[] = "ib_send_lat -c UD";

// The perftest run a row is compared with.
std::string BaselineToolOf(RowWorkload workload) {
  if (workload == RowWorkload::kLatency ||
      workload == RowWorkload::kDemiLatency) {
    return "ib_send_lat";
  }
  if (workload == RowWorkload::kDgramLatency) return kUdLatencyTool;
  return "ib_send_bw";
}

// What one perftest run gave.
struct PerftestFigures {
  std::optional<double> median_us, p99_us, p999_us;  // ib_send_lat
  std::optional<double> mib_per_s, mpps;             // ib_send_bw, ib_read_bw
  std::string reason;                                // when there are none
  std::string tx_depth;                              // ib_send_bw's window
};

// Runs one perftest pair and reads its report (the client's, else the
// server's).
PerftestFigures RunPerftest(const std::string& tool,
                            const std::vector<std::string>& args, uint16_t port,
                            absl::Duration timeout,
                            const std::optional<sockaddr_in>& remote) {
  PerftestFigures figures;
  absl::StatusOr<PerftestOutputs> outputs =
      RunPerftestPair(tool, args, port, timeout, remote);
  if (!outputs.ok()) {
    figures.reason = std::string(outputs.status().message());
    return figures;
  }
  if (tool == "ib_send_lat") {
    absl::StatusOr<PerftestLatency> lat = ParseLatencyReport(outputs->client);
    if (!lat.ok()) lat = ParseLatencyReport(outputs->server);
    if (!lat.ok()) {
      figures.reason = std::string(lat.status().message());
      return figures;
    }
    figures.median_us = lat->typical_us;
    figures.p99_us = lat->p99_us;
    figures.p999_us = lat->p999_us;
    return figures;
  }
  absl::StatusOr<PerftestBandwidth> bw = ParseBandwidthReport(outputs->client);
  if (!bw.ok()) bw = ParseBandwidthReport(outputs->server);
  if (!bw.ok()) {
    figures.reason = std::string(bw.status().message());
    return figures;
  }
  // Message rate and bandwidth come from the same report.
  figures.mib_per_s = bw->average_mib_s;
  figures.mpps = bw->mpps;
  figures.tx_depth = ReportField(outputs->client, "TX depth");
  return figures;
}

struct BaselineKey {
  std::string tool;
  uint64_t size;
  bool operator<(const BaselineKey& o) const {
    return std::tie(tool, size) < std::tie(o.tool, o.size);
  }
};

// The library's best figure of `workload` at `size` (any memory), if any.
std::optional<double> LibraryFigure(const std::vector<Row>& rows,
                                    RowWorkload workload, uint64_t size) {
  std::optional<double> best;
  for (const Row& row : rows) {
    if (row.workload == workload && row.size == size && row.value) {
      best = best ? std::min(*best, *row.value) : *row.value;
    }
  }
  return best;
}

// perftest iterations that take about `budget`, from the library's figure
// at this size or else a rough model of Soft-RoCE under emulation
// (~15 us per message, ~50 MB/s).
uint64_t Iterations(const std::vector<Row>& rows, const std::string& tool,
                    uint64_t size, absl::Duration budget) {
  const double model_us = 15.0 + static_cast<double>(size) / 50.0;
  double per_iteration_us;
  if (tool == kUdLatencyTool) {
    per_iteration_us = 2 * model_us;  // ours is far slower (see the table)
  } else if (tool == "ib_send_lat") {
    std::optional<double> lib =
        LibraryFigure(rows, RowWorkload::kLatency, size);
    per_iteration_us = 2 * (lib ? *lib : model_us);
  } else {
    std::optional<double> lib =
        LibraryFigure(rows, RowWorkload::kMsgRate, size);
    per_iteration_us = lib && *lib > 0 ? 1.0 / *lib : model_us;
  }
  const double n = absl::ToDoubleMicroseconds(budget) / per_iteration_us;
  return static_cast<uint64_t>(std::clamp(n, 5.0, 100000.0));
}

}  // namespace

void RunBaselines(const Options& options, std::vector<Row>& rows,
                  std::string* notes) {
  std::vector<std::string> missing;
  for (const char* tool : {"ib_send_lat", "ib_send_bw", "ib_read_bw"}) {
    if (FindOnPath(tool).empty()) missing.push_back(tool);
  }
  if (!missing.empty()) {
    const std::string reason =
        "perftest is not installed (apt-get install perftest)";
    Progress(absl::StrCat("no ", missing.front(),
                          " on PATH: perftest is not installed; install it "
                          "with `apt-get install perftest`. Continuing "
                          "without a baseline."));
    for (Row& row : rows) {
      const std::string tool = BaselineToolOf(row.workload);
      row.baseline =
          Baseline{tool, std::nullopt, std::nullopt, std::nullopt, reason};
      if (row.workload == RowWorkload::kBandwidth && row.size > kEagerSize) {
        row.read_baseline = Baseline{"ib_read_bw", std::nullopt, std::nullopt,
                                     std::nullopt, reason};
      }
    }
    *notes = reason;
    return;
  }
  // What to run: (tool, size), each once, in size order.
  std::map<BaselineKey, PerftestFigures> results;
  for (const Row& row : rows) {
    results.try_emplace({BaselineToolOf(row.workload), row.size});
    if (row.workload == RowWorkload::kBandwidth && row.size > kEagerSize) {
      results.try_emplace({"ib_read_bw", row.size});
    }
  }
  const absl::Duration budget = absl::Milliseconds(options.duration_ms);
  uint16_t port = static_cast<uint16_t>(40000 + getpid() % 10000);
  size_t done = 0;
  std::string tx_depth;
  for (auto& [key, baseline] : results) {
    ++done;
    const RowWorkload workload = key.tool == "ib_send_bw"
                                     ? RowWorkload::kMsgRate
                                     : RowWorkload::kLatency;
    if (!options.baseline_all && key.size > kAlwaysBaseline &&
        !LibraryFigure(rows, workload, key.size)) {
      baseline.reason =
          "skipped: the library has no figure at this size (--baseline-all "
          "runs it)";
      continue;
    }
    const uint64_t iterations = Iterations(rows, key.tool, key.size, budget);
    // -F: no warning about CPU frequency scaling (meaningless in a guest).
    std::vector<std::string> args = {"-d", options.device, "-F"};
    const bool ud = key.tool == kUdLatencyTool;
    if (ud) {
      args.push_back("-c");
      args.push_back("UD");
    }
    for (std::string arg : {std::string("-n"), absl::StrCat(iterations),
                            std::string("-s"), absl::StrCat(key.size)}) {
      args.push_back(arg);
    }
    if (key.tool == "ib_send_bw" && options.connections > 1) {
      args.push_back("-q");
      args.push_back(absl::StrCat(options.connections));
    }
    const absl::Duration timeout =
        absl::Seconds(60) + budget * 10 +
        absl::Seconds(static_cast<double>(key.size) * iterations / 10e6);
    std::string head =
        absl::StrFormat("baseline [%u/%u] %s %s: ", done, results.size(),
                        key.tool, FormatSize(key.size));
    // perftest sometimes gives no usable figure under emulation (clock
    // calibration); one more try usually does.
    for (int attempt = 1; attempt <= 2; ++attempt) {
      baseline = RunPerftest(ud ? "ib_send_lat" : key.tool, args, port++,
                             timeout, PairHelperOf(options));
      if (baseline.reason.empty()) break;
      Progress(absl::StrCat(head, "attempt ", attempt,
                            " gave no figure: ", baseline.reason));
    }
    if (key.tool == "ib_send_bw" && tx_depth.empty()) {
      tx_depth = baseline.tx_depth;
    }
    if (baseline.median_us) {
      Progress(head + absl::StrFormat("median %.2f us, p99 %.2f us",
                                      *baseline.median_us, *baseline.p99_us));
    } else if (baseline.mib_per_s) {
      Progress(head + absl::StrFormat("%.1f MiB/s, %.4f Mpps",
                                      *baseline.mib_per_s, *baseline.mpps));
    }
  }
  for (Row& row : rows) {
    if (IsLatencyWorkload(row.workload)) {
      const std::string tool = BaselineToolOf(row.workload);
      const PerftestFigures& lat = results[{tool, row.size}];
      row.baseline =
          Baseline{tool, lat.median_us, lat.p99_us, lat.p999_us, lat.reason};
      continue;
    }
    const PerftestFigures& send = results[{"ib_send_bw", row.size}];
    row.baseline = Baseline{
        "ib_send_bw",
        row.workload == RowWorkload::kMsgRate ? send.mpps : send.mib_per_s,
        std::nullopt, std::nullopt, send.reason};
    if (row.workload == RowWorkload::kBandwidth && row.size > kEagerSize) {
      const PerftestFigures& read = results[{"ib_read_bw", row.size}];
      row.read_baseline = Baseline{"ib_read_bw", read.mib_per_s, std::nullopt,
                                   std::nullopt, read.reason};
    }
  }
  *notes = absl::StrCat(
      "Baseline: perftest ib_send_lat (and -c UD for datagrams) / "
      "ib_send_bw / ib_read_bw -d ",
      options.device,
      " -F -n N -s SIZE, otherwise default flags (ib_send_bw: TX depth ",
      tx_depth.empty() ? "?" : tx_depth,
      ", one work request per ibv_post_send), RC (UD for the datagram row), "
      "one process each side, "
      "N sized for ~",
      options.duration_ms, " ms", options.connections > 1 ? ", -q N" : "",
      ". perftest latency is the median (t_typical) of round trip / 2.");
}

std::vector<PeerRow> RunPeerRows(const Options& options,
                                 const std::vector<Row>& rows) {
  std::vector<PeerCell> cells;
  for (const Row& row : rows) {
    if (row.memory != Memory::kLibrary || row.size > kAlwaysBaseline ||
        (row.workload != RowWorkload::kLatency &&
         row.workload != RowWorkload::kMsgRate &&
         row.workload != RowWorkload::kBandwidth)) {
      continue;
    }
    cells.push_back(PeerCell{row.workload, row.size});
  }
  PeerSettings settings;
  settings.device = options.device;
  settings.rdma_address = HostText(options.address);
  settings.remote = PairHelperOf(options);
  // Across a wire of two emulated hosts a peer's 64 MiB run takes minutes.
  if (settings.remote.has_value()) settings.timeout = absl::Minutes(3);
  settings.first_port = static_cast<uint16_t>(30000 + getpid() % 8000);
  Progress(absl::StrCat("peers: ", cells.size(), " cells"));
  return RunPeers(cells, settings, &Progress);
}

}  // namespace demi::bench
