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
#include <atomic>
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
#include "tools/rdma_bench/progress.h"
#include "tools/rdma_bench/report.h"
#include "tools/rdma_bench/rounds.h"
#include "tools/rdma_bench/runs.h"
#include "tools/rdma_bench/server_half.h"

extern char** environ;

namespace demi::bench {
namespace {

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

// Results the previous step left behind (operations of its closed queues,
// cancelled at close): taken, their arrays freed, so that the next step's
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

// A --local server child waiting for its step (see ForkServers).
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
  const std::vector<Options> steps = StepsOfRound(options);
  std::vector<std::vector<Row>> measured;
  std::string notes;
  size_t next = 0;  // the next server child (one per step of every round)
  for (uint32_t round = 0; round < rounds; ++round) {
    std::vector<Row> round_rows;
    for (const Options& step : steps) {
      if (rounds > 1 || steps.size() > 1) {
        Progress(absl::StrCat("round ", round + 1, " of ", rounds, ", ",
                              FormatSize(step.sizes.front())));
      }
      const size_t server = next++;
      const bool local = server < servers.size();
      if (local) {
        const char go = 1;
        if (write(servers[server].start, &go, 1) != 1) {
          Progress("cannot start the server of this step");
          reap_all(server);
          return 1;
        }
        close(servers[server].start);
      }
      if (server > 0) DropLeftovers();
      absl::StatusOr<std::vector<Row>> rows = Measure(step);
      if (local) {
        int status =
            ReapServer(servers[server].pid,
                       rows.ok() ? absl::Seconds(10) : absl::ZeroDuration());
        if (rows.ok() && status != 0) {
          Progress(absl::StrCat("the server exited with status ", status));
        }
      }
      if (!rows.ok()) {
        Progress(absl::StrCat("failed: ", rows.status().message()));
        reap_all(server + 1);
        return 1;
      }
      // This step's perftest cells at once, seconds after the library's.
      std::string step_notes;
      if (options.baseline) RunBaselines(step, *rows, &step_notes);
      if (server == 0) notes = step_notes;
      round_rows.insert(round_rows.end(), rows->begin(), rows->end());
    }
    SortRoundRows(&round_rows);
    measured.push_back(std::move(round_rows));
  }
  std::vector<Row> rows = MedianOfRounds(measured);
  if (rounds > 1) {
    notes += absl::StrCat(
        notes.empty() ? "" : "; ", "every figure is the median of ", rounds,
        " rounds, each size by size (its library cells, then its perftest "
        "cells); a ratio is the median of the rounds' own ratios");
  }
  std::vector<PeerRow> peers;
  if (options.peers) peers = RunPeerRows(options, rows);
  int code = Output(options, rows, notes, std::move(peers));
  Progress(absl::StrFormat("done in %.1f s",
                           absl::ToDoubleSeconds(absl::Now() - start)));
  return code;
}

// Forks one server child per step of every round of `options`
// (StepsOfRound), before this process touches the library or starts a
// thread: each child has a libOS of its own and waits (blocked in read, not
// spinning) until its step starts (a byte on its pipe), so only one server
// runs at a time and none while perftest runs. False (after a message) if a
// fork failed.
bool ForkServers(const Options& options, std::vector<LocalServer>* servers) {
  const size_t count =
      std::max<uint32_t>(1, options.rounds) * StepsOfRound(options).size();
  for (size_t step = 0; step < count; ++step) {
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
      const bool quiet = options.role != Role::kServer || step > 0;
      _exit(n == 1 ? RunServer(options, quiet) : 0);
    }
    close(fds[0]);
    servers->push_back({pid, fds[1]});
  }
  return true;
}

// --server: serves the client's steps one after another (a fresh server
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
  // The steps run one after another until the client ends the pair helper
  // (after its last step). It may have measured fewer steps than this side
  // forked (other --sizes or --rounds, e.g. --quick on the client only):
  // then the step server started after its last waits for a client that
  // never comes; it is stopped, and the rest are never started.
  std::atomic<bool> client_done{false};
  std::atomic<pid_t> serving{-1};
  std::atomic<bool> finished{false};
  int failed_steps = 0;
  std::thread steps([&] {
    for (LocalServer& server : servers) {
      if (client_done.load()) {
        close(server.start);  // EOF: the child exits without serving
        ReapServer(server.pid, absl::Seconds(5));
        continue;
      }
      const char go = 1;
      const bool started = write(server.start, &go, 1) == 1;
      close(server.start);
      serving.store(server.pid);
      const int status = ReapServer(server.pid, absl::Hours(2));
      serving.store(-1);
      if ((status != 0 || !started) && !client_done.load()) ++failed_steps;
    }
    finished.store(true);
  });
  absl::Status helped = (*helper)->Serve(absl::Minutes(15));
  // Only a client that said it is done ends the steps early; else they
  // run to their end as before.
  client_done.store(helped.ok());
  while (helped.ok() && !finished.load()) {
    if (const pid_t pid = serving.load(); pid > 0) kill(pid, SIGTERM);
    absl::SleepFor(absl::Milliseconds(100));
  }
  steps.join();
  if (!helped.ok()) Progress(std::string(helped.message()));
  if (failed_steps > 0) {
    Progress(absl::StrCat(failed_steps, " step(s) of the server failed"));
  }
  return helped.ok() && failed_steps == 0 ? 0 : 1;
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
