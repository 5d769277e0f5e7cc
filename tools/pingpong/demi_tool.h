/* What the C tools in tools/pingpong share: a check that exits, a wait for
 * one opcode, a connect that retries while the server is not listening
 * yet, and the monotonic clock. Header-only (static functions): each tool
 * is one C99 file linked against libdemi.so alone. */

#ifndef DEMI_TOOLS_PINGPONG_DEMI_TOOL_H_
#define DEMI_TOOLS_PINGPONG_DEMI_TOOL_H_

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/wait.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(c)                                                            \
  do {                                                                      \
    if (!(c)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      exit(1);                                                              \
    }                                                                       \
  } while (0)

static inline void wait_for(demi_qtoken_t qt, demi_opcode_t expected,
                            demi_qresult_t *qr) {
  CHECK(demi_wait(qr, qt, NULL) == 0);
  CHECK(qr->qr_opcode == expected);
}

/* A queue listening on `address` with room for `backlog` pending
 * connections. */
static inline int listen_on(const struct sockaddr_in *address, int backlog) {
  int listener = -1;
  CHECK(demi_socket(&listener, AF_INET, SOCK_STREAM, 0) == 0);
  CHECK(demi_bind(listener, (const struct sockaddr *)address,
                  sizeof(*address)) == 0);
  CHECK(demi_listen(listener, backlog) == 0);
  return listener;
}

/* A connected queue to `address`, retrying (200 times, 50 ms apart) while
 * the server is not listening yet. */
static inline int connect_to(const struct sockaddr_in *address) {
  int qd = -1;
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  CHECK(demi_socket(&qd, AF_INET, SOCK_STREAM, 0) == 0);
  for (int attempt = 0;; ++attempt) {
    CHECK(demi_connect(&qt, qd, (const struct sockaddr *)address,
                       sizeof(*address)) == 0);
    CHECK(demi_wait(&qr, qt, NULL) == 0);
    if (qr.qr_opcode == DEMI_OPC_CONNECT) break;
    CHECK(attempt < 200 && qr.qr_ret == ECONNREFUSED);
    CHECK(demi_close(qd) == 0);
    CHECK(demi_socket(&qd, AF_INET, SOCK_STREAM, 0) == 0);
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  }
  return qd;
}

static inline double monotonic_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

#endif /* DEMI_TOOLS_PINGPONG_DEMI_TOOL_H_ */
