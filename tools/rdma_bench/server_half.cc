#include "tools/rdma_bench/server_half.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "tools/rdma_bench/child.h"
#include "tools/rdma_bench/options.h"

namespace demi::bench {
namespace {

// Milliseconds from now until `deadline`, for poll (0 once passed).
int MillisUntil(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Waits until `fd` is readable; DeadlineExceeded once `deadline` passes.
absl::Status AwaitReadable(int fd, absl::Time deadline) {
  for (;;) {
    pollfd p = {fd, POLLIN, 0};
    const int ready = poll(&p, 1, MillisUntil(deadline));
    if (ready > 0) return absl::OkStatus();
    if (ready < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
    if (ready == 0 && absl::Now() >= deadline) {
      return absl::DeadlineExceededError("the pair helper's peer went quiet");
    }
  }
}

absl::Status WriteAll(int fd, absl::string_view text) {
  while (!text.empty()) {
    const ssize_t n = send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "pair helper connection");
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads exactly `bytes` bytes.
absl::StatusOr<std::string> ReadExactly(int fd, size_t bytes,
                                        absl::Time deadline) {
  std::string data(bytes, '\0');
  size_t have = 0;
  while (have < bytes) {
    if (absl::Status s = AwaitReadable(fd, deadline); !s.ok()) return s;
    const ssize_t n = recv(fd, data.data() + have, bytes - have, 0);
    if (n == 0) return absl::UnavailableError("pair helper connection closed");
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "pair helper connection");
    }
    have += static_cast<size_t>(n);
  }
  return data;
}

// Reads one line (without its '\n'); lines are short, so byte by byte.
absl::StatusOr<std::string> ReadLine(int fd, absl::Time deadline) {
  constexpr size_t kMaxLine = 64 * 1024;
  std::string line;
  for (;;) {
    absl::StatusOr<std::string> byte = ReadExactly(fd, 1, deadline);
    if (!byte.ok()) return byte.status();
    if ((*byte)[0] == '\n') return line;
    if (line.size() >= kMaxLine) {
      return absl::InvalidArgumentError("pair helper line too long");
    }
    line += *byte;
  }
}

// A TCP connection to `address`, given up after 10 s.
absl::StatusOr<int> Connect(const sockaddr_in& address) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  const timeval limit = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address),
              sizeof(address)) != 0) {
    const int e = errno == EINPROGRESS ? ETIMEDOUT : errno;
    close(fd);
    return absl::ErrnoToStatus(
        e,
        absl::StrCat("connecting to the pair helper at ", AddressText(address),
                     " (is rdma_bench --server running there?)"));
  }
  return fd;
}

class LocalServerHalf final : public ServerHalf {
 public:
  Child& child() { return child_; }
  void Pump() override { child_.Read(absl::ZeroDuration()); }
  bool Exited() override { return child_.Exited(); }
  absl::StatusOr<Result> Finish(absl::Time deadline) override {
    child_.WaitUntil(deadline);
    child_.Kill();
    Result result;
    child_.Exited(&result.status);
    result.output = child_.output();
    return result;
  }

 private:
  Child child_;
};

class RemoteServerHalf final : public ServerHalf {
 public:
  explicit RemoteServerHalf(int fd) : fd_(fd) {}
  ~RemoteServerHalf() override { close(fd_); }
  void Pump() override {}
  bool Exited() override { return false; }
  absl::StatusOr<Result> Finish(absl::Time deadline) override {
    const int64_t wait_ms = MillisUntil(deadline);
    if (absl::Status s = WriteAll(fd_, absl::StrCat("WAIT\t", wait_ms, "\n"));
        !s.ok()) {
      return s;
    }
    // The helper answers after the wait at the latest.
    const absl::Time answer_by = deadline + absl::Seconds(30);
    absl::StatusOr<std::string> line = ReadLine(fd_, answer_by);
    if (!line.ok()) return line.status();
    std::vector<absl::string_view> fields = absl::StrSplit(*line, '\t');
    Result result;
    size_t bytes = 0;
    if (fields.size() != 3 || fields[0] != "EXIT" ||
        !absl::SimpleAtoi(fields[1], &result.status) ||
        !absl::SimpleAtoi(fields[2], &bytes) || bytes > (64u << 20)) {
      return absl::DataLossError(
          absl::StrCat("pair helper: unexpected answer '", *line, "'"));
    }
    absl::StatusOr<std::string> output = ReadExactly(fd_, bytes, answer_by);
    if (!output.ok()) return output.status();
    result.output = *std::move(output);
    return result;
  }

 private:
  const int fd_;
};

