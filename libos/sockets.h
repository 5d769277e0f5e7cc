// Sockets: the sockets of one kind (SOCK_STREAM or SOCK_DGRAM), as the LibOS
// sees them.
//
// The LibOS keeps one object per kind (StreamSockets, DatagramSockets), each
// with its own table of queue descriptors; the kind bit of a qd (QdKind)
// says which one a call goes to. Every method is a demi_* call on a qd of
// this kind, with the C API's errors as absl::Status (EBADF: no such socket
// of this kind; EOPNOTSUPP or ENOPROTOOPT: not for this kind).
//
// Thread-safety: none; the LibOS calls every method under its mutex.

#ifndef DEMI_LIBOS_SOCKETS_H_
#define DEMI_LIBOS_SOCKETS_H_

#include <demi/types.h>
#include <sys/socket.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace demi::libos {

// A close that lingers: demi_close on a connection with SO_LINGER on and a
// positive time returns once what was pushed before it (and its end of
// stream) is acknowledged by the peer, or after `time`. `id` names the
// retired socket to the kind's Lingering/EndLinger; 0: nothing to wait for.
struct Linger {
  uint64_t id = 0;
  absl::Duration time;
};

class Sockets {
 public:
  virtual ~Sockets() = default;

  // demi_socket: a new socket of this kind (`protocol` 0 or the kind's).
  virtual absl::StatusOr<int> Open(int protocol) = 0;
  virtual absl::Status Bind(int qd, const sockaddr* address,
                            socklen_t size) = 0;
  virtual absl::Status Listen(int qd, int backlog) = 0;
  virtual absl::StatusOr<demi_qtoken_t> Accept(int qd) = 0;
  virtual absl::StatusOr<demi_qtoken_t> Connect(int qd, const sockaddr* address,
                                                socklen_t size) = 0;
  virtual absl::StatusOr<demi_qtoken_t> Push(int qd,
                                             const demi_sgarray_t* sga) = 0;
  // demi_pushto: to `address` (a datagram socket), or a push whose address
  // is only checked for form (a connection-mode socket, as POSIX sendto).
  virtual absl::StatusOr<demi_qtoken_t> PushTo(int qd,
                                               const demi_sgarray_t* sga,
                                               const sockaddr* address,
                                               socklen_t size) = 0;
  virtual absl::StatusOr<demi_qtoken_t> Pop(int qd) = 0;
  // demi_close: pending operations of `qd` fail with ECANCELED; the socket
  // is kept (retired) until its sends finished and its popped arrays came
  // back. `*linger` (never null) is set when the close is to be waited for
  // (SO_LINGER on with a positive time; see Linger).
  virtual absl::Status Close(int qd, Linger* linger) = 0;
  virtual absl::Status GetPeerName(int qd, sockaddr* address,
                                   socklen_t* size) = 0;
  virtual absl::Status SetLinger(int qd, const void* value, socklen_t size) = 0;
  virtual absl::Status GetLinger(int qd, void* value, socklen_t* size) = 0;

  // Sleeping (a wait that spun its budget; see LibOS::WaitLoop): appends
  // the descriptors that become readable when this kind has something to
  // report (its rdma_cm channel), and arms the completion queues of its own
  // (beyond the worker's groups) so their next completion raises an event.
  virtual void AppendWakeFds(std::vector<int>* fds) const = 0;
  virtual absl::Status ArmNotify() = 0;

  // Destroys the retired sockets that are done (after a demi_sgafree that
  // may have returned a closed socket's last popped array).
  virtual void Reap() = 0;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_SOCKETS_H_
