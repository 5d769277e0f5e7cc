#include "tools/rdma_bench/options.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace demi::bench {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * 1024;
constexpr uint64_t kGiB = kMiB * 1024;

absl::StatusOr<uint32_t> ParseCount(absl::string_view flag,
                                    absl::string_view text, uint32_t min,
                                    uint32_t max) {
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " takes a whole number in [", min, ", ", max,
                     "], not '", text, "'"));
  }
  return value;
}

absl::StatusOr<std::vector<Memory>> ParseMemory(absl::string_view text) {
  if (text == "lib") return std::vector<Memory>{Memory::kLibrary};
  if (text == "app") return std::vector<Memory>{Memory::kApplication};
  if (text == "both") {
    return std::vector<Memory>{Memory::kLibrary, Memory::kApplication};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--memory takes lib, app or both, not '", text, "'"));
}

absl::StatusOr<Workloads> ParseWorkloads(absl::string_view text) {
  Workloads workloads{false, false, false};
  for (absl::string_view name : absl::StrSplit(text, ',')) {
    if (name == "lat" || name == "latency") {
      workloads.latency = true;
    } else if (name == "rate" || name == "msgrate") {
      workloads.rate = true;
    } else if (name == "bw" || name == "bandwidth") {
      workloads.bandwidth = true;
    } else if (name == "all") {
      workloads = Workloads{};
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--workloads takes a list of lat, rate, bw (or all), not '", name,
          "'"));
    }
  }
  return workloads;
}

// $DEMI_RDMA_ADDR (else 10.77.0.1) with a port of this process's own, so
// concurrent --local runs on one host do not collide.
absl::StatusOr<sockaddr_in> LocalAddress() {
  const char* env = std::getenv("DEMI_RDMA_ADDR");
  std::string host = env != nullptr && *env != '\0' ? env : "10.77.0.1";
  return ParseAddress(absl::StrCat(host, ":", 30000 + getpid() % 20000));
}

}  // namespace

const char* MemoryLabel(Memory memory) {
  return memory == Memory::kLibrary ? "lib" : "app";
}

std::vector<uint64_t> DefaultSizes() {
  std::vector<uint64_t> sizes = {8};
  for (uint64_t size = 64; size <= 64 * kMiB; size *= 4) sizes.push_back(size);
  sizes.push_back(8 * kKiB);
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  uint64_t unit = 1;
  std::string upper = absl::AsciiStrToUpper(digits);
  absl::string_view rest = upper;
  if (absl::ConsumeSuffix(&rest, "IB")) {
    // "KiB" -> "K": the suffix below says which.
  } else {
    absl::ConsumeSuffix(&rest, "B");
  }
  if (absl::ConsumeSuffix(&rest, "K")) {
    unit = kKiB;
  } else if (absl::ConsumeSuffix(&rest, "M")) {
    unit = kMiB;
  } else if (absl::ConsumeSuffix(&rest, "G")) {
    unit = kGiB;
  }
  uint64_t count = 0;
  if (rest.empty() || !absl::SimpleAtoi(rest, &count) || count == 0 ||
      count > kGiB / unit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad size '", text, "': want e.g. 64, 8K, 4MiB (1 B .. 1 GiB)"));
  }
  return count * unit;
}

