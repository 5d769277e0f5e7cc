#include "libos/wake_channel.h"

#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>

#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace demi::libos {
namespace {

// Makes eventfd `fd` readable (a full counter stays readable: EAGAIN is
// fine).
void Signal(int fd, const char* name) {
  const uint64_t one = 1;
  if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
    DEMI_LOG(kError, "write(", name, ") failed");
  }
}

// Empties eventfd `fd` (EAGAIN: it was empty).
void Drain(int fd, const char* name) {
  uint64_t count = 0;
  if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
    DEMI_LOG(kError, "read(", name, ") failed");
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<WakeChannel>> WakeChannel::Create() {
  const int event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd < 0) return ErrnoStatus(errno, "eventfd");
  const int loop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop_fd < 0) {
    const int err = errno;
    close(event_fd);
    return ErrnoStatus(err, "eventfd");
  }
  absl::StatusOr<EpollSet> epoll = EpollSet::Create();
  if (!epoll.ok()) {
    close(event_fd);
    close(loop_fd);
    return epoll.status();
  }
  std::unique_ptr<WakeChannel> channel(
      new WakeChannel(event_fd, loop_fd, *std::move(epoll)));
  DEMI_RETURN_IF_ERROR(channel->epoll_.Watch({event_fd}));
  return channel;
}

WakeChannel::~WakeChannel() {
  if (close(event_fd_) != 0) DEMI_LOG(kError, "close(eventfd) failed");
  if (close(loop_fd_) != 0) DEMI_LOG(kError, "close(loop eventfd) failed");
}

WakeChannel::Ticket WakeChannel::Enter() {
  Ticket ticket;
  ticket.seen = wakes_.load(std::memory_order_seq_cst);
  ticket.watcher = !has_watcher_;
  has_watcher_ = true;
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  return ticket;
}

void WakeChannel::Sleep(const Ticket& ticket, absl::Duration timeout) {
  if (ticket.watcher) {
    int ms = -1;
    if (timeout != absl::InfiniteDuration()) {
      ms = static_cast<int>(std::min<int64_t>(
          absl::ToInt64Milliseconds(absl::Ceil(
              std::max(timeout, absl::ZeroDuration()), absl::Milliseconds(1))),
          INT_MAX));
    }
    epoll_event events[8];
    (void)epoll_wait(epoll_.fd(), events, 8, ms);  // EINTR: look again
    return;
  }
  timespec relative{};
  timespec* limit = nullptr;
  if (timeout != absl::InfiniteDuration()) {
    relative = absl::ToTimespec(std::max(timeout, absl::ZeroDuration()));
    limit = &relative;
  }
  // Returns at once if a Wake() came since Enter (the word moved on).
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&wakes_), FUTEX_WAIT_PRIVATE,
          ticket.seen, limit, nullptr, 0);
}

void WakeChannel::Leave(const Ticket& ticket) {
  const uint32_t left = sleepers_.fetch_sub(1, std::memory_order_seq_cst) - 1;
  if (!ticket.watcher) return;
  has_watcher_ = false;
  Drain(event_fd_, "eventfd");
  // The others look again (what woke the watcher may be theirs), and one of
  // them becomes the watcher when it next sleeps.
  if (left > 0) WakeFutexSleepers();
}

void WakeChannel::Wake() {
  if (sleepers() != 0) {
    Signal(event_fd_, "eventfd");
    WakeFutexSleepers();
  }
  if (loop_armed()) Signal(loop_fd_, "loop eventfd");
}

void WakeChannel::DrainLoopFd() { Drain(loop_fd_, "loop eventfd"); }

void WakeChannel::WakeFutexSleepers() {
  wakes_.fetch_add(1, std::memory_order_seq_cst);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&wakes_), FUTEX_WAKE_PRIVATE,
          INT_MAX, nullptr, nullptr, 0);
}

}  // namespace demi::libos
