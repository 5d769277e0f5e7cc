#include "tools/rdma_bench/perftest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tools/rdma_bench/child.h"
#include "tools/rdma_bench/options.h"
#include "tools/rdma_bench/server_half.h"

namespace demi::bench {
namespace {

// The numbers of the first line after the "#bytes" header whose first field
// is a number; `count` of them, or why not.
absl::StatusOr<std::vector<double>> ResultNumbers(absl::string_view output,
                                                  size_t count) {
  bool after_header = false;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (absl::StrContains(line, "#bytes")) {
      after_header = true;
      continue;
    }
    if (!after_header) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    uint64_t bytes = 0;
    if (fields.empty() || !absl::SimpleAtoi(fields[0], &bytes)) continue;
    if (fields.size() < count) {
      return absl::DataLossError(absl::StrCat("perftest result line has ",
                                              fields.size(), " fields, want ",
                                              count, ": ", line));
    }
    std::vector<double> numbers(count);
    for (size_t i = 0; i < count; ++i) {
      if (!absl::SimpleAtod(fields[i], &numbers[i])) {
        return absl::DataLossError(absl::StrCat(
            "perftest result field '", fields[i], "' is not a number: ", line));
      }
      // "inf" or "nan": perftest's clock failed (seen under emulation).
      if (!std::isfinite(numbers[i])) {
        return absl::DataLossError(absl::StrCat(
            "perftest reported '", fields[i],
            "' (its clock is unreliable under emulation): ", line));
      }
    }
    return numbers;
  }
  if (absl::StrContains(output, "Can't produce a report") ||
      absl::StrContains(output, "Correlation coefficient")) {
    return absl::NotFoundError(
        "perftest could not calibrate its clock (common under emulation)");
  }
  return absl::NotFoundError("no perftest result line in the output");
}

}  // namespace

absl::StatusOr<PerftestLatency> ParseLatencyReport(absl::string_view output) {
  absl::StatusOr<std::vector<double>> n = ResultNumbers(output, 9);
  if (!n.ok()) return n.status();
  const std::vector<double>& v = *n;
  if (v[4] <= 0) {
    return absl::DataLossError(
        "perftest reported a zero latency (its clock is unreliable under "
        "emulation)");
  }
  PerftestLatency result;
  result.bytes = static_cast<uint64_t>(v[0]);
  result.iterations = static_cast<uint64_t>(v[1]);
  result.min_us = v[2];
  result.max_us = v[3];
  result.typical_us = v[4];
  result.average_us = v[5];
  result.stdev_us = v[6];
  result.p99_us = v[7];
  result.p999_us = v[8];
  return result;
}

absl::StatusOr<PerftestBandwidth> ParseBandwidthReport(
    absl::string_view output) {
  absl::StatusOr<std::vector<double>> n = ResultNumbers(output, 5);
  if (!n.ok()) return n.status();
  const std::vector<double>& v = *n;
  if (v[3] <= 0 || v[4] <= 0) {
    return absl::DataLossError(
        "perftest reported zero bandwidth (its clock is unreliable under "
        "emulation)");
  }
  PerftestBandwidth result;
  result.bytes = static_cast<uint64_t>(v[0]);
  result.iterations = static_cast<uint64_t>(v[1]);
  result.peak_mib_s = v[2];
  result.average_mib_s = v[3];
  result.mpps = v[4];
  return result;
}

std::string ReportField(absl::string_view output, absl::string_view name) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    // Header lines may hold two fields: " Dual-port : OFF\t\tDevice : rxe0".
    for (absl::string_view part :
         absl::StrSplit(line, '\t', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(part, absl::MaxSplits(':', 1));
      if (absl::StripAsciiWhitespace(kv.first) == name) {
        return std::string(absl::StripAsciiWhitespace(kv.second));
      }
    }
  }
  return "";
}

absl::StatusOr<PerftestOutputs> RunPerftestPair(
    const std::string& tool, const std::vector<std::string>& args,
    uint16_t port, absl::Duration timeout,
    const std::optional<sockaddr_in>& remote) {
  PairCommand command;
  command.server = {tool};
  command.server.insert(command.server.end(), args.begin(), args.end());
  command.server.push_back("-p");
  command.server.push_back(absl::StrCat(port));
  command.client = command.server;
  command.client.push_back(remote.has_value() ? HostText(*remote)
                                              : std::string("127.0.0.1"));
  command.remote = remote;
  command.listen_port = port;
  command.client_final_failure = "Parser function exited";
  command.server_report = "#bytes";
  return RunPair(command, timeout);
}

absl::StatusOr<PerftestOutputs> RunPair(const PairCommand& command,
                                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const std::string& tool = command.server.front();
  absl::StatusOr<std::unique_ptr<ServerHalf>> started =
      command.remote.has_value()
          ? StartRemoteServerHalf(*command.remote, command.server,
                                  command.listen_port, deadline)
          : StartLocalServerHalf(command.server, command.listen_port, deadline);
  if (!started.ok()) return started.status();
  ServerHalf& server = **started;
  PerftestOutputs outputs;
  int client_status = -1;
  constexpr int kAttempts = 5;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    Child client;
    if (absl::Status s = client.Spawn(command.client); !s.ok()) return s;
    while (!client.WaitUntil(
        std::min(deadline, absl::Now() + absl::Milliseconds(200)))) {
      server.Pump();
      if (absl::Now() >= deadline) {
        absl::StatusOr<ServerHalf::Result> server_end =
            server.Finish(absl::Now());
        return absl::DeadlineExceededError(absl::StrCat(
            tool, " did not finish in ", absl::FormatDuration(timeout),
            "; client: ", Tail(client.output()), "; server: ",
            server_end.ok() ? Tail(server_end->output)
                            : std::string(server_end.status().message())));
      }
    }
    client.Exited(&client_status);
    outputs.client = client.output();
    // A client that raced the server fails at once while the server keeps
    // waiting; anything else (bad arguments, a finished server) is final.
    if (client_status == 0 || server.Exited() ||
        (!command.client_final_failure.empty() &&
         absl::StrContains(outputs.client, command.client_final_failure))) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(300));
  }
  absl::StatusOr<ServerHalf::Result> server_end =
      server.Finish(std::min(deadline, absl::Now() + absl::Seconds(10)));
  if (server_end.ok()) outputs.server = server_end->output;
  if (client_status == 0 ||
      (!command.server_report.empty() &&
       absl::StrContains(outputs.server, command.server_report))) {
    return outputs;
  }
  return absl::UnavailableError(absl::StrCat(tool, " client failed (exit ",
                                             client_status,
                                             "): ", Tail(outputs.client)));
}

std::string FindOnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  // Debian puts perftest in /usr/bin; sbin dirs in case PATH is minimal.
  dirs += ":/usr/bin:/usr/sbin:/sbin";
  for (absl::string_view dir : absl::StrSplit(dirs, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    struct stat info;
    if (stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

}  // namespace demi::bench
