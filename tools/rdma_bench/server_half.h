// The server half of a baseline or peer pair (perftest, ucx_perftest,
// rstream): a program started before its client and collected after it,
// either on this host or on the host of an `rdma_bench --server`.
//
// Across two hosts the --client cannot start programs on the server's host
// itself, so `rdma_bench --server` runs a pair helper beside its demi
// service: a small TCP service on the server's address and the same port
// number, which starts the server half of each pair when the client asks and
// sends back its exit status and output. One request per TCP connection,
// text lines with tab-separated fields:
//
//   client: RUN <listen port> <argv0> <argv1> ...
//   helper: STARTED                  the program listens on the port (or,
//                                    for port 0, has run for half a second)
//           FAILED <why>             it did not start or exited early
//   client: WAIT <milliseconds>      once its own half is done
//   helper: EXIT <status> <bytes>    and then that many bytes of output
//                                    (the program is killed if it has not
//                                    exited within the wait)
//
//   client: DONE                     the client has finished
//   helper: BYE                      and the helper ends
//
// The helper runs only the programs it was given (kHelperPrograms by
// default), one at a time, but with whatever arguments the client sends:
// it trusts its client, like the benchmark it serves (a test network only).
//
// Thread-safety: none; each object belongs to one thread.

#ifndef DEMI_TOOLS_RDMA_BENCH_SERVER_HALF_H_
#define DEMI_TOOLS_RDMA_BENCH_SERVER_HALF_H_

#include <netinet/in.h>

#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace demi::bench {

// What the pair helper agrees to run.
inline constexpr const char* kHelperPrograms[] = {
    "ib_send_lat", "ib_send_bw", "ib_read_bw", "ucx_perftest", "rstream"};

// A started server half.
class ServerHalf {
 public:
  virtual ~ServerHalf() = default;

  // Takes what the program wrote so far (local halves; a remote half's
  // output comes with Finish).
  virtual void Pump() = 0;

  // True once the program is known to have exited (a remote half knows only
  // at Finish).
  virtual bool Exited() = 0;

  // Waits until `deadline` for the program to exit, kills it if it has
  // not, and gives its exit status and output. Once.
  struct Result {
    int status = -1;
    std::string output;
  };
  virtual absl::StatusOr<Result> Finish(absl::Time deadline) = 0;
};

// Starts `argv` here and waits (until `deadline`, at most 30 s) until it
// listens on TCP `listen_port`, or, for port 0, half a second.
absl::StatusOr<std::unique_ptr<ServerHalf>> StartLocalServerHalf(
    const std::vector<std::string>& argv, uint16_t listen_port,
    absl::Time deadline);

// Asks the pair helper at `helper` to start `argv` there, as above.
absl::StatusOr<std::unique_ptr<ServerHalf>> StartRemoteServerHalf(
    const sockaddr_in& helper, const std::vector<std::string>& argv,
    uint16_t listen_port, absl::Time deadline);

// Tells the pair helper at `helper` that the client has finished.
absl::Status EndPairHelper(const sockaddr_in& helper);

// The pair helper of an `rdma_bench --server`.
class PairHelper {
 public:
  // Listens on TCP `address`; runs only `programs` (argv[0] as given).
  static absl::StatusOr<std::unique_ptr<PairHelper>> Listen(
      const sockaddr_in& address,
      std::vector<std::string> programs = {std::begin(kHelperPrograms),
                                           std::end(kHelperPrograms)});
  ~PairHelper();
  PairHelper(const PairHelper&) = delete;
  PairHelper& operator=(const PairHelper&) = delete;

  // Serves requests, one at a time, until a client says DONE or `idle`
  // passes without a request. OK after DONE; DeadlineExceeded when idle.
  absl::Status Serve(absl::Duration idle);

 private:
  PairHelper(int fd, std::vector<std::string> programs)
      : fd_(fd), programs_(std::move(programs)) {}
  bool Allowed(const std::string& program) const;

  const int fd_;
  const std::vector<std::string> programs_;
};

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_SERVER_HALF_H_
