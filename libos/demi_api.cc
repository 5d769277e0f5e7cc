// The C API: each demi_* function forwards to the process's LibOS and turns
// its status into the positive errno the API returns. Nothing else lives here.

#include <demi/event.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/mutex.h"
#include "libos/libos.h"

namespace {

using demi::ErrnoFromStatus;
using demi::libos::LibOS;
using demi::libos::LibOSOptions;
namespace rdma = demi::rdma;

demi::Mutex init_mutex;
// Set once by demi_init; lives until the process exits.
std::atomic<LibOS*> the_libos{nullptr};

LibOS* Os() { return the_libos.load(std::memory_order_acquire); }

// Calls before demi_init fail with this.
constexpr int kNotInitialized = EINVAL;

template <typename T>
int ToErrno(const absl::StatusOr<T>& result, T* out) {
  if (!result.ok()) return ErrnoFromStatus(result.status());
  if (out == nullptr) return EINVAL;
  *out = *result;
  return 0;
}

// NULL: forever. A negative or out-of-range timespec is invalid.
bool ToDuration(const struct timespec* timeout, absl::Duration* out) {
  if (timeout == nullptr) {
    *out = absl::InfiniteDuration();
    return true;
  }
  if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 ||
      timeout->tv_nsec >= 1000000000) {
    return false;
  }
  *out = absl::DurationFromTimespec(*timeout);
  return true;
}

// The options, with what the environment overrides:
//   DEMI_MR_CACHE=0              register application memory per push
//   DEMI_MR_CACHE_MAX_BYTES=N    cap on bytes the cache keeps registered
//   DEMI_MR_CACHE_MAX_REGIONS=N  cap on its registrations
//   DEMI_EAGER_LIMIT=N           receive buffer payload (largest eager send)
//   DEMI_RENDEZVOUS_THRESHOLD=N  larger messages go by rendezvous; smaller
//                                ones above the eager limit go in parts
//   DEMI_LARGE_POOL_MAX_BYTES=N  cap on memory for large messages, per device
//   DEMI_RENDEZVOUS_QUOTA=N      bytes of rendezvous messages one peer may
//                                have this process hold at once
//   DEMI_MAX_CONNECTIONS=N       connections a worker holds before incoming
//                                requests are refused
//   DEMI_COALESCE_SENDS=0        post every push at once (default: the
//                                rest of a burst goes at the next poll)
//   DEMI_DGRAM_ROUTE_TTL_MS=N    age at which a cached datagram destination
//                                is resolved again (0: never)
//   DEMI_KEEPALIVE_MS=N          idle connections probe their peer this
//                                often (0: never)
//   DEMI_ACK_TIMEOUT=N           connections' ACK timeout exponent, 1-31
//                                (4.096 us * 2^N; 0: rdma_cm's default)
//   DEMI_RETRY_COUNT=N           retransmissions before a connection fails,
//                                0-7
//   DEMI_CLOSE_TIMEOUT_MS=N      how long a closed connection may stay busy
//                                before it is reset
//   DEMI_STALL_TIMEOUT_MS=N      how long an open connection may wait on its
//                                peer before it fails (0: never)
// A value that does not parse is ignored (with a warning). DEMI_SPIN_US
// (how long a wait polls before it sleeps) is read by demi_init, which
// refuses a bad value with EINVAL.
LibOSOptions OptionsFromEnvironment() {
  LibOSOptions options;
  auto number = [](const char* name, size_t* out) {
    const char* text = getenv(name);
    if (text == nullptr) return;
    uint64_t value;
    if (absl::SimpleAtoi(text, &value) && value > 0) {
      *out = static_cast<size_t>(value);
    } else {
      DEMI_LOG(kWarning, "ignoring ", name, "=", text,
               " (not a positive count)");
    }
  };
  if (const char* cache = getenv("DEMI_MR_CACHE"); cache != nullptr) {
    options.region_cache_enabled = std::string_view(cache) != "0";
  }
  number("DEMI_MR_CACHE_MAX_BYTES", &options.region_cache.max_pinned_bytes);
  number("DEMI_MR_CACHE_MAX_REGIONS", &options.region_cache.max_regions);
  number("DEMI_LARGE_POOL_MAX_BYTES", &options.large_pool.max_bytes);
  size_t max_connections = options.max_connections;
  number("DEMI_MAX_CONNECTIONS", &max_connections);
  options.max_connections =
      static_cast<uint32_t>(std::min<size_t>(max_connections, UINT32_MAX));
  size_t quota = options.connection.rendezvous_quota;
  number("DEMI_RENDEZVOUS_QUOTA", &quota);
  options.connection.rendezvous_quota = quota;
  if (const char* coalesce = getenv("DEMI_COALESCE_SENDS");
      coalesce != nullptr) {
    options.connection.coalesce_sends = std::string_view(coalesce) != "0";
  }
  // A count of milliseconds; anything else is ignored with a warning.
  auto milliseconds = [](const char* name, absl::Duration* out) {
    const char* text = getenv(name);
    if (text == nullptr) return;
    uint64_t ms;
    if (absl::SimpleAtoi(text, &ms)) {
      *out = absl::Milliseconds(ms);
    } else {
      DEMI_LOG(kWarning, "ignoring ", name, "=", text,
               " (not a count of milliseconds)");
    }
  };
  milliseconds("DEMI_DGRAM_ROUTE_TTL_MS", &options.datagram_route_ttl);
  milliseconds("DEMI_KEEPALIVE_MS", &options.keepalive);
  milliseconds("DEMI_CLOSE_TIMEOUT_MS", &options.close_timeout);
  milliseconds("DEMI_STALL_TIMEOUT_MS", &options.stall_timeout);
  // A small count in [0, most]; anything else is ignored with a warning.
  auto small = [](const char* name, uint32_t most, uint8_t* out) {
    const char* text = getenv(name);
    if (text == nullptr) return;
    uint32_t value;
    if (absl::SimpleAtoi(text, &value) && value <= most) {
      *out = static_cast<uint8_t>(value);
    } else {
      DEMI_LOG(kWarning, "ignoring ", name, "=", text, " (not in 0..", most,
               ")");
    }
  };
  small("DEMI_ACK_TIMEOUT", 31, &options.connection.ack_timeout);
  small("DEMI_RETRY_COUNT", 7, &options.connection.retry_count);
  size_t eager = options.connection.eager_limit;
  number("DEMI_EAGER_LIMIT", &eager);
  options.connection.eager_limit = static_cast<uint32_t>(
      std::min<size_t>(eager, rdma::BufferPool::kMaxBufferSizeLimit));
  size_t threshold = options.connection.rendezvous_threshold;
  number("DEMI_RENDEZVOUS_THRESHOLD", &threshold);
  options.connection.rendezvous_threshold =
      static_cast<uint32_t>(std::min<size_t>(threshold, UINT32_MAX));
  return options;
}

}  // namespace

