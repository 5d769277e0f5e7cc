#include "libos/epoll_set.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::libos {

absl::StatusOr<EpollSet> EpollSet::Create() {
  const int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "epoll_create1");
  return EpollSet(fd);
}

EpollSet& EpollSet::operator=(EpollSet&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    watched_ = std::move(other.watched_);
  }
  return *this;
}

EpollSet::~EpollSet() { Close(); }

void EpollSet::Close() {
  if (fd_ >= 0 && close(fd_) != 0) DEMI_LOG(kError, "close(epoll fd) failed");
  fd_ = -1;
}

absl::Status EpollSet::Watch(const std::vector<int>& fds) {
  for (int fd : fds) {
    if (std::find(watched_.begin(), watched_.end(), fd) != watched_.end()) {
      continue;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &event) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, "epoll_ctl(ADD)");
    }
    watched_.push_back(fd);
  }
  return absl::OkStatus();
}

}  // namespace demi::libos
