// EpollSet: an epoll descriptor and the descriptors it watches.
//
// Used where a thread sleeps on the library's descriptors: a worker's
// watcher (WakeChannel) and the application's event loop (demi/event.h).
// Descriptors come and go with sockets; Watch adds the ones not watched yet
// (level-triggered, for reading), and a closed one leaves the set by itself.
//
// Errors: Create and Watch fail with the errno of epoll_create1 and
// epoll_ctl. Thread-safety: none; the owner serializes Watch. Move-only;
// the destructor closes the epoll descriptor (never the watched ones).

#ifndef DEMI_LIBOS_EPOLL_SET_H_
#define DEMI_LIBOS_EPOLL_SET_H_

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace demi::libos {

class EpollSet {
 public:
  static absl::StatusOr<EpollSet> Create();
  EpollSet(EpollSet&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)),
        watched_(std::move(other.watched_)) {}
  EpollSet& operator=(EpollSet&& other) noexcept;
  ~EpollSet();

  int fd() const { return fd_; }
  // Watches each descriptor of `fds` not watched yet, for reading.
  absl::Status Watch(const std::vector<int>& fds);

 private:
  explicit EpollSet(int fd) : fd_(fd) {}
  void Close();

  int fd_ = -1;
  std::vector<int> watched_;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_EPOLL_SET_H_
