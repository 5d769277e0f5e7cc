// Worker: one shard of the libOS, with its own lock, for the threads that
// drive its queues.
//
// A worker owns queues (stream and datagram sockets), the tokens of their
// operations, their pushes in flight, the completion queues their queue
// pairs share (one group per device) and the progress engine that polls
// them, all guarded by the worker's own mutex. Two threads driving queues of
// two workers take no lock in common on the data path: a push, a pop and a
// wait touch only their worker, the buffer pool's per-buffer atomics and the
// shared, lock-free receive-handle lookup.
//
// Which worker: a queue belongs to the worker of the thread that created it
// (demi_socket; an accepted connection to its listener's), and its qd says
// so (QdWorker), as every token says which worker issued it
// (TokenTable::TagOf). The LibOS routes each call by that: any thread may
// use any queue, taking its worker's lock.
//
// What stays shared (owned by the LibOS, each internally synchronized): the
// devices (protection domains, buffer pools, region caches) and the
// receive-handle table. A popped array pushed on another worker's queue is
// pinned there; if that push is the last to let go of it, its buffer goes
// back to its own worker through ReturnLater (a lock-free stack drained by
// that worker's next round), as does every popped array demi_sgafree
// frees (no worker lock in demi_sgafree).
//
// Thread-safety: lock mu() around every call below unless a comment says
// otherwise. Lifetime: the devices, options and handle table outlive it.

#ifndef DEMI_LIBOS_WORKER_H_
#define DEMI_LIBOS_WORKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
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
#include "rdma/device_completions.h"
#include "rdma/device_registry.h"

namespace demi::libos {

class Worker {
 public:
  // Worker `index` (below kMaxQdWorkers). `return_elsewhere` gives a popped
  // array's buffer back to the worker that owns it (PushMemory).
  static absl::StatusOr<std::unique_ptr<Worker>> Create(
      uint32_t index, const LibOSOptions& options,
      rdma::DeviceRegistry& devices, ReceiveHandleTable& handles,
      PushMemory::ReturnElsewhere return_elsewhere);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  // Destroys the sockets (their queue pairs) first; pushes still in flight
  // are abandoned (their memory released, receive handles left alone: they
  // go with their queues).
  ~Worker();

  demi::Mutex& mu() const ABSL_LOCK_RETURNED(mu_) { return mu_; }
  uint32_t index() const { return index_; }

  // The sockets of each kind, as their final classes (calls through them
  // are direct).
  StreamSockets& streams() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return *streams_;
  }
  DatagramSockets& datagrams() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return *datagrams_;
  }
  DatagramStats DatagramStatistics() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return datagrams_->Statistics();
  }
  TokenTable& tokens() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return tokens_; }
  PushMemory& memory() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return *memory_; }

  // One round of progress (ProgressEngine::Round), after giving back what
  // other workers returned (ReturnLater): one load when there is nothing,
  // checked here rather than as a source of the engine (an indirect call
  // per round).
  void Round(bool catch_up) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (returns_.load(std::memory_order_acquire) != nullptr) DrainReturns();
    progress_.Round(catch_up);
  }

  // Safe from any thread, without mu(): `handle` (of one of this worker's
  // queues) is free of the application and every push; its buffer goes
  // back to its queue at this worker's next round.
  void ReturnLater(ReceiveHandle& handle) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Worker(uint32_t index, const LibOSOptions& options);
  // Gives back what ReturnLater queued.
  void DrainReturns() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint32_t index_;
  mutable demi::Mutex mu_;
  TokenTable tokens_ ABSL_GUARDED_BY(mu_);
  PushTable pushes_ ABSL_GUARDED_BY(mu_);
  std::optional<PushMemory> memory_ ABSL_GUARDED_BY(mu_);
  // What the rounds poll (stream sources from Create, datagram ones from
  // the first datagram socket).
  ProgressEngine progress_ ABSL_GUARDED_BY(mu_);
  // Destroyed after the sockets (their queue pairs use its queues).
  std::unique_ptr<rdma::DeviceCompletions> completions_;
  std::optional<SocketContext> context_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<StreamSockets> streams_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<DatagramSockets> datagrams_ ABSL_GUARDED_BY(mu_);

  // ReturnLater's handles, newest first, linked through
  // ReceiveHandle::return_next: a lock-free stack that any thread pushes
  // on and DrainReturns takes whole (one exchange, so no ABA).
  std::atomic<ReceiveHandle*> returns_{nullptr};
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_WORKER_H_
