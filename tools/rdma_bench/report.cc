#include "tools/rdma_bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace demi::bench {
namespace {

// Numbered footnotes for the reasons of n/a cells.
class Footnotes {
 public:
  // "n/a[k]" for `reason`.
  std::string Mark(const std::string& reason) {
    auto [it, inserted] = numbers_.try_emplace(reason, order_.size() + 1);
    if (inserted) order_.push_back(reason);
    return absl::StrCat("n/a[", it->second, "]");
  }
  std::string Format() const {
    std::string out;
    for (size_t i = 0; i < order_.size(); ++i) {
      absl::StrAppend(&out, "  [", i + 1, "] ", order_[i], "\n");
    }
    return out;
  }

 private:
  std::map<std::string, size_t> numbers_;
  std::vector<std::string> order_;
};

std::string Figure(const std::optional<double>& value,
                   const std::string& reason, Footnotes& notes,
                   const char* format = "%.2f") {
  if (value.has_value()) return absl::StrFormat(format, *value);
  return notes.Mark(reason.empty() ? "no figure" : reason);
}

std::string RatioText(const std::optional<double>& ratio) {
  return ratio ? absl::StrFormat("%.2fx", *ratio) : "-";
}

const Row* FindRow(const std::vector<Row>& rows, RowWorkload workload,
                   uint64_t size, Memory memory) {
  for (const Row& row : rows) {
    if (row.workload == workload && row.size == size && row.memory == memory) {
      return &row;
    }
  }
  return nullptr;
}

// The peers' section: per workload and size, demi's ratio and each peer's
// figure and ratio, against the same perftest run.
std::string PeerSection(const std::vector<Row>& rows, const RunInfo& info,
                        Footnotes& notes) {
  if (info.peers.empty()) return "";
  std::vector<std::string> tools;
  for (const PeerRow& peer : info.peers) {
    if (std::find(tools.begin(), tools.end(), peer.tool) == tools.end()) {
      tools.push_back(peer.tool);
    }
  }
  std::string out =
      "\nPeers, same run and device: each figure in its workload's unit, "
      "with its ratio to the same perftest figure as demi's (library "
      "memory). rstream's latency is its mean; its rate and bandwidth come "
      "from its "
      "time per transfer.\n";
  absl::StrAppend(
      &out, absl::StrFormat("%-10s %9s | %7s", "workload", "size", "demi"));
  for (const std::string& tool : tools) {
    absl::StrAppend(&out, absl::StrFormat(" | %18s", tool));
  }
  out += "\n";
  std::vector<std::pair<RowWorkload, uint64_t>> cells;
  for (const PeerRow& peer : info.peers) {
    std::pair<RowWorkload, uint64_t> cell{peer.workload, peer.size};
    if (std::find(cells.begin(), cells.end(), cell) == cells.end()) {
      cells.push_back(cell);
    }
  }
  for (const auto& [workload, size] : cells) {
    const Row* demi = FindRow(rows, workload, size, Memory::kLibrary);
    absl::StrAppend(
        &out, absl::StrFormat(
                  "%-10s %9s | %7s", WorkloadName(workload), FormatSize(size),
                  RatioText(demi != nullptr ? RowRatio(*demi) : std::nullopt)));
    for (const std::string& tool : tools) {
      std::string cell = "-";
      for (const PeerRow& peer : info.peers) {
        if (peer.tool != tool || peer.workload != workload ||
            peer.size != size) {
          continue;
        }
        cell = absl::StrCat(
            Figure(peer.value, peer.reason, notes,
                   workload == RowWorkload::kMsgRate ? "%.4f" : "%.2f"),
            " (", RatioText(PeerRatio(peer, rows)), ")");
      }
      absl::StrAppend(&out, absl::StrFormat(" | %18s", cell));
    }
    out += "\n";
  }
  return out;
}

std::string Target(const std::vector<Row>& rows, RowWorkload workload,
                   uint64_t size, const char* what) {
  const Row* row = FindRow(rows, workload, size, Memory::kLibrary);
  if (row == nullptr) return absl::StrCat("  ", what, ": not measured\n");
  std::string line = absl::StrFormat("  %-18s ", absl::StrCat(what, ":"));
  if (!row->value) {
    return absl::StrCat(line, "n/a (", row->reason, ")\n");
  }
  absl::StrAppend(&line,
                  absl::StrFormat("%.4g %s", *row->value, UnitOf(workload)));
  if (row->baseline) {
    if (row->baseline->value) {
      absl::StrAppend(
          &line, absl::StrFormat(
                     " vs %s %.4g %s -> %s (%s%s is better)",
                     row->baseline->tool, *row->baseline->value,
                     UnitOf(workload), RatioText(RowRatio(*row)),
                     row->round_ratio ? "median of the rounds' ratios; " : "",
                     LowerIsBetter(workload) ? "lower" : "higher"));
    } else {
      absl::StrAppend(&line, " vs ", row->baseline->tool, ": n/a (",
                      row->baseline->reason, ")");
    }
  }
  return line + "\n";
}

// The application-memory section: per workload and size, what pushing
// application memory (sga_buf NULL) costs against library memory.
std::string AppMemorySection(const std::vector<Row>& rows) {
  std::string out;
  for (const Row& row : rows) {
    const std::optional<double> cost = RowAppMemoryCost(row, rows);
    if (!cost) continue;
    if (out.empty()) {
      out = absl::StrCat(
          "\nApplication memory (sga_buf NULL, registered by the region "
          "cache) against library memory, same workload and size",
          row.round_app_cost ? ", median of the rounds' own" : "",
          ": above 1.00, application memory is slower (latency app / lib; "
          "rate and bandwidth lib / app).\n",
          absl::StrFormat("%-10s %9s %7s\n", "workload", "size", "cost"));
    }
    absl::StrAppend(
        &out, absl::StrFormat("%-10s %9s %6.2fx\n", WorkloadName(row.workload),
                              FormatSize(row.size), *cost));
  }
  return out;
}

// The target line for application memory: every cost at most 1.05.
std::string AppMemoryTarget(const std::vector<Row>& rows) {
  constexpr double kTarget = 1.05;
  const Row* worst = nullptr;
  double worst_cost = 0;
  std::vector<std::string> missed;
  for (const Row& row : rows) {
    const std::optional<double> cost = RowAppMemoryCost(row, rows);
    if (!cost) continue;
    if (worst == nullptr || *cost > worst_cost) {
      worst = &row;
      worst_cost = *cost;
    }
    if (*cost > kTarget) {
      missed.push_back(absl::StrFormat("%s %s %.2fx",
                                       WorkloadName(row.workload),
                                       FormatSize(row.size), *cost));
    }
  }
  if (worst == nullptr) return "  application memory: not measured\n";
  if (missed.empty()) {
    return absl::StrFormat(
        "  application memory: within 5%% of library memory at every size "
        "(worst: %s %s %.2fx)\n",
        WorkloadName(worst->workload), FormatSize(worst->size), worst_cost);
  }
  return absl::StrCat("  application memory: more than 5% slower at ",
                      absl::StrJoin(missed, ", "), "\n");
}

}  // namespace

