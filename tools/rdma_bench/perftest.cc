#include "tools/rdma_bench/perftest.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

extern char** environ;

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

// The last `lines` lines of `text`, for error messages.
std::string Tail(absl::string_view text, size_t lines = 4) {
  std::vector<absl::string_view> all =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), '\n');
  size_t from = all.size() > lines ? all.size() - lines : 0;
  std::vector<absl::string_view> tail(all.begin() + from, all.end());
  return absl::StrJoin(tail, " | ");
}

// A child process whose stdout and stderr go to one pipe read here.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    Kill();
    if (fd_ >= 0) close(fd_);
  }

  absl::Status Spawn(const std::vector<std::string>& argv) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      return absl::ErrnoToStatus(errno, "pipe2");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    std::vector<char*> args;
    for (const std::string& arg : argv) {
      args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);
    int rc =
        posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    fd_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      return absl::ErrnoToStatus(rc, absl::StrCat("spawning ", argv[0]));
    }
    return absl::OkStatus();
  }

  // Appends what the child wrote, waiting up to `wait` for something. False
  // once the pipe is closed (the child exited) and drained.
  bool Read(absl::Duration wait) {
    if (fd_ < 0) return false;
    pollfd p = {fd_, POLLIN, 0};
    int ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(wait)));
    if (ready <= 0) return true;
    char buffer[4096];
    ssize_t n = read(fd_, buffer, sizeof(buffer));
    if (n > 0) {
      output_.append(buffer, static_cast<size_t>(n));
      return true;
    }
    if (n < 0 && errno == EINTR) return true;
    close(fd_);
    fd_ = -1;
    return false;
  }

  // True (and the exit status) once the child has exited.
  bool Exited(int* status = nullptr) {
    if (pid_ > 0) {
      int raw = 0;
      if (waitpid(pid_, &raw, WNOHANG) == pid_) {
        pid_ = -1;
        status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
      }
    }
    if (status != nullptr) *status = status_;
    return pid_ <= 0;
  }

  // Reads until the child exits or `deadline` passes; true if it exited.
  bool WaitUntil(absl::Time deadline) {
    while (absl::Now() < deadline) {
      if (!Read(absl::Milliseconds(100)) && Exited()) return true;
      if (fd_ >= 0) continue;
      if (Exited()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return Exited();
  }

  // Kills the child (only this one process) if it still runs.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int raw = 0;
    waitpid(pid_, &raw, 0);
    pid_ = -1;
    status_ = 128 + SIGKILL;
  }

  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int status_ = -1;
  std::string output_;
};

// True if some socket listens on TCP `port` (IPv4 or IPv6). perftest's
// "Waiting for client" banner cannot tell: its stdout is a pipe here, so
// the banner sits in its buffer.
bool ListensOn(uint16_t port) {
  const std::string hex = absl::StrFormat(":%04X", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream file(table);
    std::string line;
    while (std::getline(file, line)) {
      // "sl local_address rem_address st ...": state 0A is LISTEN.
      std::vector<absl::string_view> fields =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (fields.size() > 3 && absl::EndsWith(fields[1], hex) &&
          fields[3] == "0A") {
        return true;
      }
    }
  }
  return false;
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
    uint16_t port, absl::Duration timeout) {
  PairCommand command;
  command.server = {tool};
  command.server.insert(command.server.end(), args.begin(), args.end());
  command.server.push_back("-p");
  command.server.push_back(absl::StrCat(port));
  command.client = command.server;
  command.client.push_back("127.0.0.1");
  command.listen_port = port;
  command.client_final_failure = "Parser function exited";
  command.server_report = "#bytes";
  return RunPair(command, timeout);
}

absl::StatusOr<PerftestOutputs> RunPair(const PairCommand& command,
                                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const std::string& tool = command.server.front();
  Child server;
  if (absl::Status s = server.Spawn(command.server); !s.ok()) return s;
  if (command.listen_port != 0) {
    const absl::Time listen_deadline =
        std::min(deadline, absl::Now() + absl::Seconds(30));
    while (!ListensOn(command.listen_port)) {
      if (absl::Now() >= listen_deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            tool,
            " server never waited for a client: ", Tail(server.output())));
      }
      if (!server.Read(absl::Milliseconds(20)) && server.Exited()) {
        return absl::UnavailableError(absl::StrCat(
            tool, " server exited early: ", Tail(server.output())));
      }
    }
  } else {
    const absl::Time started = absl::Now() + absl::Milliseconds(500);
    while (absl::Now() < started) server.Read(absl::Milliseconds(50));
  }
  PerftestOutputs outputs;
  int client_status = -1;
  constexpr int kAttempts = 5;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    Child client;
    if (absl::Status s = client.Spawn(command.client); !s.ok()) return s;
    while (!client.WaitUntil(
        std::min(deadline, absl::Now() + absl::Milliseconds(200)))) {
      server.Read(absl::ZeroDuration());
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            tool, " did not finish in ", absl::FormatDuration(timeout),
            "; client: ", Tail(client.output()),
            "; server: ", Tail(server.output())));
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
  const absl::Time server_deadline =
      std::min(deadline, absl::Now() + absl::Seconds(10));
  server.WaitUntil(server_deadline);
  server.Kill();
  outputs.server = server.output();
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
