#include "rdma/userfault_watcher.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::rdma {
namespace {

constexpr uint64_t kEvents = UFFD_FEATURE_EVENT_UNMAP |
                             UFFD_FEATURE_EVENT_REMOVE |
                             UFFD_FEATURE_EVENT_REMAP;

int OpenUserfaultfd() {
  // User-mode-only first: it is what we need (we never take faults) and it
  // does not need privilege. Kernels before 5.11 reject the flag.
  int fd = static_cast<int>(
      syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (fd < 0 && errno == EINVAL) {
    fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UserfaultWatcher>> UserfaultWatcher::Create() {
  const int uffd = OpenUserfaultfd();
  if (uffd < 0) return ErrnoStatus(errno, "userfaultfd");
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kEvents;
  if (ioctl(uffd, UFFDIO_API, &api) != 0) {
    const int saved = errno;
    close(uffd);
    return ErrnoStatus(saved, "UFFDIO_API (unmap/remove/remap events)");
  }
  if ((api.ioctls & (uint64_t{1} << _UFFDIO_REGISTER)) == 0) {
    close(uffd);
    return ErrnoError(ENOTSUP, "userfaultfd without UFFDIO_REGISTER");
  }
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) {
    const int saved = errno;
    close(uffd);
    return ErrnoStatus(saved, "eventfd");
  }
  std::unique_ptr<UserfaultWatcher> watcher(
      new UserfaultWatcher(uffd, stop_fd));
  watcher->thread_ = std::thread([w = watcher.get()] { w->Run(); });
  return watcher;
}

UserfaultWatcher::UserfaultWatcher(int uffd, int stop_fd)
    : uffd_(uffd), stop_fd_(stop_fd) {}

UserfaultWatcher::~UserfaultWatcher() {
  const uint64_t one = 1;
  if (write(stop_fd_, &one, sizeof(one)) != sizeof(one)) {
    DEMI_LOG(kError, "userfault watcher: cannot signal its thread, errno ",
             errno);
  }
  if (thread_.joinable()) thread_.join();
  // Closing the userfaultfd unwatches every range and releases any thread
  // still waiting for an event to be read.
  if (close(uffd_) != 0) DEMI_LOG(kWarning, "close(userfaultfd): ", errno);
  close(stop_fd_);
}

absl::Status UserfaultWatcher::Watch(AddressRange range) {
  uffdio_register reg{};
  reg.range.start = range.begin;
  reg.range.len = range.end - range.begin;
  // Write-protect mode, never write-protecting: events only, no faults.
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) {
    return ErrnoStatus(errno, "UFFDIO_REGISTER");
  }
  return absl::OkStatus();
}

void UserfaultWatcher::Run() {
  for (;;) {
    pollfd fds[2] = {{uffd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      DEMI_LOG(kError, "userfault watcher: poll failed, errno ", errno);
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      DEMI_LOG(kError, "userfault watcher: descriptor failed");
      return;
    }
    if ((fds[0].revents & POLLIN) && !ReadEvents()) return;
  }
}

bool UserfaultWatcher::ReadEvents() {
  bool healthy = true;
  log_.BeginWrite();
  for (;;) {
    uffd_msg messages[16];
    const ssize_t n = read(uffd_, messages, sizeof(messages));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        DEMI_LOG(kError, "userfault watcher: read failed, errno ", errno);
        healthy = false;
      }
      break;
    }
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); ++i) {
      const uffd_msg& message = messages[i];
      switch (message.event) {
        case UFFD_EVENT_UNMAP:
        case UFFD_EVENT_REMOVE:
          log_.Append({static_cast<uintptr_t>(message.arg.remove.start),
                       static_cast<uintptr_t>(message.arg.remove.end)});
          break;
        case UFFD_EVENT_REMAP:
          log_.Append({static_cast<uintptr_t>(message.arg.remap.from),
                       static_cast<uintptr_t>(message.arg.remap.from +
                                              message.arg.remap.len)});
          break;
        case UFFD_EVENT_PAGEFAULT: {
          // Cannot happen (nothing is write-protected); if it does, let the
          // faulting thread go on rather than hang it.
          uffdio_range page{message.arg.pagefault.address &
                                ~static_cast<uint64_t>(getpagesize() - 1),
                            static_cast<uint64_t>(getpagesize())};
          (void)ioctl(uffd_, UFFDIO_WAKE, &page);
          break;
        }
        default:
          break;
      }
    }
  }
  log_.EndWrite();
  return healthy;
}

}  // namespace demi::rdma