bool IsLatencyWorkload(RowWorkload workload) {
  return workload == RowWorkload::kLatency ||
         workload == RowWorkload::kDgramLatency ||
         workload == RowWorkload::kDemiLatency;
}

const char* UnitOf(RowWorkload workload) {
  if (IsLatencyWorkload(workload)) return "us";
  if (workload == RowWorkload::kMsgRate) return "Mpps";
  return "MiB/s";
}

bool LowerIsBetter(RowWorkload workload) { return IsLatencyWorkload(workload); }

std::optional<double> Ratio(const std::optional<double>& value,
                            const std::optional<Baseline>& baseline) {
  if (!value || !baseline || !baseline->value || *baseline->value <= 0) {
    return std::nullopt;
  }
  return *value / *baseline->value;
}

std::optional<double> AppMemoryCost(const Row& row,
                                    const std::vector<Row>& rows) {
  if (row.memory != Memory::kApplication || !row.value) return std::nullopt;
  const Row* lib = FindRow(rows, row.workload, row.size, Memory::kLibrary);
  if (lib == nullptr || !lib->value || *lib->value <= 0 || *row.value <= 0) {
    return std::nullopt;
  }
  return LowerIsBetter(row.workload) ? *row.value / *lib->value
                                     : *lib->value / *row.value;
}

