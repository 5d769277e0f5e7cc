/*
 * The Demikernel API over RDMA: sockets, queues and asynchronous I/O.
 *
 * Every function returns 0 or a positive errno and is safe to call from any
 * thread. Operations that take time (accept, connect, push, pop) return a
 * queue token at once; the demi_wait family (<demi/wait.h>) collects results.
 */

#ifndef DEMI_LIBOS_H_
#define DEMI_LIBOS_H_

#include <demi/cc.h>
#include <demi/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Initializes the library once per process (EEXIST the second time). */
int demi_init(const struct demi_args *args);

/* Creates a socket queue: AF_INET with SOCK_STREAM (or SOCK_DGRAM). */
int demi_socket(int *sockqd_out, int domain, int type, int protocol);

/* Listens for connections on a bound socket. */
int demi_listen(int sockqd, int backlog);

/* Binds a socket to the address of an RDMA-capable interface. */
int demi_bind(int sockqd, const struct sockaddr *addr, socklen_t size);

/* Starts accepting one connection; the result carries the new queue. */
int demi_accept(demi_qtoken_t *qt_out, int sockqd);

/* Starts connecting to a listening peer. */
int demi_connect(demi_qtoken_t *qt_out, int sockqd, const struct sockaddr *addr,
                 socklen_t size);

/* Closes a queue; its pending operations complete with ECANCELED. Returns at
 * once; what a connection sent still goes, end of stream last. With SO_LINGER
 * on and a positive time, returns once the peer has acknowledged all of it
 * (or the time is up: what waited for the peer's credits is then dropped and
 * the peer reset); with time 0, resets the connection at once. */
int demi_close(int qd);

/* Starts sending one message; its memory must stay valid until completion. */
int demi_push(demi_qtoken_t *qt_out, int qd, const demi_sgarray_t *sga);

/* Starts sending one datagram to `dest_addr`. */
int demi_pushto(demi_qtoken_t *qt_out, int sockqd, const demi_sgarray_t *sga,
                const struct sockaddr *dest_addr, socklen_t size);

/* Starts receiving one message. */
int demi_pop(demi_qtoken_t *qt_out, int qd);

/* Socket options (SOL_SOCKET / SO_LINGER at least). */
int demi_setsockopt(int qd, int level, int optname, const void *optval,
                    socklen_t optlen);
int demi_getsockopt(int qd, int level, int optname, void *optval,
                    socklen_t *optlen);

/* The address of a connected queue's peer. */
int demi_getpeername(int qd, struct sockaddr *addr, socklen_t *addrlen);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_LIBOS_H_ */
