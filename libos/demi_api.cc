// The C API: each demi_* function forwards to the process's LibOS and turns
// its status into the positive errno the API returns. Nothing else lives here.

#include <demi/event.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <memory>

#include "absl/time/time.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/mutex.h"
#include "libos/libos.h"
#include "libos/settings.h"

namespace {

using demi::ErrnoFromStatus;
using demi::libos::LibOS;
using demi::libos::LibOSOptions;

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

}  // namespace

extern "C" {

int demi_init(const struct demi_args* args) {
  if (args != nullptr && (args->argc <= 0 || args->argv == nullptr)) {
    return EINVAL;
  }
  demi::MutexLock lock(&init_mutex);
  if (Os() != nullptr) return EEXIST;
  // Every DEMI_* setting (libos/settings.h): a bad value fails demi_init.
  absl::StatusOr<LibOSOptions> options =
      demi::libos::OptionsFromEnvironment(getenv);
  if (!options.ok()) {
    DEMI_LOG(kError, "demi_init: ", options.status().message());
    return ErrnoFromStatus(options.status());
  }
  absl::StatusOr<std::unique_ptr<LibOS>> os = LibOS::Create(*options);
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
