#include "tools/rdma_bench/peers.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/perftest.h"

namespace demi::bench {
namespace {

// Whitespace-separated fields of the first line of `output` that starts
// with `prefix` (after leading spaces), or empty.
std::vector<std::string> FieldsOfLine(absl::string_view output,
                                      absl::string_view prefix) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(line);
    if (!absl::StartsWith(trimmed, prefix)) continue;
    return absl::StrSplit(trimmed, ' ', absl::SkipEmpty());
  }
  return {};
}

// The row of `tool` for `cell`, without a figure yet.
PeerRow RowFor(std::string tool, const PeerCell& cell,
               std::string reason = "") {
  PeerRow row;
  row.tool = std::move(tool);
  row.workload = cell.workload;
  row.size = cell.size;
  row.reason = std::move(reason);
  return row;
}

// Messages a stream run sends: about 64 MiB, within [500, 20000].
uint64_t StreamMessages(uint64_t size) {
  return std::clamp<uint64_t>((uint64_t{64} << 20) / size, 500, 20000);
}

// The runs made so far, by what they measured (tool, test, size; not the
// port): the message rate and the bandwidth of one size come from the same
// stream run, as demi's and perftest's do.
using RunCache = std::map<std::string, absl::StatusOr<PerftestOutputs>>;

absl::StatusOr<PerftestOutputs> RunOnce(const std::string& key,
                                        const PairCommand& command,
                                        absl::Duration timeout,
                                        RunCache& cache) {
  auto cached = cache.find(key);
  if (cached != cache.end()) return cached->second;
  absl::StatusOr<PerftestOutputs> outputs = RunPair(command, timeout);
  cache.emplace(key, outputs);
  return outputs;
}

// Round trips of a latency run: `iterations` up to 32 KiB, then fewer (about
// 64 MiB each way), at least 50, so a large size fits the run's timeout
// under emulation too.
uint64_t LatencyIterations(uint64_t size, uint64_t iterations) {
  return std::clamp<uint64_t>((uint64_t{64} << 20) / size, 50, iterations);
}

// Runs `command` (once per `key`) and reads the client's output with
// `parse`; on failure `row` gets the reason and the result is empty.
template <typename Figures>
std::optional<Figures> Measure(
    const std::string& key, const PairCommand& command,
    const PeerSettings& settings, RunCache& cache,
    absl::StatusOr<Figures> (*parse)(absl::string_view), PeerRow& row) {
  absl::StatusOr<PerftestOutputs> outputs =
      RunOnce(key, command, settings.timeout, cache);
  if (!outputs.ok()) {
    row.reason = std::string(outputs.status().message());
    return std::nullopt;
  }
  absl::StatusOr<Figures> figures = parse(outputs->client);
  if (!figures.ok()) {
    row.reason = std::string(figures.status().message());
    return std::nullopt;
  }
  return *figures;
}

PeerRow RunUcx(const std::string& api, const PeerCell& cell,
               const PeerSettings& settings, uint16_t port, RunCache& cache) {
  PeerRow row = RowFor(absl::StrCat("ucx ", api), cell);
  const bool latency = cell.workload == RowWorkload::kLatency;
  const std::string test = api == "am" ? (latency ? "ucp_am_lat" : "ucp_am_bw")
                                       : (latency ? "tag_lat" : "tag_bw");
  const uint64_t n =
      latency ? LatencyIterations(cell.size, settings.latency_iterations)
              : StreamMessages(cell.size);
  PairCommand command;
  command.server = {"ucx_perftest", "-p", absl::StrCat(port)};
  command.client = {"ucx_perftest",
                    settings.remote.has_value() ? HostText(*settings.remote)
                                                : std::string("127.0.0.1"),
                    "-p",
                    absl::StrCat(port),
                    "-t",
                    test,
                    "-s",
                    absl::StrCat(cell.size),
                    "-n",
                    absl::StrCat(n),
                    "-w",
                    absl::StrCat(std::max<uint64_t>(n / 10, 10))};
  command.listen_port = port;
  command.remote = settings.remote;
  std::optional<UcxFigures> figures =
      Measure(absl::StrCat("ucx ", test, " ", cell.size), command, settings,
              cache, &ParseUcxPerftest, row);
  if (!figures) return row;
  if (latency) {
    row.value = figures->median_us;
  } else if (cell.workload == RowWorkload::kMsgRate) {
    row.value = figures->messages_per_s / 1e6;
  } else {
    row.value = figures->mib_per_s;
  }
  return row;
}

