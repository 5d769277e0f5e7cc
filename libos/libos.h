// LibOS: the state behind the demi_* C API (see DESIGN.md).
//
// The entry points and the workers: every call on a qd goes to the worker
// the qd names (worker.h), and there to the sockets of its kind
// (StreamSockets or DatagramSockets, behind the Sockets interface; the qd's
// kind bit says which); a new socket goes to the calling thread's worker.
// The waits run the one wait loop over the token tables and progress
// engines of the workers their tokens name. The LibOS owns what every
// worker shares: the per-device resources and popped arrays' handles.
// Every public method is safe from any thread: each worker has its own
// mutex, and the wait methods drop it between polling rounds so other
// threads get in; two threads on queues of different workers share no lock
// on the data path. Errors are absl::Status values carrying the positive
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
#include "libos/epoll_set.h"
#include "libos/options.h"
#include "libos/progress_engine.h"
#include "libos/push_memory.h"
#include "libos/qd_table.h"
#include "libos/receive_handles.h"
#include "libos/socket_context.h"
#include "libos/sockets.h"
#include "libos/stream_sockets.h"
#include "libos/thread_buffer_stocks.h"
#include "libos/token_table.h"
#include "libos/worker.h"
#include "rdma/buffer_cache.h"
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
  // Datagram sockets' counters (summed over workers).
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

  // demi_event_fd and demi_event_arm (demi/event.h). EventArm says EAGAIN
  // (as a status) when the loop must look before it sleeps.
  absl::StatusOr<int> EventFd();
  absl::Status EventArm();

 private:
  explicit LibOS(const LibOSOptions& options) : options_(options) {}

  // The calling thread's worker, made on its first call (null only if it
  // cannot be made: *error says why).
  Worker* ThisThreadsWorker(absl::Status* error);
  // The worker a qd or token names, or null if none does.
  Worker* WorkerAt(uint32_t index) const {
    return index < kMaxQdWorkers
               ? workers_[index].load(std::memory_order_acquire)
               : nullptr;
  }
  Worker* WorkerOfQd(int qd) const {
    return qd > 0 ? WorkerAt(QdWorker(qd)) : nullptr;
  }
  Worker* WorkerOfToken(demi_qtoken_t qt) const {
    return WorkerAt(TokenTable::TagOf(qt));
  }
  // Gives back a popped array's buffer released on another worker.
  void ReturnToOwner(ReceiveHandle& handle);
  // `call(sockets)` under the lock of the worker of `qd` (EBADF if none).
  template <typename Result, typename Call>
  Result OnQueue(int qd, Call call);

  // The one wait loop behind Wait, WaitAny and WaitNextN, over the workers
  // `each_worker` visits (OneWorker or WorkersIn): `look(worker)` (called
  // under that worker's lock) takes what the wait wants from it and says
  // kDone, kInvalid (the wait fails), or kPending (look again after a
  // round of progress). Returns kPending when `timeout` passed first. Each
  // lock is dropped between rounds.
  // Once it has spun options_.spin without an answer, it sleeps on
  // `sleep_on` (Worker::SleepUnlessDone) for at most `sleep_cap` at a time.
  template <typename EachWorker, typename Look>
  TokenState WaitLoop(EachWorker each_worker, Worker& sleep_on,
                      absl::Duration sleep_cap, absl::Duration timeout,
                      Look look);
  // Where a wait over the workers in the mask `workers` (not 0) sleeps:
  // on the lowest one; for as long as it likes if that is the only one,
  // else in slices of kSliceForManyWorkers (it cannot sleep on all).
  Worker* SleepWorker(uint32_t workers) const {
    return WorkerAt(static_cast<uint32_t>(__builtin_ctz(workers)));
  }
  static absl::Duration SleepCap(uint32_t workers) {
    return (workers & (workers - 1)) == 0 ? absl::InfiniteDuration()
                                          : kSliceForManyWorkers;
  }
  static constexpr absl::Duration kSliceForManyWorkers = absl::Milliseconds(1);
  // What WaitLoop visits: `f(worker)` for one worker, or for each worker
  // whose bit is set in `workers`, until `f` returns false.
  static auto OneWorker(Worker& worker) {
    return [&worker](auto f) { f(worker); };
  }
  auto WorkersIn(uint32_t workers) const {
    return [this, workers](auto f) {
      for (uint32_t m = workers; m != 0; m &= m - 1) {
        if (!f(*WorkerAt(static_cast<uint32_t>(__builtin_ctz(m))))) return;
      }
    };
  }

  // The event loop's descriptor (demi/event.h): an epoll set over every
  // worker's channels, made by the first EventFd().
  demi::Mutex event_mu_;
  std::optional<EpollSet> event_set_ ABSL_GUARDED_BY(event_mu_);

  const LibOSOptions options_;
  std::unique_ptr<rdma::DeviceRegistry> devices_;
  // Threads' stocks of free demi_sgaalloc buffers (from devices_' pool).
  std::optional<ThreadBufferStocks> stocks_;
  // Popped arrays' handles of every queue of every worker.
  ReceiveHandleTable handles_;
  // For demi_sgafree of library memory (thread-safe for that use alone).
  std::optional<PushMemory> library_memory_;
  // Workers by index, made on demand (under make_mu_) and kept until the
  // LibOS goes; readers take no lock.
  std::atomic<Worker*> workers_[kMaxQdWorkers] = {};
  std::unique_ptr<Worker> owned_workers_[kMaxQdWorkers];
  // Bit i set once workers_[i] is (one load for a wait over every worker).
  std::atomic<uint32_t> worker_mask_{0};
  static_assert(kMaxQdWorkers <= 32, "worker masks are 32 bits");
  // Which worker the next new thread gets.
  std::atomic<uint32_t> next_worker_{0};
  demi::Mutex make_mu_;
  // Set when the LibOS is going away: no more returns between workers.
  std::atomic<bool> closing_{false};
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_LIBOS_H_
