// rdma_bench: what the demi_* API costs over raw verbs. See Usage() in
// options.cc and the README.

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
#include "tools/rdma_bench/report.h"
#include "tools/rdma_bench/rounds.h"
#include "tools/rdma_bench/server_half.h"

extern char** environ;

namespace demi::bench {
namespace {

constexpr uint64_t kEagerSize = 8 << 10;       // ib_read_bw above this
constexpr uint64_t kAlwaysBaseline = 1 << 20;  // perftest up to this size
constexpr uint64_t kDatagramSize = 64;         // the datagram latency row
constexpr uint64_t kDemiStyleSize = 64;        // the Demikernel-style row

void Progress(const std::string& line) {
  std::fprintf(stderr, "rdma_bench: %s\n", line.c_str());
  std::fflush(stderr);
}

const char* MemoryLabel(Memory memory) {
  return memory == Memory::kLibrary ? "lib" : "app";
}

absl::Status InitDemi() {
  // perftest and the peers spin while they wait; so do the library's waits
  // here, unless the caller's environment says otherwise (DEMI_SPIN_US: the
  // library's default sleeps after 1 ms, which the largest messages'
  // round trips outlast).
  setenv("DEMI_SPIN_US", "inf", /*overwrite=*/0);
  int rc = demi_init(nullptr);
  if (rc != 0 && rc != EEXIST) {
    return absl::ErrnoToStatus(
        rc, absl::StrCat("demi_init failed (is there an RDMA device? "
                         "tools/softroce/run provides one): ",
                         std::strerror(rc)));
  }
  return absl::OkStatus();
}

// Runs every cell against the server; the rows in table order (workload,
// then memory, then size).
absl::StatusOr<std::vector<Row>> Measure(const Options& options) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(options.address, options.connections, absl::Seconds(30));
  if (!client.ok()) return client.status();
  std::vector<Workload> workloads;
  if (options.workloads.latency) workloads.push_back(Workload::kPingPong);
  if (options.workloads.rate || options.workloads.bandwidth) {
    workloads.push_back(Workload::kStream);
  }
  const size_t total =
      workloads.size() * options.memories.size() * options.sizes.size();
  // Under emulation fresh code runs slowly at first (QEMU translates it),
  // so every cell warms up for a while before measuring.
  const absl::Duration duration = absl::Milliseconds(options.duration_ms);
  Limits limits{std::max(duration / 5, absl::Milliseconds(50)), duration,
                options.min_iterations, options.window};
  // The first round trips of a session are much slower (under emulation,
  // ~20 ms each for the first handful), so an unreported ping-pong of
  // small messages comes first.
  for (Memory memory : options.memories) {
    Limits warm = limits;
    warm.warmup = absl::ZeroDuration();
    warm.duration = std::max(duration, absl::Milliseconds(300));
    absl::StatusOr<CellResult> warmed =
        (*client)->Run(Cell{Workload::kPingPong, 64, memory}, warm);
    if (!warmed.ok()) return warmed.status();
    if (warmed->supported) break;
  }
  std::vector<Row> latency, rate, bandwidth;
  size_t done = 0;
  // A size's library- and application-memory cells run back to back, so
  // that the host's drift over minutes touches both alike (their
  // comparison, AppMemoryCost, is per round).
  for (Workload workload : workloads) {
    for (uint64_t size : options.sizes) {
      for (Memory memory : options.memories) {
        Cell cell{workload, size, memory};
        demi_mr_cache_stats_t cache_before{}, cache_after{};
        (void)demi_mr_cache_stats(&cache_before);
        absl::StatusOr<CellResult> result = (*client)->Run(cell, limits);
        if (!result.ok()) return result.status();
        (void)demi_mr_cache_stats(&cache_after);
        ++done;
        const bool ping = workload == Workload::kPingPong;
        std::string head = absl::StrFormat(
            "[%u/%u] %s %s %s: ", done, total, ping ? "latency" : "stream",
            FormatSize(size), MemoryLabel(memory));
        // What application memory cost the region cache in this cell: a
        // cell that registers per push measures registration, not the path.
        std::string cache_note;
        if (memory == Memory::kApplication) {
          cache_note = absl::StrFormat(
              "; region cache %u hits, %u misses, %u invalidations%s",
              cache_after.hits - cache_before.hits,
              cache_after.misses - cache_before.misses,
              cache_after.invalidations - cache_before.invalidations,
              cache_after.caching ? "" : " (not caching)");
        }
        Row row;
        row.size = size;
        row.memory = memory;
        row.connections = options.connections;
        row.window = ping ? 0 : result->window;
        row.iterations = result->iterations;
        row.seconds = result->seconds;
        row.reason = result->reason;
        if (!result->supported) {
          Progress(head + "n/a: " + result->reason);
        } else if (ping) {
          const LatencySummary& l = result->latency;
          Progress(head + absl::StrFormat(
                              "median %.2f us, p99 %.2f us (%u round trips "
                              "in %.2f s%s)",
                              l.median, l.p99, l.samples, result->seconds,
                              cache_note));
        } else {
          Progress(head + absl::StrFormat(
                              "%.4f Mpps, %.1f MiB/s (%u messages in %.2f s, "
                              "window %u%s)",
                              result->mpps, result->mib_per_s,
                              result->iterations, result->seconds,
                              result->window, cache_note));
        }
        if (ping) {
          row.workload = "latency";
          if (result->supported) {
            row.value = row.median_us = result->latency.median;
            row.p99_us = result->latency.p99;
            row.p999_us = result->latency.p999;
            row.mean_us = result->latency.mean;
          }
          latency.push_back(row);
          continue;
        }
        if (options.workloads.rate) {
          row.workload = "msgrate";
          if (result->supported) row.value = result->mpps;
          rate.push_back(row);
        }
        if (options.workloads.bandwidth) {
          row.workload = "bandwidth";
          row.value.reset();
          if (result->supported) row.value = result->mib_per_s;
          bandwidth.push_back(row);
        }
      }
    }
  }
  if (absl::Status s = (*client)->Close(); !s.ok()) return s;
  // Datagrams last: the server serves them once the session above ends.
  const sockaddr_in datagram_server = DatagramServerAddress(options.address);
  constexpr absl::Duration kWaitForServer = absl::Seconds(10);
  if (!options.workloads.latency) {
    StopDatagramServer(datagram_server, kWaitForServer);
  } else {
    absl::StatusOr<CellResult> result = MeasureDatagramLatency(
        datagram_server, kDatagramSize, limits, kWaitForServer);
    if (!result.ok()) return result.status();
    Row row;
    row.workload = "dgram_latency";
    row.size = kDatagramSize;
    row.memory = Memory::kLibrary;
    row.iterations = result->iterations;
    row.seconds = result->seconds;
    row.reason = result->reason;
    const std::string head = "datagram latency 64 B lib: ";
    if (result->supported) {
      const LatencySummary& l = result->latency;
      row.value = row.median_us = l.median;
      row.p99_us = l.p99;
      row.p999_us = l.p999;
      row.mean_us = l.mean;
      Progress(head + absl::StrFormat("median %.2f us, p99 %.2f us (%u round "
                                      "trips in %.2f s)",
                                      l.median, l.p99, l.samples,
                                      result->seconds));
    } else {
      Progress(head + "n/a: " + result->reason);
    }
    latency.push_back(row);
  }
  // Then the Demikernel-style loop, once the datagram server is done.
  {
    absl::StatusOr<CellResult> result = MeasureDemiStyle(
        DemiStyleServerAddress(options.address), kDemiStyleSize, limits,
        kWaitForServer, options.workloads.latency);
    if (!result.ok()) return result.status();
    if (options.workloads.latency) {
      Row row;
      row.workload = "demi_latency";
      row.size = kDemiStyleSize;
      row.memory = Memory::kLibrary;
      row.iterations = result->iterations;
      row.seconds = result->seconds;
      const LatencySummary& l = result->latency;
      row.value = row.median_us = l.median;
      row.p99_us = l.p99;
      row.p999_us = l.p999;
      row.mean_us = l.mean;
      Progress(absl::StrFormat(
          "Demikernel-style ping-pong 64 B lib: median %.2f us, p99 %.2f us "
          "(%u round trips in %.2f s)",
          l.median, l.p99, l.samples, result->seconds));
      latency.push_back(row);
    }
  }
  std::vector<Row> rows = std::move(latency);
  rows.insert(rows.end(), rate.begin(), rate.end());
  rows.insert(rows.end(), bandwidth.begin(), bandwidth.end());
  return rows;
}

// ---- the perftest baseline --------------------------------------------------

// Where the server halves of the baseline and peer pairs run: on the
// server's host (its pair helper, at the server's address over TCP) for
// --client, here otherwise.
std::optional<sockaddr_in> PairHelperOf(const Options& options) {
  if (options.role != Role::kClient) return std::nullopt;
  return options.address;
}

// The baseline of the datagram latency row (ib_send_lat with -c UD).
constexpr char kUdLatencyTool[] = "ib_send_lat -c UD";

// The perftest run a row is compared with.
std::string BaselineToolOf(const std::string& workload) {
  if (workload == "latency" || workload == "demi_latency") {
    return "ib_send_lat";
  }
  if (workload == "dgram_latency") return kUdLatencyTool;
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
                                    const std::string& workload,
                                    uint64_t size) {
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
    std::optional<double> lib = LibraryFigure(rows, "latency", size);
    per_iteration_us = 2 * (lib ? *lib : model_us);
  } else {
    std::optional<double> lib = LibraryFigure(rows, "msgrate", size);
    per_iteration_us = lib && *lib > 0 ? 1.0 / *lib : model_us;
  }
  const double n = absl::ToDoubleMicroseconds(budget) / per_iteration_us;
  return static_cast<uint64_t>(std::clamp(n, 5.0, 100000.0));
}