absl::StatusOr<std::vector<uint64_t>> ParseSizeList(absl::string_view text) {
  std::vector<uint64_t> sizes;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    absl::StatusOr<uint64_t> size = ParseSize(item);
    if (!size.ok()) return size.status();
    sizes.push_back(*size);
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

absl::StatusOr<sockaddr_in> ParseAddress(absl::string_view text) {
  std::pair<std::string, std::string> parts =
      absl::StrSplit(text, absl::MaxSplits(':', 1));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  uint32_t port = 0;
  if (inet_pton(AF_INET, parts.first.c_str(), &address.sin_addr) != 1 ||
      !absl::SimpleAtoi(parts.second, &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad address '", text, "': want IPv4:PORT"));
  }
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

std::string HostText(const sockaddr_in& address) {
  char text[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &address.sin_addr, text, sizeof(text));
  return text;
}

std::string AddressText(const sockaddr_in& address) {
  return absl::StrCat(HostText(address), ":", ntohs(address.sin_port));
}

std::string FormatSize(uint64_t bytes) {
  struct Unit {
    uint64_t size;
    const char* name;
  };
  for (Unit unit : {Unit{kGiB, "GiB"}, Unit{kMiB, "MiB"}, Unit{kKiB, "KiB"}}) {
    if (bytes >= unit.size) {
      if (bytes % unit.size == 0) {
        return absl::StrCat(bytes / unit.size, " ", unit.name);
      }
      return absl::StrFormat("%.1f %s", static_cast<double>(bytes) / unit.size,
                             unit.name);
    }
  }
  return absl::StrCat(bytes, " B");
}

namespace {

// Flags that take a value.
bool TakesValue(absl::string_view flag) {
  for (absl::string_view name :
       {"--server", "--client", "--sizes", "--memory", "--workloads",
        "--window", "--connections", "--duration-ms", "--min-iterations",
        "--rounds", "--device", "--json", "--csv", "--plot", "--echo"}) {
    if (flag == name) return true;
  }
  return false;
}

template <typename T>
absl::Status Assign(absl::StatusOr<T> parsed, T* out) {
  if (!parsed.ok()) return parsed.status();
  *out = *std::move(parsed);
  return absl::OkStatus();
}

// Applies one flag that takes a value (TakesValue(flag)).
absl::Status ApplyValue(absl::string_view flag, absl::string_view value,
                        Options& options) {
  if (flag == "--server" || flag == "--client") {
    return Assign(ParseAddress(value), &options.address);
  }
  if (flag == "--sizes") return Assign(ParseSizeList(value), &options.sizes);
  if (flag == "--memory") return Assign(ParseMemory(value), &options.memories);
  if (flag == "--workloads") {
    return Assign(ParseWorkloads(value), &options.workloads);
  }
  if (flag == "--window") {
    return Assign(ParseCount(flag, value, 1, 4096), &options.window);
  }
  if (flag == "--connections") {
    return Assign(ParseCount(flag, value, 1, 64), &options.connections);
  }
  if (flag == "--echo") {
    if (value == "popped") {
      options.echo = EchoMode::kPopped;
    } else if (value == "buffer") {
      options.echo = EchoMode::kBuffer;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--echo takes popped or buffer, not '", value, "'"));
    }
    return absl::OkStatus();
  }
  if (flag == "--duration-ms") {
    return Assign(ParseCount(flag, value, 1, 600000), &options.duration_ms);
  }
  if (flag == "--min-iterations") {
    return Assign(ParseCount(flag, value, 1, 1000000), &options.min_iterations);
  }
  if (flag == "--rounds") {
    return Assign(ParseCount(flag, value, 1, 9), &options.rounds);
  }
  std::string* text = flag == "--device" ? &options.device
                      : flag == "--json" ? &options.json_path
                      : flag == "--csv"  ? &options.csv_path
                                         : &options.plot_path;
  *text = std::string(value);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv,
                                     bool* help) {
  Options options;
  *help = false;
  int roles = 0;
  bool have_sizes = false, have_duration = false, have_min = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view flag = argv[i];
    absl::string_view value;
    bool inline_value = false;  // --flag=value
    if (size_t eq = flag.find('=');
        absl::StartsWith(flag, "--") && eq != absl::string_view::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    if (TakesValue(flag)) {
      if (!inline_value) {
        if (i + 1 >= argc) {
          return absl::InvalidArgumentError(
              absl::StrCat(flag, " needs a value"));
        }
        value = argv[++i];
      }
      if (absl::Status applied = ApplyValue(flag, value, options);
          !applied.ok()) {
        return applied;
      }
      if (flag == "--server" || flag == "--client") {
        options.role = flag == "--server" ? Role::kServer : Role::kClient;
        ++roles;
      }
      have_sizes |= flag == "--sizes";
      have_duration |= flag == "--duration-ms";
      have_min |= flag == "--min-iterations";
    } else if (inline_value) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " takes no value"));
    } else if (flag == "-h" || flag == "--help") {
      *help = true;
      return Options{};
    } else if (flag == "--local") {
      options.role = Role::kLocal;
      ++roles;
    } else if (flag == "--quick") {
      options.quick = true;
    } else if (flag == "--baseline") {
      options.baseline = true;
    } else if (flag == "--baseline-all") {
      options.baseline = options.baseline_all = true;
    } else if (flag == "--peers") {
      options.baseline = options.peers = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown argument '", argv[i], "' (see --help)"));
    }
  }
  if (roles > 1) {
    return absl::InvalidArgumentError(
        "give one of --local, --server ADDR:PORT, --client ADDR:PORT");
  }
  if (options.role == Role::kLocal) {
    absl::StatusOr<sockaddr_in> local = LocalAddress();
    if (!local.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("DEMI_RDMA_ADDR: ", local.status().message()));
    }
    options.address = *local;
  }
  if (options.memories.empty()) {
    options.memories = {Memory::kLibrary, Memory::kApplication};
  }
  if (!options.workloads.latency && !options.workloads.rate &&
      !options.workloads.bandwidth) {
    return absl::InvalidArgumentError("--workloads selects nothing");
  }
  // --quick: one small size and one above the eager limit, short cells.
  // Explicit flags win.
  if (options.quick) {
    if (!have_sizes) options.sizes = {64, 16 * kKiB};
    if (!have_duration) options.duration_ms = 20;
    if (!have_min) options.min_iterations = 5;
  }
  if (options.sizes.empty()) options.sizes = DefaultSizes();
  if (options.device.empty()) {
    const char* env = std::getenv("DEMI_RDMA_DEVICE");
    options.device = env != nullptr && *env != '\0' ? env : "rxe0";
  }
  return options;
}

