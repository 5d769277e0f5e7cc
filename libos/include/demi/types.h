/*
 * Types of the Demikernel C API, as implemented over RDMA.
 *
 * Layouts match Demikernel's own (packed structs on Linux), so applications
 * written for Demikernel compile and run against these headers unchanged.
 * One difference: a scatter-gather array holds up to DEMI_SGARRAY_MAXSIZE (16)
 * segments, each sent as one verbs scatter-gather element.
 */

#ifndef DEMI_TYPES_H_
#define DEMI_TYPES_H_

#include <netinet/in.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DEMI_ATTR_PACKED __attribute__((__packed__))
#else
#define DEMI_ATTR_PACKED
#endif

/* Most segments one scatter-gather array can hold. */
#define DEMI_SGARRAY_MAXSIZE 16

/* Names one asynchronous operation until its result is taken by a wait. */
typedef uint64_t demi_qtoken_t;

/* One contiguous piece of memory. */
typedef struct DEMI_ATTR_PACKED demi_sgaseg {
  void *sgaseg_buf;
  uint32_t sgaseg_len;
} demi_sgaseg_t;

/*
 * A message: sga_numsegs segments, delivered as one unit. sga_buf is the
 * library's handle for memory it owns (set by demi_sgaalloc and by pops) and
 * NULL for application memory. sga_addr is the peer of a datagram.
 */
typedef struct DEMI_ATTR_PACKED demi_sgarray {
  void *sga_buf;
  uint32_t sga_numsegs;
  demi_sgaseg_t sga_segs[DEMI_SGARRAY_MAXSIZE];
  struct sockaddr_in sga_addr;
} demi_sgarray_t;

/* What a completed operation was. */
typedef enum demi_opcode {
  DEMI_OPC_INVALID = 0,
  DEMI_OPC_PUSH,
  DEMI_OPC_POP,
  DEMI_OPC_ACCEPT,
  DEMI_OPC_CONNECT,
  DEMI_OPC_CLOSE,
  DEMI_OPC_FAILED,
} demi_opcode_t;

/* The result of an accept: the new connection's queue and its peer. */
typedef struct DEMI_ATTR_PACKED demi_accept_result {
  int32_t qd;
  struct sockaddr_in addr;
} demi_accept_result_t;

/*
 * The result of an operation, filled in by the demi_wait family. qr_ret is 0
 * on success and a positive errno when qr_opcode is DEMI_OPC_FAILED.
 */
typedef struct DEMI_ATTR_PACKED demi_qresult {
  demi_opcode_t qr_opcode;
  int32_t qr_qd;
  demi_qtoken_t qr_qt;
  int64_t qr_ret;
  union {
    demi_sgarray_t sga;
    demi_accept_result_t ares;
  } qr_value;
} demi_qresult_t;

/* A logging callback: (message, length, reserved). */
typedef void (*demi_callback_t)(const char *, uint32_t, uint64_t);

/* Arguments of demi_init (packed, 20 bytes on x86-64, as in Demikernel). */
struct DEMI_ATTR_PACKED demi_args {
  int argc;
  char *const *argv;
  demi_callback_t callback;
};

#ifdef __cplusplus
}
#endif

#endif /* DEMI_TYPES_H_ */
