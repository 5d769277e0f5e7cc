#include "tools/rdma_bench/child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace demi::bench {

Child::~Child() {
  Kill();
  if (fd_ >= 0) close(fd_);
}

absl::Status Child::Spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("no program to run");
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

bool Child::Read(absl::Duration wait) {
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

bool Child::Exited(int* status) {
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

bool Child::WaitUntil(absl::Time deadline) {
  while (absl::Now() < deadline) {
    if (!Read(absl::Milliseconds(100)) && Exited()) return true;
    if (fd_ >= 0) continue;
    if (Exited()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return Exited();
}

void Child::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  // A process stuck in the kernel (tearing down its RDMA resources, say)
  // dies only when that returns: wait a while, never forever.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  int raw = 0;
  while (waitpid(pid_, &raw, WNOHANG) == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  status_ = 128 + SIGKILL;
}

std::string Tail(absl::string_view text, size_t lines) {
  std::vector<absl::string_view> all =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), '\n');
  size_t from = all.size() > lines ? all.size() - lines : 0;
  std::vector<absl::string_view> tail(all.begin() + from, all.end());
  return absl::StrJoin(tail, " | ");
}

// perftest's "Waiting for client" banner cannot tell that a server listens:
// its stdout is a pipe here, so the banner sits in its buffer.
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

}  // namespace demi::bench
