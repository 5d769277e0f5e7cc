// rdma_bench: the library's cells of one round (latency, stream, datagram
// and Demikernel-style rows), through Client (client.cc).

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
namespace {

constexpr uint64_t kDatagramSize = 64;   // the datagram latency row
constexpr uint64_t kDemiStyleSize = 64;  // the Demikernel-style row

// The row of one of the single-connection latency loops (datagram,
// Demikernel-style: library memory) from `result`, with its progress line
// ("`label` 64 B lib: ...").
Row SingleLatencyRow(RowWorkload workload, const std::string& label,
                     uint64_t size, const CellResult& result) {
  Row row;
  row.workload = workload;
  row.size = size;
  row.memory = Memory::kLibrary;
  row.iterations = result.iterations;
  row.seconds = result.seconds;
  row.reason = result.reason;
  const std::string head = absl::StrCat(label, " ", FormatSize(size), " lib: ");
  if (!result.supported) {
    Progress(head + "n/a: " + result.reason);
    return row;
  }
  const LatencySummary& l = result.latency;
  row.value = row.median_us = l.median;
  row.p99_us = l.p99;
  row.p999_us = l.p999;
  row.mean_us = l.mean;
  Progress(head + absl::StrFormat(
                      "median %.2f us, p99 %.2f us (%u round trips in %.2f s)",
                      l.median, l.p99, l.samples, result.seconds));
  return row;
}

}  // namespace

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
          row.workload = RowWorkload::kLatency;
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
          row.workload = RowWorkload::kMsgRate;
          if (result->supported) row.value = result->mpps;
          rate.push_back(row);
        }
        if (options.workloads.bandwidth) {
          row.workload = RowWorkload::kBandwidth;
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
  const bool single_rows = options.workloads.latency && options.single_rows;
  if (!single_rows) {
    StopDatagramServer(datagram_server, kWaitForServer);
  } else {
    absl::StatusOr<CellResult> result = MeasureDatagramLatency(
        datagram_server, kDatagramSize, limits, kWaitForServer);
    if (!result.ok()) return result.status();
    latency.push_back(SingleLatencyRow(RowWorkload::kDgramLatency,
                                       "datagram latency", kDatagramSize,
                                       *result));
  }
  // Then the Demikernel-style loop, once the datagram server is done.
  {
    absl::StatusOr<CellResult> result =
        MeasureDemiStyle(DemiStyleServerAddress(options.address),
                         kDemiStyleSize, limits, kWaitForServer, single_rows);
    if (!result.ok()) return result.status();
    if (single_rows) {
      latency.push_back(SingleLatencyRow(RowWorkload::kDemiLatency,
                                         "Demikernel-style ping-pong",
                                         kDemiStyleSize, *result));
    }
  }
  std::vector<Row> rows = std::move(latency);
  rows.insert(rows.end(), rate.begin(), rate.end());
  rows.insert(rows.end(), bandwidth.begin(), bandwidth.end());
  return rows;
}

}  // namespace demi::bench