std::optional<double> RowAppMemoryCost(const Row& row,
                                       const std::vector<Row>& rows) {
  if (row.round_app_cost) return row.round_app_cost;
  return AppMemoryCost(row, rows);
}

std::optional<double> RowRatio(const Row& row) {
  if (row.round_ratio.has_value()) return row.round_ratio;
  return Ratio(row.value, row.baseline);
}

std::string FormatTable(const std::vector<Row>& rows, const RunInfo& info) {
  Footnotes notes;
  std::string out = absl::StrFormat(
      "rdma_bench: the demi_* API over RDMA; %u connection%s%s\n",
      info.connections, info.connections == 1 ? "" : "s",
      info.baseline
          ? absl::StrCat("; baseline: perftest on ", info.device,
                         info.server_host.empty()
                             ? std::string()
                             : absl::StrCat(" across the same wire (server "
                                            "on ",
                                            info.server_host, ")"),
                         ", same run; ratio = demi / verbs")
          : "");
  const bool base = info.baseline;

  // A latency section: `workload`'s rows beside `tool`.
  auto latency_section = [&](RowWorkload workload, const std::string& title,
                             const char* tool) {
    bool any = false;
    for (const Row& row : rows) any |= row.workload == workload;
    if (!any) return;
    absl::StrAppend(&out, "\n", title, " Lower is better",
                    base ? "; ratio below 1.00: demi is faster" : "", ".\n");
    absl::StrAppend(&out, absl::StrFormat("%9s  %-6s %9s %9s %9s", "size",
                                          "memory", "median", "p99", "p99.9"));
    if (base) {
      absl::StrAppend(&out, absl::StrFormat(" | %11s %9s %9s | %7s", tool,
                                            "p99", "p99.9", "ratio"));
    }
    out += "\n";
    for (const Row& row : rows) {
      if (row.workload != workload) continue;
      absl::StrAppend(
          &out, absl::StrFormat("%9s  %-6s %9s %9s %9s", FormatSize(row.size),
                                MemoryLabel(row.memory),
                                Figure(row.median_us, row.reason, notes),
                                Figure(row.p99_us, row.reason, notes),
                                Figure(row.p999_us, row.reason, notes)));
      if (base) {
        Baseline b = row.baseline.value_or(Baseline{});
        absl::StrAppend(&out,
                        absl::StrFormat(" | %11s %9s %9s | %7s",
                                        Figure(b.value, b.reason, notes),
                                        Figure(b.p99_us, b.reason, notes),
                                        Figure(b.p999_us, b.reason, notes),
                                        RatioText(RowRatio(row))));
      }
      out += "\n";
    }
  };
  latency_section(RowWorkload::kLatency,
                  "Latency, one way (round trip / 2, as ib_send_lat), "
                  "microseconds.",
                  "ib_send_lat");
  latency_section(RowWorkload::kDemiLatency,
                  "Demikernel-style ping-pong (push, wait for the push, pop, "
                  "wait for the pop, on both sides; the server pushes back "
                  "the popped array), one way, microseconds; beside "
                  "ib_send_lat.",
                  "ib_send_lat");
  latency_section(RowWorkload::kDgramLatency,
                  "Datagram latency (SOCK_DGRAM on unreliable-datagram queue "
                  "pairs; client and echo server in two processes, as "
                  "perftest), one way, microseconds; beside ib_send_lat -c "
                  "UD.",
                  "-c UD");

  bool any = false;
  for (const Row& row : rows) any |= row.workload == RowWorkload::kMsgRate;
  if (any) {
    absl::StrAppend(
        &out,
        absl::StrFormat("\nMessage rate, million messages per second (window "
                        "%u per connection). Higher is better",
                        info.window),
        base ? "; ratio above 1.00: demi is faster" : "", ".\n");
    absl::StrAppend(
        &out, absl::StrFormat("%9s  %-6s %10s", "size", "memory", "Mpps"));
    if (base) {
      absl::StrAppend(&out,
                      absl::StrFormat(" | %10s | %7s", "ib_send_bw", "ratio"));
    }
    out += "\n";
    for (const Row& row : rows) {
      if (row.workload != RowWorkload::kMsgRate) continue;
      absl::StrAppend(
          &out, absl::StrFormat("%9s  %-6s %10s", FormatSize(row.size),
                                MemoryLabel(row.memory),
                                Figure(row.value, row.reason, notes, "%.4f")));
      if (base) {
        Baseline b = row.baseline.value_or(Baseline{});
        absl::StrAppend(
            &out, absl::StrFormat(" | %10s | %7s",
                                  Figure(b.value, b.reason, notes, "%.4f"),
                                  RatioText(RowRatio(row))));
      }
      out += "\n";
    }
  }

  any = false;
  for (const Row& row : rows) any |= row.workload == RowWorkload::kBandwidth;
  if (any) {
    absl::StrAppend(&out,
                    absl::StrFormat("\nBandwidth, MiB/s (2^20 bytes/s, "
                                    "perftest's MB/sec; window %u per "
                                    "connection, fewer for large messages). "
                                    "Higher is better",
                                    info.window),
                    base ? "; ratio above 1.00: demi is faster" : "", ".\n");
    absl::StrAppend(
        &out, absl::StrFormat("%9s  %-6s %10s", "size", "memory", "MiB/s"));
    if (base) {
      absl::StrAppend(
          &out, absl::StrFormat(" | %10s | %7s | %10s | %7s", "ib_send_bw",
                                "ratio", "ib_read_bw", "ratio"));
    }
    out += "\n";
    for (const Row& row : rows) {
      if (row.workload != RowWorkload::kBandwidth) continue;
      absl::StrAppend(
          &out, absl::StrFormat("%9s  %-6s %10s", FormatSize(row.size),
                                MemoryLabel(row.memory),
                                Figure(row.value, row.reason, notes, "%.1f")));
      if (base) {
        Baseline b = row.baseline.value_or(Baseline{});
        std::string read = "-", read_ratio = "-";
        if (row.read_baseline) {
          read = Figure(row.read_baseline->value, row.read_baseline->reason,
                        notes, "%.1f");
          read_ratio = RatioText(Ratio(row.value, row.read_baseline));
        }
        absl::StrAppend(
            &out, absl::StrFormat(" | %10s | %7s | %10s | %7s",
                                  Figure(b.value, b.reason, notes, "%.1f"),
                                  RatioText(RowRatio(row)), read, read_ratio));
      }
      out += "\n";
    }
  }

  absl::StrAppend(&out, AppMemorySection(rows));
  absl::StrAppend(&out, PeerSection(rows, info, notes));

  std::string footnotes = notes.Format();
  if (!footnotes.empty()) absl::StrAppend(&out, "\nn/a:\n", footnotes);

  absl::StrAppend(&out, "\nTargets (library memory unless said):\n",
                  Target(rows, RowWorkload::kLatency, 64, "64 B latency"));
  const Row* bw64k =
      FindRow(rows, RowWorkload::kBandwidth, 64 << 10, Memory::kLibrary);
  absl::StrAppend(&out, Target(rows, RowWorkload::kBandwidth, 64 << 10,
                               "64 KiB bandwidth"));
  if (bw64k == nullptr || !bw64k->value) {
    // The largest size up to 64 KiB with a figure stands in.
    const Row* best = nullptr;
    for (const Row& row : rows) {
      if (row.workload == RowWorkload::kBandwidth &&
          row.memory == Memory::kLibrary && row.value &&
          row.size <= (64 << 10) &&
          (best == nullptr || row.size > best->size)) {
        best = &row;
      }
    }
    if (best != nullptr) {
      absl::StrAppend(
          &out,
          Target(rows, RowWorkload::kBandwidth, best->size,
                 absl::StrCat(FormatSize(best->size), " bandwidth").c_str()));
    }
  }
  absl::StrAppend(&out,
                  Target(rows, RowWorkload::kMsgRate, 64, "64 B message rate"));
  absl::StrAppend(&out, AppMemoryTarget(rows));
  if (!info.notes.empty()) absl::StrAppend(&out, "\n", info.notes, "\n");
  return out;
}

std::optional<double> PeerRatio(const PeerRow& peer,
                                const std::vector<Row>& rows) {
  const Row* demi = FindRow(rows, peer.workload, peer.size, Memory::kLibrary);
  if (demi == nullptr) return std::nullopt;
  return Ratio(peer.value, demi->baseline);
}

}  // namespace demi::bench
