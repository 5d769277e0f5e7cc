// LibOS: the state behind the demi_* C API (see DESIGN.md).
//
// The table of sockets and the entry points: every call on a qd goes to the
// sockets of its kind (StreamSockets or DatagramSockets, behind the Sockets
// interface; the qd's kind bit says which), and the waits run the one wait
// loop over the token table and the progress engine. The LibOS owns what
// every socket kind shares (SocketContext): the token table, the
// per-device resources, pushed-memory bookkeeping and popped arrays'
// handles. Every public method is safe from any thread: one mutex guards
// the state, and the wait methods drop it between polling rounds so other
// threads get in. Errors are absl::Status values carrying the positive
// errno the C API returns (common/errno_status.h).
//
// Memory: demi_sgaalloc memory comes from the registered pools; popped memory
// points into a queue's receive buffers (zero copy) and stays valid, even
// after demi_close, until SgaFree returns it. Any of these, and application
// memory (sga_buf == NULL), may be pushed on any queue; PushMemory says what
// the memory is, how the queue pair reads it, and keeps it (free protection)
// until every push of it completed.

#ifndef DEMI_LIBOS_LIBOS_H_
#define DEMI_LIBOS_LIBOS_H_

#include <demi/types.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "libos/datagram.h"
#include "libos/datagram_sockets.h"
#include "libos/options.h"
#include "libos/progress_engine.h"
#include "libos/push_memory.h"
#include "libos/qd_table.h"
#include "libos/receive_handles.h"
#include "libos/socket_context.h"
#include "libos/sockets.h"
#include "libos/stream_sockets.h"
#include "libos/token_table.h"
#include "rdma/device_registry.h"
#include "rdma/region_cache.h"

namespace demi::libos {

class LibOS {
 public:
  // ENODEV without an RDMA device.
  static absl::StatusOr<std::unique_ptr<LibOS>> Create(
      const LibOSOptions& options);
  ~LibOS();

  absl::StatusOr<int> Socket(int domain, int type, int protocol);
  absl::Status Bind(int qd, const sockaddr* address, socklen_t size);
  absl::Status Listen(int qd, int backlog);
  absl::StatusOr<demi_qtoken_t> Accept(int qd);
  absl::StatusOr<demi_qtoken_t> Connect(int qd, const sockaddr* address,
                                        socklen_t size);
  absl::Status Close(int qd);
  absl::StatusOr<demi_qtoken_t> Push(int qd, const demi_sgarray_t* sga);
  absl::StatusOr<demi_qtoken_t> Pop(int qd);
  absl::Status GetPeerName(int qd, sockaddr* address, socklen_t* size);
  absl::Status SetLinger(int qd, const void* value, socklen_t size);
  absl::Status GetLinger(int qd, void* value, socklen_t* size);
  // demi_pushto. On a datagram socket: sends to `address` (overriding a
  // demi_connect destination). On a stream socket (connection-mode) the
  // address is checked for form and otherwise ignored: a push.
  absl::StatusOr<demi_qtoken_t> PushTo(int qd, const demi_sgarray_t* sga,
                                       const sockaddr* address, socklen_t size);

  // An array of one segment of `size` registered bytes; all zero on failure.
  demi_sgarray_t SgaAlloc(size_t size);
  absl::Status SgaFree(demi_sgarray_t* sga);

  // The memory-region caches' counters (summed over devices).
  rdma::RegionCacheStats CacheStats() const;
  // Datagram sockets' counters.
  DatagramStats DatagramStatistics() const;

  // Waits at most `timeout` (InfiniteDuration: forever; zero: poll once).
  absl::Status Wait(demi_qtoken_t qt, absl::Duration timeout,
                    demi_qresult_t* result);
  // Returns the index in `qts` of the result written to *result.
  absl::StatusOr<int> WaitAny(absl::Span<const demi_qtoken_t> qts,
                              absl::Duration timeout, demi_qresult_t* result);
  // Returns how many results were written (at least one).
  absl::StatusOr<int> WaitNextN(absl::Span<demi_qresult_t> results,
                                absl::Duration timeout);

 private:
  explicit LibOS(const LibOSOptions& options);

  // The sockets of `qd`'s kind (the kind bit; a qd of neither kind goes to
  // the stream sockets, which answer EBADF).
  Sockets& KindOf(int qd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (qd > 0 && QdKind(qd) == 1) return *datagrams_;
    return *streams_;
  }

  // The one wait loop behind Wait, WaitAny and WaitNextN: `look` (called
  // under mu_) takes what the wait wants and says kDone, kInvalid (the wait
  // fails), or kPending (look again after a round of progress). Returns
  // kPending when `timeout` passed first. mu_ is dropped between rounds.
  template <typename Look>
  TokenState WaitLoop(absl::Duration timeout, Look look)
      ABSL_LOCKS_EXCLUDED(mu_);

  const LibOSOptions options_;
  mutable demi::Mutex mu_;
  std::unique_ptr<rdma::DeviceRegistry> devices_;
  TokenTable tokens_ ABSL_GUARDED_BY(mu_);
  // Popped arrays' handles of every queue (stream and datagram).
  ReceiveHandleTable handles_ ABSL_GUARDED_BY(mu_);
  // Pushed memory and free protection (set by Create).
  std::optional<PushMemory> memory_ ABSL_GUARDED_BY(mu_);
  PushTable pushes_ ABSL_GUARDED_BY(mu_);
  // What the wait loop's rounds poll (stream sources from Create, datagram
  // ones from the first datagram socket).
  ProgressEngine progress_ ABSL_GUARDED_BY(mu_);
  std::optional<SocketContext> context_ ABSL_GUARDED_BY(mu_);
  uint32_t wait_any_start_ ABSL_GUARDED_BY(mu_) = 0;
  // The sockets; destroyed first (by ~LibOS): their queue pairs before the
  // protection domains.
  std::unique_ptr<StreamSockets> streams_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<DatagramSockets> datagrams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_LIBOS_H_