std::string Usage() {
  return R"(usage: rdma_bench [--local | --server ADDR:PORT | --client ADDR:PORT] [options]

Measures the demi_* API over RDMA: ping-pong latency, message rate and
bandwidth over a sweep of message sizes, from library memory (demi_sgaalloc)
and from application memory (sga_buf == NULL). With --baseline, runs
perftest (ib_send_lat, ib_send_bw, ib_read_bw) on the same device at the same
sizes and shows each library figure next to raw verbs. With the latency
workload, a 64 B datagram ping-pong (SOCK_DGRAM, unreliable-datagram queue
pairs) follows, beside ib_send_lat -c UD: the server echoes datagrams on
PORT + 100 once the connected session ends.

Roles:
  --local               server and client on this host, on $DEMI_RDMA_ADDR
                        (default 10.77.0.1) (the default)
  --server ADDR:PORT    serve a --client's run (its --rounds rounds, each
                        by a fresh server process), then exit; meanwhile
                        a helper on TCP ADDR:PORT runs the server halves
                        of the client's perftest and peer pairs here
  --client ADDR:PORT    measure against a --server on another host (give
                        both the same --rounds); the baseline and the peers
                        then run across the same wire

Options:
  --sizes LIST          comma-separated sizes, e.g. 64,8K,1M
                        (default 8,64,256,1K,4K,8K,16K,64K,...,64M)
  --workloads LIST      lat,rate,bw (default all; rate and bw come from the
                        same windowed stream, as in ib_send_bw)
  --memory lib|app|both where pushed memory comes from (default both)
  --window N            pushes outstanding per connection (default 32)
  --connections N       connections measured at once (default 1)
  --duration-ms N       time budget of each measured cell (default 200)
  --min-iterations N    measured iterations per cell, at least (default 5)
  --rounds N            measure everything N times in turn (1 to 9,
                        default 1), each round size by size (the library's
                        cells, then perftest's); each figure is the median
                        of its N rounds
  --echo popped|buffer  how the server answers pings: push back the popped
                        array (zero copy, as Demikernel's echo servers do;
                        the default) or push a reply buffer of its own
  --quick               short preset for tests: sizes 64,16K, 20 ms cells
  --baseline            also run perftest on --device (at sizes above 1 MiB
                        only where the library has a figure)
  --baseline-all        perftest at every size
  --peers               also run, where installed, UCX's ucx_perftest (ucp
                        am and tag) and rsocket's rstream at the latency,
                        rate and bandwidth sizes up to 1 MiB, each compared
                        with the same perftest figure (implies --baseline)
  --device NAME         RDMA device for perftest (default $DEMI_RDMA_DEVICE
                        or rxe0)
  --json FILE           write every row as JSON
  --csv FILE            write every row as CSV
  --plot FILE.png       draw latency and bandwidth against size (gnuplot)

Progress goes to stderr, the table to stdout. Cells the library cannot run
yet (e.g. EINVAL, EMSGSIZE) show as n/a with the reason.
)";
}

}  // namespace demi::bench