// Runs perftest where the rows want it and attaches the figures.
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
      if (row.workload == "bandwidth" && row.size > kEagerSize) {
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
    if (row.workload == "bandwidth" && row.size > kEagerSize) {
      results.try_emplace({"ib_read_bw", row.size});
    }
  }
  const absl::Duration budget = absl::Milliseconds(options.duration_ms);
  uint16_t port = static_cast<uint16_t>(40000 + getpid() % 10000);
  size_t done = 0;
  std::string tx_depth;
  for (auto& [key, baseline] : results) {
    ++done;
    const std::string workload =
        key.tool == "ib_send_bw" ? "msgrate" : "latency";
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
        "ib_send_bw", row.workload == "msgrate" ? send.mpps : send.mib_per_s,
        std::nullopt, std::nullopt, send.reason};
    if (row.workload == "bandwidth" && row.size > kEagerSize) {
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

// ---- output
// -------------------------------------------------------------------

absl::Status Plot(const std::vector<Row>& rows, const std::string& png) {
  const std::string script_path = png + ".gp";
  if (absl::Status s = WriteFile(script_path, GnuplotScript(rows, png));
      !s.ok()) {
    return s;
  }
  if (FindOnPath("gnuplot").empty()) {
    return absl::NotFoundError(absl::StrCat(
        "gnuplot is not installed: apt-get install gnuplot-nox, then run "
        "`gnuplot ",
        script_path, "`"));
  }
  // Fontconfig (pngcairo) complains when it cannot write its cache, as
  // under the Soft-RoCE guest's read-only root: point it at /tmp then.
  const char* home = std::getenv("HOME");
  const std::string cache =
      absl::StrCat(home != nullptr ? home : "", "/.cache");
  if (std::getenv("XDG_CACHE_HOME") == nullptr &&
      access(cache.c_str(), W_OK) != 0) {
    setenv("XDG_CACHE_HOME", "/tmp", 1);
  }
  std::vector<char*> argv = {const_cast<char*>("gnuplot"),
                             const_cast<char*>(script_path.c_str()), nullptr};
  pid_t pid = 0;
  int rc =
      posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) return absl::ErrnoToStatus(rc, "spawning gnuplot");
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("gnuplot ", script_path, " failed"));
  }
  return absl::OkStatus();
}

