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

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
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
#include "libos/wake_channel.h"
#include "rdma/device_completions.h"
#include "rdma/device_registry.h"

namespace demi::libos {

class Worker {
 public:
  // The longest sleep before a round: periodic work (datagram routes'
  // refresh, every few seconds) still runs while a wait sleeps; a waiter
  // with nothing coming wakes once a second.
  static constexpr absl::Duration kMaxSleep = absl::Seconds(1);
  // A sleep's length when the queues could not be armed (logged), or when
  // a connection asks to be polled again whatever happens (it waits for
  // large-message memory).
  static constexpr absl::Duration kShortSleep = absl::Milliseconds(1);

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
  // The same, polling every source whether due or not
  // (ProgressEngine::RoundAll): after a sleep, and when an event loop arms.
  void RoundAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (returns_.load(std::memory_order_acquire) != nullptr) DrainReturns();
    progress_.RoundAll();
  }

  // Safe from any thread, without mu(): `handle` (of one of this worker's
  // queues) is free of the application and every push; its buffer goes
  // back to its queue at this worker's next round (a sleeping waiter is
  // woken for it).
  void ReturnLater(ReceiveHandle& handle) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Sleeping (wake_channel.h has the protocol) ----
  // For a waiter whose spin budget is spent: arms every completion queue,
  // runs one more round and asks `look(*this)` (as WaitLoop's look); if
  // that says kPending and the round left no after-poll step due
  // (DeviceCompletions::AfterPollDue; else it returns kPending at once, to
  // be called again after a round), sleeps (dropping mu()) until something of
  // this worker may have changed or `timeout` passed, then runs a round that
  // polls every source (rdma_cm channels included) and asks `look` again.
  // Returns what `look` said last.
  template <typename Look>
  TokenState SleepUnlessDone(absl::Duration timeout, Look look)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // demi_event_arm's part for this worker (demi/event.h): appends the
  // descriptors an event loop must watch to `fds` (the channels and the
  // loop's eventfd), drains them, counts the loop as armed (so tokens
  // completed by other threads, and buffers they give back, write the
  // loop's eventfd), arms its queues, runs a round that polls every source,
  // and says whether the loop may sleep: false if operations completed
  // since the previous call or results wait to be taken (or after-poll
  // steps are due). Errors of arming.
  absl::StatusOr<bool> ArmForEventLoop(std::vector<int>* fds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Wakes the sleepers if operations completed since they were last woken;
  // one load when nobody sleeps. WorkerLock calls it before unlocking.
  void WakeSleepersIfDone() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if ((wake_->sleepers() != 0 || wake_->loop_armed()) &&
        tokens_.completed() != woken_at_) {
      woken_at_ = tokens_.completed();
      wake_->Wake();
    }
  }

 private:
  Worker(uint32_t index, const LibOSOptions& options);
  // Gives back what ReturnLater queued.
  void DrainReturns() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // SleepUnlessDone's first steps: watches the worker's descriptors and
  // arms its queues. False (logged) if that failed: sleep briefly only.
  bool PrepareToSleep() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends the descriptors a sleeper watches (channels, rdma_cm) to `fds`
  // (not the sleepers' or the loop's eventfd).
  void AppendWakeFds(std::vector<int>* fds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arms every completion queue of the worker.
  absl::Status ArmNotify() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a sleep: drains the completion channels the watcher woke for.
  void AfterSleep(const WakeChannel::Ticket& ticket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

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

  // Where waiters sleep; the completion count they were last woken at, and
  // the descriptors gathered for Watch (kept to reuse its memory), and
  // whether an arming failure was logged (once per worker).
  std::unique_ptr<WakeChannel> wake_;
  uint64_t woken_at_ ABSL_GUARDED_BY(mu_) = 0;
  // The completion count at the previous ArmForEventLoop.
  uint64_t armed_at_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> wake_fds_ ABSL_GUARDED_BY(mu_);
  bool arm_failure_logged_ ABSL_GUARDED_BY(mu_) = false;
};

// Holds a worker's lock for its scope; on release, wakes the worker's
// sleepers if operations completed meanwhile (Worker::WakeSleepersIfDone).
// Every scope that may complete tokens takes the lock this way.
class ABSL_SCOPED_LOCKABLE WorkerLock {
 public:
  ABSL_ATTRIBUTE_ALWAYS_INLINE explicit WorkerLock(Worker& worker)
      ABSL_EXCLUSIVE_LOCK_FUNCTION(worker.mu())
      : worker_(worker) {
    worker_.mu().Lock();
  }
  ABSL_ATTRIBUTE_ALWAYS_INLINE ~WorkerLock() ABSL_UNLOCK_FUNCTION() {
    worker_.WakeSleepersIfDone();
    worker_.mu().Unlock();
  }
  WorkerLock(const WorkerLock&) = delete;
  WorkerLock& operator=(const WorkerLock&) = delete;

 private:
  Worker& worker_;
};

template <typename Look>
TokenState Worker::SleepUnlessDone(absl::Duration timeout, Look look) {
  // A worker that cannot watch or arm still sleeps, in short slices.
  if (!PrepareToSleep()) timeout = std::min(timeout, kShortSleep);
  const WakeChannel::Ticket ticket = wake_->Enter();
  // Counted before the round looks at returns_ (ReturnLater's side of the
  // handshake publishes, then reads sleepers()).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Up to two rounds: steps a round made due (credits to return, sends it
  // unblocked) run at the next poll, which a long sleep would delay, so
  // they run first. A step that stays due (an arrival waiting for
  // large-message memory asks for one every poll) leaves only short sleeps.
  for (int round = 0;; ++round) {
    Round(/*catch_up=*/false);
    const TokenState state = look(*this);
    if (state != TokenState::kPending) {
      wake_->Leave(ticket);
      return state;
    }
    if (!completions_->AfterPollDue()) break;
    if (round == 1) {
      timeout = std::min(timeout, kShortSleep);
      break;
    }
  }
  mu_.Unlock();
  wake_->Sleep(ticket, std::min(timeout, kMaxSleep));
  mu_.Lock();
  AfterSleep(ticket);
  RoundAll();
  return look(*this);
}

}  // namespace demi::libos

#endif  // DEMI_LIBOS_WORKER_H_