PeerRow RunRstream(const PeerCell& cell, const PeerSettings& settings,
                   uint16_t port, RunCache& cache) {
  PeerRow row = RowFor("rstream", cell);
  const bool latency = cell.workload == RowWorkload::kLatency;
  // Latency: one transfer each way per iteration; streams: one iteration
  // of many transfers.
  const uint64_t transfers = latency ? 1 : StreamMessages(cell.size);
  const uint64_t iterations =
      latency ? LatencyIterations(cell.size, settings.latency_iterations) : 1;
  PairCommand command;
  command.server = {"rstream",
                    "-S",
                    absl::StrCat(cell.size),
                    "-C",
                    absl::StrCat(transfers),
                    "-I",
                    absl::StrCat(iterations),
                    "-p",
                    absl::StrCat(port)};
  command.client = command.server;
  command.client.push_back("-s");
  command.client.push_back(settings.rdma_address);
  command.remote = settings.remote;
  std::optional<RstreamFigures> figures = Measure(
      absl::StrCat("rstream ", latency ? "latency " : "stream ", cell.size),
      command, settings, cache, &ParseRstream, row);
  if (!figures) return row;
  if (latency) {
    row.value = figures->usec_per_transfer;
  } else if (cell.workload == RowWorkload::kMsgRate) {
    row.value = 1.0 / figures->usec_per_transfer;  // per microsecond = M/s
  } else {
    // Bytes per transfer time (its Gb/sec has two decimals: 0.00 at 64 B).
    row.value = static_cast<double>(cell.size) / figures->usec_per_transfer *
                1e6 / (1 << 20);
  }
  return row;
}

}  // namespace

// UCX on rxe: rc_verbs needs ud_verbs to wire up, and the UD DGID check
// never passes on RoCE (PEERS.md). Set for the children unless the user set
// them.
void SetUcxEnvironment(const std::string& device) {
  setenv("UCX_TLS", "rc_verbs,ud_verbs,self", 0);
  setenv("UCX_UD_ETH_DGID_CHECK", "n", 0);
  setenv("UCX_NET_DEVICES", absl::StrCat(device, ":1").c_str(), 0);
  setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
}

absl::StatusOr<UcxFigures> ParseUcxPerftest(absl::string_view output) {
  // Final: ITERATIONS LAT50 LAT_AVG LAT_ALL BW_AVG BW_ALL RATE_AVG RATE_ALL
  std::vector<std::string> fields = FieldsOfLine(output, "Final:");
  if (fields.size() < 9) {
    return absl::NotFoundError("ucx_perftest printed no \"Final:\" line");
  }
  UcxFigures figures;
  if (!absl::SimpleAtod(fields[2], &figures.median_us) ||
      !absl::SimpleAtod(fields[6], &figures.mib_per_s) ||
      !absl::SimpleAtod(fields[8], &figures.messages_per_s)) {
    return absl::InvalidArgumentError(
        "ucx_perftest's \"Final:\" line has a field that is not a number");
  }
  if (figures.median_us <= 0 && figures.mib_per_s <= 0) {
    return absl::InvalidArgumentError("ucx_perftest reported zeros");
  }
  return figures;
}

absl::StatusOr<RstreamFigures> ParseRstream(absl::string_view output) {
  // name bytes xfers iters total time Gb/sec usec/xfer, then one line of
  // figures (its first field is the test's name).
  bool header = false;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() == 8 && fields[0] == "name" && fields[6] == "Gb/sec") {
      header = true;
      continue;
    }
    if (!header || fields.size() != 8) continue;
    RstreamFigures figures;
    if (!absl::SimpleAtod(fields[6], &figures.gbit_per_s) ||
        !absl::SimpleAtod(fields[7], &figures.usec_per_transfer) ||
        figures.usec_per_transfer <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("rstream's result line is not understood: ", line));
    }
    return figures;
  }
  return absl::NotFoundError("rstream printed no result line");
}

std::vector<PeerRow> RunPeers(const std::vector<PeerCell>& cells,
                              const PeerSettings& settings,
                              void (*progress)(const std::string& line)) {
  std::vector<PeerRow> rows;
  const bool have_ucx = !FindOnPath("ucx_perftest").empty();
  const bool have_rstream = !FindOnPath("rstream").empty();
  if (have_ucx) SetUcxEnvironment(settings.device);
  uint16_t port = settings.first_port;
  RunCache cache;
  auto report = [&](const PeerRow& row) {
    if (progress == nullptr) return;
    progress(absl::StrCat(
        "peer ", row.tool, " ", WorkloadName(row.workload), " ", row.size,
        " B: ", row.value ? absl::StrCat(*row.value) : row.reason));
  };
  for (const PeerCell& cell : cells) {
    for (const char* api : {"am", "tag"}) {
      PeerRow row = have_ucx ? RunUcx(api, cell, settings, port++, cache)
                             : RowFor(absl::StrCat("ucx ", api), cell,
                                      "ucx_perftest is not installed "
                                      "(apt-get install ucx-utils)");
      report(row);
      rows.push_back(std::move(row));
    }
    PeerRow row = have_rstream ? RunRstream(cell, settings, port++, cache)
                               : RowFor("rstream", cell,
                                        "rstream is not installed (apt-get "
                                        "install rdmacm-utils)");
    report(row);
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace demi::bench
