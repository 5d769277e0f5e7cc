// WakeChannel: where the threads waiting on one worker sleep, and how they
// are woken.
//
// A wait spins first (LibOS::WaitLoop); once its spin budget is spent it
// sleeps here until something of its worker may have changed. Of the threads
// asleep on one worker, one (the watcher) sleeps in epoll_wait on the
// worker's descriptors: the completion channels of its queues, its rdma_cm
// channels (Watch) and the channel's own eventfd; the others sleep on a
// futex word. Whatever wakes the watcher, it wakes the others when it
// leaves (Leave), so each of them looks at its own tokens again; and any
// thread that completes tokens while others sleep wakes them all (Wake).
//
// The sleep protocol (the worker's lock held except in Sleep):
//   1. arm the completion queues (their next completion raises an event);
//   2. Enter(): counted as a sleeper from now on;
//   3. poll once more and look at the tokens (a completion that landed
//      before the arming raised no event; a token another thread completed
//      before step 2 is seen here);
//   4. if nothing: Sleep() (drops and retakes the lock), then Leave().
// No wake-up is lost: after step 2, a completion raises an event on an armed
// queue, a token completed by another thread makes that thread call Wake()
// (it sees sleepers() > 0 when it releases the lock: Worker's WorkerLock),
// and a buffer given back without the lock (Worker::ReturnLater) calls
// Wake() after publishing it (sequentially consistent, so either the
// returner sees the sleeper or the sleeper's step 3 sees the buffer).
//
// The application's event loop (demi_event_fd) is woken the same way
// through an eventfd of its own (loop_fd) while it is armed.
//
// Errors: Create and Watch fail with the errno of eventfd, epoll_create1
// or epoll_ctl. Sleep never fails (an interrupted sleep returns early).
// Thread-safety: Wake() and sleepers() from any thread; Sleep() without the
// owner's lock; the rest under it.

#ifndef DEMI_LIBOS_WAKE_CHANNEL_H_
#define DEMI_LIBOS_WAKE_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libos/epoll_set.h"

namespace demi::libos {

class WakeChannel {
 public:
  static absl::StatusOr<std::unique_ptr<WakeChannel>> Create();
  WakeChannel(const WakeChannel&) = delete;
  WakeChannel& operator=(const WakeChannel&) = delete;
  ~WakeChannel();  // closes its eventfds (and its epoll set)

  // Makes the watcher also wake when a descriptor of `fds` becomes readable
  // (EpollSet::Watch; whoever wakes drains them).
  absl::Status Watch(const std::vector<int>& fds) { return epoll_.Watch(fds); }

  // A sleeping thread's place: watcher or not, and the wake count it saw.
  struct Ticket {
    bool watcher = false;
    uint32_t seen = 0;
  };
  // Step 2 of the protocol.
  Ticket Enter();
  // Sleeps until woken or `timeout` passed (rounded up to whole
  // milliseconds for the watcher).
  void Sleep(const Ticket& ticket, absl::Duration timeout);
  // After Sleep, or instead of it (step 3 found something): no longer a
  // sleeper. The watcher empties the eventfd and wakes the other sleepers.
  void Leave(const Ticket& ticket);

  // Threads between Enter and Leave.
  uint32_t sleepers() const {
    return sleepers_.load(std::memory_order_seq_cst);
  }
  // Wakes every sleeper (the watcher through the eventfd, the others
  // through the futex word) and, while one is armed (set_loop_armed), the
  // application's event loop through loop_fd(). A few system calls: call
  // only when sleepers() > 0 or loop_armed().
  void Wake();

  // The application's event loop (demi/event.h): an eventfd of its own in
  // the loop's epoll set (not the watcher's: whoever drains a descriptor
  // both watch could make the other's epoll_wait sleep on after it was
  // woken), written by Wake() while the loop is armed, emptied by
  // DrainLoopFd() when the loop arms again.
  int loop_fd() const { return loop_fd_; }
  void set_loop_armed(bool armed) {
    loop_armed_.store(armed, std::memory_order_seq_cst);
  }
  bool loop_armed() const {
    return loop_armed_.load(std::memory_order_seq_cst);
  }
  void DrainLoopFd();

 private:
  WakeChannel(int event_fd, int loop_fd, EpollSet epoll)
      : event_fd_(event_fd), loop_fd_(loop_fd), epoll_(std::move(epoll)) {}
  void WakeFutexSleepers();

  const int event_fd_;
  const int loop_fd_;
  EpollSet epoll_;            // Watch under the owner's lock
  bool has_watcher_ = false;  // under the owner's lock
  std::atomic<uint32_t> sleepers_{0};
  std::atomic<uint32_t> wakes_{0};  // the futex word
  std::atomic<bool> loop_armed_{false};
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_WAKE_CHANNEL_H_
