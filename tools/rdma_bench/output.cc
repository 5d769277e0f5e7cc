// rdma_bench: the results out: the table on stdout, JSON, CSV and the plot.

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
#include "tools/rdma_bench/runs.h"
#include "tools/rdma_bench/server_half.h"

namespace demi::bench {
namespace {

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

}  // namespace

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

}  // namespace demi::bench
