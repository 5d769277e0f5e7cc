/* Every public header compiles as C11, alone and together, and the structs
 * have Demikernel's packed layouts (an application's binary view of them). */

#include <demi/cc.h>
#include <demi/event.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/types.h>
#include <demi/wait.h>
#include <stddef.h>

_Static_assert(DEMI_SGARRAY_MAXSIZE == 16, "16 segments per array");
_Static_assert(sizeof(demi_qtoken_t) == 8, "tokens are 64-bit");

_Static_assert(sizeof(demi_sgaseg_t) == 12, "packed segment");
_Static_assert(offsetof(demi_sgaseg_t, sgaseg_len) == 8, "segment length");

_Static_assert(offsetof(demi_sgarray_t, sga_numsegs) == 8, "numsegs");
_Static_assert(offsetof(demi_sgarray_t, sga_segs) == 12, "segments");
_Static_assert(offsetof(demi_sgarray_t, sga_addr) == 12 + 16 * 12, "addr");
_Static_assert(sizeof(demi_sgarray_t) == 12 + 16 * 12 + 16, "packed array");

_Static_assert(sizeof(demi_accept_result_t) == 20, "packed accept result");
_Static_assert(offsetof(demi_accept_result_t, addr) == 4, "accept addr");

_Static_assert(offsetof(demi_qresult_t, qr_qd) == 4, "qd");
_Static_assert(offsetof(demi_qresult_t, qr_qt) == 8, "token");
_Static_assert(offsetof(demi_qresult_t, qr_ret) == 16, "ret");
_Static_assert(offsetof(demi_qresult_t, qr_value) == 24, "value");
_Static_assert(sizeof(demi_qresult_t) == 24 + sizeof(demi_sgarray_t),
               "packed result");

_Static_assert(sizeof(struct demi_args) == 20, "packed demi_args");
_Static_assert(offsetof(struct demi_args, argv) == 4, "demi_args argv");
_Static_assert(offsetof(struct demi_args, callback) == 12,
               "demi_args callback");

_Static_assert(DEMI_OPC_INVALID == 0 && DEMI_OPC_PUSH == 1 &&
                   DEMI_OPC_POP == 2 && DEMI_OPC_ACCEPT == 3 &&
                   DEMI_OPC_CONNECT == 4 && DEMI_OPC_CLOSE == 5 &&
                   DEMI_OPC_FAILED == 6,
               "opcode values");

_Static_assert(sizeof(demi_mr_cache_stats_t) == 7 * 8 + 8, "cache stats");
_Static_assert(offsetof(demi_mr_cache_stats_t, caching) == 56, "caching");
_Static_assert(sizeof(demi_dgram_stats_t) == 16 * 8 + 8, "datagram stats");
_Static_assert(offsetof(demi_dgram_stats_t, forged) == 120, "forged");
_Static_assert(offsetof(demi_dgram_stats_t, ah_stale) == 128, "ah_stale");
_Static_assert(offsetof(demi_dgram_stats_t, max_payload) == 88, "max_payload");
_Static_assert(offsetof(demi_dgram_stats_t, device_drops_reported) == 92,
               "device_drops_reported");
_Static_assert(offsetof(demi_dgram_stats_t, route_drops) == 112, "route_drops");

/* Redeclaring each function as API.md states it fails to compile if a header
 * disagrees (C requires compatible types for redeclarations). */
int demi_init(const struct demi_args *args);
int demi_socket(int *sockqd_out, int domain, int type, int protocol);
int demi_listen(int sockqd, int backlog);
int demi_bind(int sockqd, const struct sockaddr *addr, socklen_t size);
int demi_accept(demi_qtoken_t *qt_out, int sockqd);
int demi_connect(demi_qtoken_t *qt_out, int sockqd, const struct sockaddr *addr,
                 socklen_t size);
int demi_close(int qd);
int demi_push(demi_qtoken_t *qt_out, int qd, const demi_sgarray_t *sga);
int demi_pushto(demi_qtoken_t *qt_out, int sockqd, const demi_sgarray_t *sga,
                const struct sockaddr *dest_addr, socklen_t size);
int demi_pop(demi_qtoken_t *qt_out, int qd);
int demi_setsockopt(int qd, int level, int optname, const void *optval,
                    socklen_t optlen);
int demi_getsockopt(int qd, int level, int optname, void *optval,
                    socklen_t *optlen);
int demi_getpeername(int qd, struct sockaddr *addr, socklen_t *addrlen);
demi_sgarray_t demi_sgaalloc(size_t size);
int demi_sgafree(demi_sgarray_t *sga);
int demi_wait(demi_qresult_t *qr_out, demi_qtoken_t qt,
              const struct timespec *timeout);
int demi_wait_any(demi_qresult_t *qr_out, int *ready_offset,
                  const demi_qtoken_t qts[], int num_qts,
                  const struct timespec *timeout);
int demi_wait_next_n(demi_qresult_t *qr_out, int num_qrs, int *num_qrs_out,
                     const struct timespec *timeout);

int demi_mr_cache_stats(demi_mr_cache_stats_t *stats);
int demi_dgram_stats(demi_dgram_stats_t *stats);

int main(void) { return 0; }