// Starts `argv` in `child` and waits until it listens on `listen_port`
// (or, for 0, half a second); the one start rule of local and helper runs.
absl::Status StartListening(Child& child, const std::vector<std::string>& argv,
                            uint16_t listen_port, absl::Time deadline) {
  if (absl::Status s = child.Spawn(argv); !s.ok()) return s;
  const std::string& tool = argv.front();
  if (listen_port == 0) {
    const absl::Time started = absl::Now() + absl::Milliseconds(500);
    while (absl::Now() < started) child.Read(absl::Milliseconds(50));
    return absl::OkStatus();
  }
  const absl::Time listen_deadline =
      std::min(deadline, absl::Now() + absl::Seconds(30));
  while (!ListensOn(listen_port)) {
    if (absl::Now() >= listen_deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          tool, " server never waited for a client: ", Tail(child.output())));
    }
    if (!child.Read(absl::Milliseconds(20)) && child.Exited()) {
      return absl::UnavailableError(
          absl::StrCat(tool, " server exited early: ", Tail(child.output())));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerHalf>> StartLocalServerHalf(
    const std::vector<std::string>& argv, uint16_t listen_port,
    absl::Time deadline) {
  auto half = std::make_unique<LocalServerHalf>();
  if (absl::Status s =
          StartListening(half->child(), argv, listen_port, deadline);
      !s.ok()) {
    return s;
  }
  return half;
}

absl::StatusOr<std::unique_ptr<ServerHalf>> StartRemoteServerHalf(
    const sockaddr_in& helper, const std::vector<std::string>& argv,
    uint16_t listen_port, absl::Time deadline) {
  for (const std::string& arg : argv) {
    if (arg.find_first_of("\t\n") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("argument with a tab or newline: ", arg));
    }
  }
  absl::StatusOr<int> fd = Connect(helper);
  if (!fd.ok()) return fd.status();
  auto half = std::make_unique<RemoteServerHalf>(*fd);
  if (absl::Status s =
          WriteAll(*fd, absl::StrCat("RUN\t", listen_port, "\t",
                                     absl::StrJoin(argv, "\t"), "\n"));
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> line = ReadLine(*fd, deadline + absl::Seconds(5));
  if (!line.ok()) return line.status();
  if (*line == "STARTED") return half;
  std::pair<absl::string_view, absl::string_view> failed =
      absl::StrSplit(*line, absl::MaxSplits('\t', 1));
  if (failed.first == "FAILED") {
    return absl::UnavailableError(
        absl::StrCat("on the server's host: ", failed.second));
  }
  return absl::DataLossError(
      absl::StrCat("pair helper: unexpected answer '", *line, "'"));
}

absl::Status EndPairHelper(const sockaddr_in& helper) {
  absl::StatusOr<int> fd = Connect(helper);
  if (!fd.ok()) return fd.status();
  absl::Status s = WriteAll(*fd, "DONE\n");
  if (s.ok()) {
    absl::StatusOr<std::string> line =
        ReadLine(*fd, absl::Now() + absl::Seconds(10));
    if (!line.ok()) {
      s = line.status();
    } else if (*line != "BYE") {
      s = absl::DataLossError(
          absl::StrCat("pair helper: unexpected answer '", *line, "'"));
    }
  }
  close(*fd);
  return s;
}

absl::StatusOr<std::unique_ptr<PairHelper>> PairHelper::Listen(
    const sockaddr_in& address, std::vector<std::string> programs) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) !=
          0 ||
      listen(fd, 4) != 0) {
    const int e = errno;
    close(fd);
    return absl::ErrnoToStatus(e, "pair helper: bind/listen");
  }
  return std::unique_ptr<PairHelper>(new PairHelper(fd, std::move(programs)));
}

PairHelper::~PairHelper() { close(fd_); }

bool PairHelper::Allowed(const std::string& program) const {
  return std::find(programs_.begin(), programs_.end(), program) !=
         programs_.end();
}

absl::Status PairHelper::Serve(absl::Duration idle) {
  for (;;) {
    if (absl::Status s = AwaitReadable(fd_, absl::Now() + idle); !s.ok()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "pair helper: no request for ", absl::FormatDuration(idle)));
    }
    const int connection = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return absl::ErrnoToStatus(errno, "pair helper: accept");
    }
    // One request; a connection that breaks it ends only itself.
    absl::StatusOr<std::string> line =
        ReadLine(connection, absl::Now() + absl::Seconds(10));
    if (line.ok() && *line == "DONE") {
      (void)WriteAll(connection, "BYE\n");
      close(connection);
      return absl::OkStatus();
    }
    std::vector<std::string> fields;
    if (line.ok()) fields = absl::StrSplit(*line, '\t');
    uint32_t port = 0;
    if (fields.size() < 3 || fields[0] != "RUN" ||
        !absl::SimpleAtoi(fields[1], &port) || port > 65535 ||
        !Allowed(fields[2])) {
      (void)WriteAll(connection, "FAILED\tnot a request this helper takes\n");
      close(connection);
      continue;
    }
    std::vector<std::string> argv(fields.begin() + 2, fields.end());
    LocalServerHalf half;
    absl::Status started =
        StartListening(half.child(), argv, static_cast<uint16_t>(port),
                       absl::Now() + absl::Seconds(30));
    if (!started.ok()) {
      std::string why(started.message());
      std::replace(why.begin(), why.end(), '\n', ' ');
      (void)WriteAll(connection, absl::StrCat("FAILED\t", why, "\n"));
      close(connection);
      continue;
    }
    (void)WriteAll(connection, "STARTED\n");
    // The client's half may take as long as the pair's own timeout; the
    // program's output is taken meanwhile so that it never blocks on a
    // full pipe.
    absl::StatusOr<std::string> wait =
        absl::DeadlineExceededError("no WAIT from the client");
    for (const absl::Time wait_by = absl::Now() + idle;
         absl::Now() < wait_by;) {
      half.Pump();
      pollfd p = {connection, POLLIN, 0};
      if (poll(&p, 1, 50) > 0) {
        wait = ReadLine(connection, absl::Now() + absl::Seconds(10));
        break;
      }
    }
    std::vector<absl::string_view> wait_fields;
    if (wait.ok()) wait_fields = absl::StrSplit(*wait, '\t');
    int64_t wait_ms = 0;
    if (wait_fields.size() != 2 || wait_fields[0] != "WAIT" ||
        !absl::SimpleAtoi(wait_fields[1], &wait_ms) || wait_ms < 0) {
      close(connection);  // the half is killed as it goes
      continue;
    }
    absl::StatusOr<ServerHalf::Result> result =
        half.Finish(absl::Now() + absl::Milliseconds(wait_ms));
    if (result.ok()) {
      (void)WriteAll(connection,
                     absl::StrCat("EXIT\t", result->status, "\t",
                                  result->output.size(), "\n", result->output));
    }
    close(connection);
  }
}

}  // namespace demi::bench