// Runs the peers (--peers) at the sizes of the latency, rate and bandwidth
// rows, up to kAlwaysBaseline.
std::vector<PeerRow> RunPeerRows(const Options& options,
                                 const std::vector<Row>& rows) {
  std::vector<PeerCell> cells;
  for (const Row& row : rows) {
    if (row.memory != Memory::kLibrary || row.size > kAlwaysBaseline ||
        (row.workload != "latency" && row.workload != "msgrate" &&
         row.workload != "bandwidth")) {
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

int Output(const Options& options, std::vector<Row>& rows,
           const std::string& notes, std::vector<PeerRow> peers) {
  RunInfo info;
  info.peers = std::move(peers);
  info.baseline = options.baseline;
  info.window = options.window;
  info.connections = options.connections;
  info.device = options.device;
  if (options.role == Role::kClient)
    info.server_host = HostText(options.address);
  info.notes = absl::StrCat(
      notes, notes.empty() ? "" : "; ", "ping-pong server answers with ",
      options.echo == EchoMode::kPopped ? "the popped array (zero copy)"
                                        : "a reply buffer of its own");
  std::fputs(FormatTable(rows, info).c_str(), stdout);
  std::fflush(stdout);
  int exit_code = 0;
  auto write = [&](const std::string& path, const std::string& text) {
    if (path.empty()) return;
    if (absl::Status s = WriteFile(path, text); !s.ok()) {
      Progress(std::string(s.message()));
      exit_code = 1;
    } else {
      Progress("wrote " + path);
    }
  };
  write(options.json_path, FormatJson(rows, info));
  write(options.csv_path, FormatCsv(rows, info));
  if (!options.plot_path.empty()) {
    if (absl::Status s = Plot(rows, options.plot_path); !s.ok()) {
      Progress(absl::StrCat("no plot: ", s.message()));
    } else {
      Progress("wrote " + options.plot_path);
    }
  }
  return exit_code;
}

// ---- roles
// ----------------------------------------------------------------------

int RunServer(const Options& options, bool quiet) {
  if (absl::Status s = InitDemi(); !s.ok()) {
    Progress(std::string(s.message()));
    return 1;
  }
  absl::Status served =
      Serve(options.address, absl::Minutes(10), options.echo, [&] {
        if (!quiet)
          Progress("server listening on " + AddressText(options.address));
      });
  if (!served.ok()) {
    Progress(absl::StrCat("server: ", served.message()));
    return 1;
  }
  const sockaddr_in datagrams = DatagramServerAddress(options.address);
  const absl::Duration idle = absl::Seconds(10);
  if (!quiet) {
    Progress("server: the client is done; echoing datagrams on " +
             AddressText(datagrams));
  }
  bool quit = false;
  absl::Status echoed = ServeDatagrams(datagrams, idle, &quit);
  if (!echoed.ok()) {
    Progress(absl::StrCat("datagram server: ", echoed.message()));
    return 1;
  }
  if (!quiet) {
    Progress(quit ? std::string("datagram server: the client is done")
                  : absl::StrCat("datagram server: no datagram for ",
                                 absl::FormatDuration(idle), ", stopping"));
  }
  bool demi_style_served = false;
  absl::Status demi_style = ServeDemiStyle(
      DemiStyleServerAddress(options.address), idle, &demi_style_served);
  if (!demi_style.ok()) {
    Progress(absl::StrCat("Demikernel-style server: ", demi_style.message()));
    return 1;
  }
  return 0;
}

// Waits up to `limit` for the server child, then kills it.
int ReapServer(pid_t pid, absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (absl::Now() >= deadline) {
      Progress("the server did not exit; killing it");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return 1;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

// Results the previous round left behind (operations of its closed queues,
// cancelled at close): taken, their arrays freed, so that the next round's
// waits see only its own.
void DropLeftovers() {
  demi_qresult_t results[16];
  for (;;) {
    int count = 0;
    timespec now{};
    if (demi_wait_next_n(results, 16, &count, &now) != 0 || count == 0) return;
    for (int i = 0; i < count; ++i) {
      if (results[i].qr_opcode == DEMI_OPC_POP &&
          results[i].qr_value.sga.sga_numsegs > 0) {
        (void)demi_sgafree(&results[i].qr_value.sga);
      }
    }
  }
}

// A --local server child waiting for its round (see Main).
struct LocalServer {
  pid_t pid = -1;
  int start = -1;  // write one byte to start it
};

int RunClient(const Options& options, std::vector<LocalServer> servers) {
  const absl::Time start = absl::Now();
  auto reap_all = [&](size_t from) {
    for (size_t r = from; r < servers.size(); ++r) {
      close(servers[r].start);  // EOF: the child exits without serving
      ReapServer(servers[r].pid, absl::Seconds(5));
    }
  };
  if (absl::Status s = InitDemi(); !s.ok()) {
    Progress(std::string(s.message()));
    reap_all(0);
    return 1;
  }
  const uint32_t rounds = std::max<uint32_t>(1, options.rounds);
  Progress(absl::StrCat("client of ", AddressText(options.address), ": ",
                        options.sizes.size(), " sizes, ", options.duration_ms,
                        " ms per cell", rounds > 1 ? ", " : "",
                        rounds > 1 ? absl::StrCat(rounds, " rounds") : ""));
  std::vector<std::vector<Row>> measured;
  std::string notes;
  for (uint32_t round = 0; round < rounds; ++round) {
    if (rounds > 1) Progress(absl::StrCat("round ", round + 1, " of ", rounds));
    const bool local = round < servers.size();
    if (local) {
      const char go = 1;
      if (write(servers[round].start, &go, 1) != 1) {
        Progress("cannot start the server of this round");
        reap_all(round);
        return 1;
      }
      close(servers[round].start);
    }
    if (round > 0) DropLeftovers();
    absl::StatusOr<std::vector<Row>> rows = Measure(options);
    if (local) {
      int status =
          ReapServer(servers[round].pid,
                     rows.ok() ? absl::Seconds(10) : absl::ZeroDuration());
      if (rows.ok() && status != 0) {
        Progress(absl::StrCat("the server exited with status ", status));
      }
    }
    if (!rows.ok()) {
      Progress(absl::StrCat("failed: ", rows.status().message()));
      reap_all(round + 1);
      return 1;
    }
    std::string round_notes;
    if (options.baseline) RunBaselines(options, *rows, &round_notes);
    if (round == 0) notes = round_notes;
    measured.push_back(*std::move(rows));
  }
  std::vector<Row> rows = MedianOfRounds(measured);
  if (rounds > 1) {
    notes += absl::StrCat(
        notes.empty() ? "" : "; ", "every figure is the median of ", rounds,
        " rounds, each the library's cells then perftest's; a ratio is the "
        "median of the rounds' own ratios");
  }
  std::vector<PeerRow> peers;
  if (options.peers) peers = RunPeerRows(options, rows);
  int code = Output(options, rows, notes, std::move(peers));
  Progress(absl::StrFormat("done in %.1f s",
                           absl::ToDoubleSeconds(absl::Now() - start)));
  return code;
}

// Forks one server child per round of `options`, before this process
// touches the library or starts a thread: each child has a libOS of its own
// and waits (blocked in read, not spinning) until its round starts (a byte
// on its pipe), so only one server runs at a time and none while perftest
// runs. False (after a message) if a fork failed.
bool ForkServers(const Options& options, std::vector<LocalServer>* servers) {
  for (uint32_t round = 0; round < std::max<uint32_t>(1, options.rounds);
       ++round) {
    int fds[2];
    if (pipe(fds) != 0) {
      std::perror("rdma_bench: pipe");
      return false;
    }
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("rdma_bench: fork");
      return false;
    }
    if (pid == 0) {
      // Only its own read end stays open, so an early exit of the parent
      // (every write end closed) ends the waiting children too.
      for (const LocalServer& earlier : *servers) close(earlier.start);
      close(fds[1]);
      char go = 0;
      ssize_t n;
      do {
        n = read(fds[0], &go, 1);
      } while (n < 0 && errno == EINTR);
      close(fds[0]);
      const bool quiet = options.role != Role::kServer || round > 0;
      _exit(n == 1 ? RunServer(options, quiet) : 0);
    }
    close(fds[0]);
    servers->push_back({pid, fds[1]});
  }
  return true;
}

// --server: serves the client's rounds one after another (a fresh server
// process each, as --local), and meanwhile runs the server halves of its
// baseline and peer pairs through the pair helper (server_half.h) until the
// client says it is done.
int RunRemoteServer(const Options& options) {
  std::vector<LocalServer> servers;
  if (!ForkServers(options, &servers)) return 1;
  SetUcxEnvironment(options.device);
  absl::StatusOr<std::unique_ptr<PairHelper>> helper =
      PairHelper::Listen(options.address);
  if (!helper.ok()) {
    Progress(std::string(helper.status().message()));
    for (const LocalServer& server : servers) close(server.start);
    return 1;
  }
  int failed_rounds = 0;
  std::thread rounds([&] {
    for (LocalServer& server : servers) {
      const char go = 1;
      const bool started = write(server.start, &go, 1) == 1;
      close(server.start);
      if (ReapServer(server.pid, absl::Hours(2)) != 0 || !started) {
        ++failed_rounds;
      }
    }
  });
  absl::Status helped = (*helper)->Serve(absl::Minutes(15));
  rounds.join();
  if (!helped.ok()) Progress(std::string(helped.message()));
  if (failed_rounds > 0) {
    Progress(absl::StrCat(failed_rounds, " round(s) of the server failed"));
  }
  return helped.ok() && failed_rounds == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  bool help = false;
  absl::StatusOr<Options> options = ParseOptions(argc, argv, &help);
  if (help) {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  if (!options.ok()) {
    std::fprintf(stderr, "rdma_bench: %s\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }
  switch (options->role) {
    case Role::kServer:
      return RunRemoteServer(*options);
    case Role::kClient: {
      const int code = RunClient(*options, {});
      if (absl::Status s = EndPairHelper(options->address); !s.ok()) {
        Progress(
            absl::StrCat("ending the server's pair helper: ", s.message()));
        return code == 0 ? 1 : code;
      }
      return code;
    }
    case Role::kLocal:
      break;
  }
  std::vector<LocalServer> servers;
  if (!ForkServers(*options, &servers)) return 1;
  return RunClient(*options, std::move(servers));
}

}  // namespace
}  // namespace demi::bench

int main(int argc, char** argv) { return demi::bench::Main(argc, argv); }
