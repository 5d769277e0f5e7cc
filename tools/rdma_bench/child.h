// Child: a program rdma_bench runs beside itself (perftest, a peer's tool),
// with its stdout and stderr read into one string; and the small helpers
// that watch such programs.
//
// Thread-safety: a Child belongs to one thread.

#ifndef DEMI_TOOLS_RDMA_BENCH_CHILD_H_
#define DEMI_TOOLS_RDMA_BENCH_CHILD_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace demi::bench {

// A child process whose stdout and stderr go to one pipe read here. The
// destructor kills the child if it still runs.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();

  // Starts argv[0] (looked up on $PATH) with stdin from /dev/null and this
  // process's environment. At most once per Child.
  absl::Status Spawn(const std::vector<std::string>& argv);

  // Appends what the child wrote, waiting up to `wait` for something. False
  // once the pipe is closed (the child exited) and drained.
  bool Read(absl::Duration wait);

  // True (and the exit status: 128 + signal if killed) once the child has
  // exited.
  bool Exited(int* status = nullptr);

  // Reads until the child exits or `deadline` passes; true if it exited.
  bool WaitUntil(absl::Time deadline);

  // Kills the child (only this one process) if it still runs, waiting at
  // most 10 s for it to go.
  void Kill();

  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int status_ = -1;
  std::string output_;
};

// The last `lines` lines of `text` joined by " | ", for error messages.
std::string Tail(absl::string_view text, size_t lines = 4);

// True if some socket of this host listens on TCP `port` (IPv4 or IPv6).
bool ListensOn(uint16_t port);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_CHILD_H_