extern "C" {

int demi_init(const struct demi_args* args) {
  if (args != nullptr && (args->argc <= 0 || args->argv == nullptr)) {
    return EINVAL;
  }
  demi::MutexLock lock(&init_mutex);
  if (Os() != nullptr) return EEXIST;
  LibOSOptions options = OptionsFromEnvironment();
  if (const char* spin = getenv("DEMI_SPIN_US"); spin != nullptr) {
    if (!demi::libos::ParseSpinMicros(spin, &options.spin)) {
      DEMI_LOG(kError, "DEMI_SPIN_US=", spin,
               " is not a count of microseconds (or \"inf\")");
      return EINVAL;
    }
  }
  absl::StatusOr<std::unique_ptr<LibOS>> os = LibOS::Create(options);
  if (!os.ok()) return ErrnoFromStatus(os.status());
  the_libos.store(os->release(), std::memory_order_release);
  return 0;
}

int demi_socket(int* sockqd_out, int domain, int type, int protocol) {
  if (Os() == nullptr) return kNotInitialized;
  if (sockqd_out == nullptr) return EINVAL;
  return ToErrno(Os()->Socket(domain, type, protocol), sockqd_out);
}

int demi_listen(int sockqd, int backlog) {
  if (Os() == nullptr) return kNotInitialized;
  return ErrnoFromStatus(Os()->Listen(sockqd, backlog));
}

int demi_bind(int sockqd, const struct sockaddr* addr, socklen_t size) {
  if (Os() == nullptr) return kNotInitialized;
  return ErrnoFromStatus(Os()->Bind(sockqd, addr, size));
}

int demi_accept(demi_qtoken_t* qt_out, int sockqd) {
  if (Os() == nullptr) return kNotInitialized;
  if (qt_out == nullptr) return EINVAL;
  return ToErrno(Os()->Accept(sockqd), qt_out);
}

int demi_connect(demi_qtoken_t* qt_out, int sockqd, const struct sockaddr* addr,
                 socklen_t size) {
  if (Os() == nullptr) return kNotInitialized;
  if (qt_out == nullptr) return EINVAL;
  return ToErrno(Os()->Connect(sockqd, addr, size), qt_out);
}

int demi_close(int qd) {
  if (Os() == nullptr) return kNotInitialized;
  return ErrnoFromStatus(Os()->Close(qd));
}

int demi_push(demi_qtoken_t* qt_out, int qd, const demi_sgarray_t* sga) {
  if (Os() == nullptr) return kNotInitialized;
  if (qt_out == nullptr) return EINVAL;
  return ToErrno(Os()->Push(qd, sga), qt_out);
}

int demi_pushto(demi_qtoken_t* qt_out, int sockqd, const demi_sgarray_t* sga,
                const struct sockaddr* dest_addr, socklen_t size) {
  if (Os() == nullptr) return kNotInitialized;
  if (qt_out == nullptr) return EINVAL;
  return ToErrno(Os()->PushTo(sockqd, sga, dest_addr, size), qt_out);
}

int demi_pop(demi_qtoken_t* qt_out, int qd) {
  if (Os() == nullptr) return kNotInitialized;
  if (qt_out == nullptr) return EINVAL;
  return ToErrno(Os()->Pop(qd), qt_out);
}

int demi_setsockopt(int qd, int level, int optname, const void* optval,
                    socklen_t optlen) {
  if (Os() == nullptr) return kNotInitialized;
  if (level != SOL_SOCKET) return ENOTSUP;
  if (optname != SO_LINGER) return ENOPROTOOPT;
  return ErrnoFromStatus(Os()->SetLinger(qd, optval, optlen));
}

int demi_getsockopt(int qd, int level, int optname, void* optval,
                    socklen_t* optlen) {
  if (Os() == nullptr) return kNotInitialized;
  if (level != SOL_SOCKET) return ENOTSUP;
  if (optname != SO_LINGER) return ENOPROTOOPT;
  return ErrnoFromStatus(Os()->GetLinger(qd, optval, optlen));
}

int demi_getpeername(int qd, struct sockaddr* addr, socklen_t* addrlen) {
  if (Os() == nullptr) return kNotInitialized;
  return ErrnoFromStatus(Os()->GetPeerName(qd, addr, addrlen));
}

demi_sgarray_t demi_sgaalloc(size_t size) {
  if (Os() == nullptr) return demi_sgarray_t{};
  return Os()->SgaAlloc(size);
}

int demi_sgafree(demi_sgarray_t* sga) {
  if (Os() == nullptr) return kNotInitialized;
  return ErrnoFromStatus(Os()->SgaFree(sga));
}

int demi_mr_cache_stats(demi_mr_cache_stats_t* stats) {
  if (Os() == nullptr || stats == nullptr) return EINVAL;
  const demi::rdma::RegionCacheStats cache = Os()->CacheStats();
  *stats = demi_mr_cache_stats_t{};
  stats->hits = cache.hits;
  stats->misses = cache.misses;
  stats->evictions = cache.evictions;
  stats->invalidations = cache.invalidations;
  stats->uncached = cache.uncached;
  stats->pinned_bytes = cache.pinned_bytes;
  stats->regions = cache.regions;
  stats->caching = cache.caching ? 1 : 0;
  return 0;
}

int demi_dgram_stats(demi_dgram_stats_t* stats) {
  if (Os() == nullptr || stats == nullptr) return EINVAL;
  const demi::libos::DatagramStats counters = Os()->DatagramStatistics();
  *stats = demi_dgram_stats_t{};
  stats->sent = counters.sent;
  stats->send_failed = counters.send_failed;
  stats->received = counters.received;
  stats->malformed = counters.malformed;
  stats->filtered = counters.filtered;
  stats->receive_queue_empty = counters.receive_queue_empty;
  stats->device_dropped = counters.device_dropped;
  stats->ah_hits = counters.ah_hits;
  stats->ah_misses = counters.ah_misses;
  stats->ah_entries = counters.ah_entries;
  stats->resolution_failures = counters.resolution_failures;
  stats->max_payload = counters.max_payload;
  stats->device_drops_reported = counters.device_drops_reported ? 1 : 0;
  stats->route_refreshes = counters.route_refreshes;
  stats->route_changes = counters.route_changes;
  stats->route_drops = counters.route_drops;
  stats->forged = counters.forged;
  stats->ah_stale = counters.ah_stale;
  return 0;
}

int demi_event_fd(int* fd_out) {
  if (Os() == nullptr) return kNotInitialized;
  if (fd_out == nullptr) return EINVAL;
  return ToErrno(Os()->EventFd(), fd_out);
}

int demi_event_arm(void) {
  if (Os() == nullptr) return kNotInitialized;
  return ErrnoFromStatus(Os()->EventArm());
}

int demi_wait(demi_qresult_t* qr_out, demi_qtoken_t qt,
              const struct timespec* timeout) {
  if (Os() == nullptr) return kNotInitialized;
  absl::Duration duration;
  if (qr_out == nullptr || !ToDuration(timeout, &duration)) return EINVAL;
  return ErrnoFromStatus(Os()->Wait(qt, duration, qr_out));
}

int demi_wait_any(demi_qresult_t* qr_out, int* ready_offset,
                  const demi_qtoken_t qts[], int num_qts,
                  const struct timespec* timeout) {
  if (Os() == nullptr) return kNotInitialized;
  absl::Duration duration;
  if (qr_out == nullptr || ready_offset == nullptr || qts == nullptr ||
      num_qts <= 0 || !ToDuration(timeout, &duration)) {
    return EINVAL;
  }
  return ToErrno(
      Os()->WaitAny(absl::MakeConstSpan(qts, num_qts), duration, qr_out),
      ready_offset);
}

int demi_wait_next_n(demi_qresult_t* qr_out, int num_qrs, int* num_qrs_out,
                     const struct timespec* timeout) {
  if (Os() == nullptr) return kNotInitialized;
  absl::Duration duration;
  if (qr_out == nullptr || num_qrs <= 0 || num_qrs_out == nullptr ||
      !ToDuration(timeout, &duration)) {
    return EINVAL;
  }
  return ToErrno(Os()->WaitNextN(absl::MakeSpan(qr_out, num_qrs), duration),
                 num_qrs_out);
}

}  // extern "C"
