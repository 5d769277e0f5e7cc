// Command-line options of rdma_bench and the small parsers behind them.

#ifndef DEMI_TOOLS_RDMA_BENCH_OPTIONS_H_
#define DEMI_TOOLS_RDMA_BENCH_OPTIONS_H_

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace demi::bench {

enum class Role { kLocal, kServer, kClient };

// Where a message's memory comes from: demi_sgaalloc, or the application's
// own (malloc'ed, pushed with sga_buf == NULL).
enum class Memory { kLibrary, kApplication };

// "lib" or "app": what --memory takes and the table, JSON and CSV print.
const char* MemoryLabel(Memory memory);

// How the server answers a ping-pong message: by pushing back the array it
// popped (zero copy, what Demikernel's echo servers do: the default), or by
// pushing a reply buffer of its own, of the cell's memory kind.
enum class EchoMode { kPopped, kBuffer };

struct Workloads {
  bool latency = true;    // ping-pong
  bool rate = true;       // messages per second, windowed stream
  bool bandwidth = true;  // bytes per second, the same windowed stream
};

struct Options {
  Role role = Role::kLocal;
  // The server's address: what --server binds and --client connects to.
  // --local uses $DEMI_RDMA_ADDR (else 10.77.0.1) and a per-process port.
  sockaddr_in address{};
  std::vector<uint64_t> sizes;   // message sizes, in bytes, ascending
  std::vector<Memory> memories;  // variants to measure
  Workloads workloads;
  uint32_t window = 32;         // pushes outstanding per connection
  uint32_t connections = 1;     // connections used at once
  uint32_t duration_ms = 200;   // time budget of one measured cell
  uint32_t min_iterations = 5;  // measured iterations, at least
  // The whole measurement this many times in turn, each figure the median
  // of its rounds (the emulated machine's speed drifts between cells;
  // interleaved rounds cancel most of it). A round goes size by size, each
  // size's library cells then its perftest cells (StepsOfRound).
  uint32_t rounds = 1;
  // Not a flag: whether this measurement includes the single-connection
  // rows (datagram and Demikernel-style latency, with latency on). A round
  // runs them in its first step only (StepsOfRound, rounds.h).
  bool single_rows = true;
  EchoMode echo = EchoMode::kPopped;  // how the server answers pings
  bool quick = false;                 // the short preset (tests)
  bool baseline = false;              // also run perftest
  bool baseline_all = false;          // perftest even where demi is n/a
  bool peers = false;                 // also UCX and rstream (implies baseline)
  std::string device;                 // perftest -d (default rxe0)
  std::string json_path;              // --json FILE
  std::string csv_path;               // --csv FILE
  std::string plot_path;              // --plot FILE.png
};

// The default sweep: 8 B, then powers of 4 from 64 B to 64 MiB, with 8 KiB
// (the library's eager limit today) added.
std::vector<uint64_t> DefaultSizes();

// Parses one size: a decimal number of bytes with an optional binary suffix
// K, M or G (KiB, MiB, GiB; "KiB" and "B" spellings accepted). Positive and
// at most 1 GiB.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text);

// Parses a comma-separated list of sizes; the result is sorted and free of
// duplicates. Never empty on success.
absl::StatusOr<std::vector<uint64_t>> ParseSizeList(absl::string_view text);

// Parses "A.B.C.D:PORT" (IPv4 only, port 1..65535).
absl::StatusOr<sockaddr_in> ParseAddress(absl::string_view text);

// "A.B.C.D:PORT" and "A.B.C.D": the inverses of ParseAddress.
std::string AddressText(const sockaddr_in& address);
std::string HostText(const sockaddr_in& address);

// "8 B", "64 KiB", "1.5 MiB": for tables and progress lines.
std::string FormatSize(uint64_t bytes);

// Parses argv (without consulting the environment, except for --local's
// address: $DEMI_RDMA_ADDR). Errors name the offending argument. `*help` is
// set when --help was given (then the result is default options).
absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv,
                                     bool* help);

// The --help text.
std::string Usage();

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_OPTIONS_H_
