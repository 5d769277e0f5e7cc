/*
 * The Demikernel API over RDMA: sockets, queues and asynchronous I/O.
 *
 * Every function returns 0 or a positive errno (EINVAL before demi_init) and
 * is safe to call from any thread. Operations that take time (accept,
 * connect, push, pop) return a queue token at once; the demi_wait family
 * (<demi/wait.h>) collects results, failures as DEMI_OPC_FAILED with the
 * errno in qr_ret. Each function has a manual page (man 7 demi).
 */

#ifndef DEMI_LIBOS_H_
#define DEMI_LIBOS_H_

#include <demi/cc.h>
#include <demi/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Initializes the library from the DEMI_* environment (args may be NULL).
 * EINVAL (bad args or DEMI_SPIN_US), EEXIST (the second time), ENODEV (no
 * RDMA device), or the errno of setting up a device. */
int demi_init(const struct demi_args *args);

/* Creates a socket queue: AF_INET with SOCK_STREAM (RC queue pairs) or
 * SOCK_DGRAM (UD). EINVAL (NULL sockqd_out), ENOTSUP (domain, type or
 * protocol), EMFILE (too many sockets). */
int demi_socket(int *sockqd_out, int domain, int type, int protocol);

/* Listens for connections on a bound stream socket. EINVAL (backlog <= 0,
 * socket in use), EBADF, EDESTADDRREQ (unbound), EOPNOTSUPP (datagram). */
int demi_listen(int sockqd, int backlog);

/* Binds a socket to the address of an RDMA-capable interface. EINVAL (bad
 * address, bound already), EBADF, EADDRINUSE, EADDRNOTAVAIL. */
int demi_bind(int sockqd, const struct sockaddr *addr, socklen_t size);

/* Starts accepting one connection; the result carries the new queue. EINVAL
 * (not listening), EBADF, EOPNOTSUPP, EAGAIN; the token fails ECANCELED. */
int demi_accept(demi_qtoken_t *qt_out, int sockqd);

/* Starts connecting to a listening peer (a datagram socket: sets its default
 * destination). EINVAL, EBADF, EAGAIN; the token fails with ECONNREFUSED,
 * ETIMEDOUT, EHOSTUNREACH, ECANCELED... (demi_connect(3)). */
int demi_connect(demi_qtoken_t *qt_out, int sockqd, const struct sockaddr *addr,
                 socklen_t size);

/* Closes a queue: pending pops, accepts and connects fail ECANCELED; posted
 * pushes go on, then end of stream, but pushes waiting for credits are
 * dropped (ECANCELED) and the peer reset unless SO_LINGER waits for them
 * (demi_close(3)). EBADF. */
int demi_close(int qd);

/* Starts sending one message; its memory must stay valid until completion.
 * EINVAL (bad array), EBADF, ENOTCONN, EDESTADDRREQ, EMSGSIZE, EAGAIN, EFAULT;
 * the token fails with ECONNRESET, ETIMEDOUT, ECANCELED... (demi_push(3)). */
int demi_push(demi_qtoken_t *qt_out, int qd, const demi_sgarray_t *sga);

/* Starts sending one datagram to `dest_addr` (a push on a stream socket).
 * Errors of demi_push and EINVAL (bad address); the token fails with
 * ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT, ENOBUFS... (demi_pushto(3)). */
int demi_pushto(demi_qtoken_t *qt_out, int sockqd, const demi_sgarray_t *sga,
                const struct sockaddr *dest_addr, socklen_t size);

/* Starts receiving one message (zero segments: end of stream). EINVAL
 * (unbound datagram socket), EBADF, ENOTCONN, EAGAIN; the token fails with
 * ECONNRESET, ETIMEDOUT, EPROTO, ECANCELED... (demi_pop(3)). */
int demi_pop(demi_qtoken_t *qt_out, int qd);

/* Socket options: SOL_SOCKET / SO_LINGER of stream sockets, nothing else.
 * EINVAL (bad optval or optlen), ENOTSUP (level), ENOPROTOOPT (option, or a
 * datagram socket), EBADF. */
int demi_setsockopt(int qd, int level, int optname, const void *optval,
                    socklen_t optlen);
int demi_getsockopt(int qd, int level, int optname, void *optval,
                    socklen_t *optlen);

/* The address of a connected queue's peer. EINVAL (NULL, or *addrlen below
 * sizeof(struct sockaddr_in)), EBADF, ENOTCONN. */
int demi_getpeername(int qd, struct sockaddr *addr, socklen_t *addrlen);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_LIBOS_H_ */
