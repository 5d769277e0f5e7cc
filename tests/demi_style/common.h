/* Shared by the programs in this folder: C99 programs written the way
 * Demikernel's own examples are (every opcode checked, the echo server
 * pushing back the array it popped), linked only against libdemi.so.
 *
 * Each program runs its roles (server, client, relay...) in processes of
 * its own: started without arguments it forks them itself on the test
 * address (DEMI_RDMA_ADDR, default 10.77.0.1: tools/softroce/run) and exits 0
 * only if every role did; `PROGRAM --server ADDR PORT` and `--client ADDR PORT`
 * run one role, as Demikernel's examples do. */

#ifndef DEMI_TESTS_DEMI_STYLE_COMMON_H_
#define DEMI_TESTS_DEMI_STYLE_COMMON_H_

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Like assert(), but never compiled out (NDEBUG) and naming the program. */
#define CHECK(condition) \
  ((condition) ? (void)0 : check_failed(#condition, __FILE__, __LINE__))

static inline void check_failed(const char *what, const char *file, int line) {
  fprintf(stderr, "[%ld] %s:%d: check failed: %s\n", (long)getpid(), file, line,
          what);
  exit(1);
}

/* The byte at `offset` of message `index`: every byte of every message
 * differs from its neighbours', so a lost, reordered or stale byte shows. */
static inline uint8_t pattern_byte(uint64_t index, uint64_t offset) {
  return (uint8_t)(index * 131u + offset * 7u + (offset >> 8) * 13u + 3u);
}

static inline void fill_pattern(uint8_t *data, uint64_t length, uint64_t index,
                                uint64_t first_offset) {
  for (uint64_t i = 0; i < length; ++i) {
    data[i] = pattern_byte(index, first_offset + i);
  }
}

/* Returns 1 if `data` holds message `index` from `first_offset` on. */
static inline int has_pattern(const uint8_t *data, uint64_t length,
                              uint64_t index, uint64_t first_offset) {
  for (uint64_t i = 0; i < length; ++i) {
    if (data[i] != pattern_byte(index, first_offset + i)) {
      fprintf(stderr, "message %llu: byte %llu is %u, expected %u\n",
              (unsigned long long)index, (unsigned long long)(first_offset + i),
              data[i], pattern_byte(index, first_offset + i));
      return 0;
    }
  }
  return 1;
}

static inline void build_address(const char *ip, const char *port,
                                 struct sockaddr_in *address) {
  memset(address, 0, sizeof(*address));
  address->sin_family = AF_INET;
  address->sin_port = htons((uint16_t)atoi(port));
  CHECK(inet_pton(AF_INET, ip, &address->sin_addr) == 1);
}

/* The test address with a port derived from this process, or exits. */
static inline struct sockaddr_in test_address(int port_offset) {
  const char *ip = getenv("DEMI_RDMA_ADDR");
  struct sockaddr_in address;
  char port[16];
  if (ip == NULL || *ip == '\0') {
    ip = "10.77.0.1"; /* the Soft-RoCE guest's (tools/softroce/run) */
  }
  snprintf(port, sizeof(port), "%d",
           22000 + (int)(getpid() % 500) * 8 + port_offset);
  build_address(ip, port, &address);
  return address;
}

static inline void init_demi(int argc, char *const argv[]) {
  const struct demi_args args = {
      .argc = argc,
      .argv = argv,
      .callback = NULL,
  };
  CHECK(demi_init(&args) == 0);
}

static inline void wait_for(demi_qresult_t *qr, demi_qtoken_t qt) {
  CHECK(demi_wait(qr, qt, NULL) == 0);
}

static inline int accept_wait(int listener) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  CHECK(demi_accept(&qt, listener) == 0);
  wait_for(&qr, qt);
  CHECK(qr.qr_opcode == DEMI_OPC_ACCEPT);
  return qr.qr_value.ares.qd;
}

static inline int listen_on(const struct sockaddr_in *address) {
  int qd = -1;
  CHECK(demi_socket(&qd, AF_INET, SOCK_STREAM, 0) == 0);
  CHECK(demi_bind(qd, (const struct sockaddr *)address, sizeof(*address)) == 0);
  CHECK(demi_listen(qd, 16) == 0);
  return qd;
}

/* Opens a stream socket and connects it to `address`; *qr is the connect's
 * result (DEMI_OPC_CONNECT, or DEMI_OPC_FAILED with its errno). */
static inline int connect_once(const struct sockaddr_in *address,
                               demi_qresult_t *qr) {
  int qd = -1;
  demi_qtoken_t qt = 0;
  CHECK(demi_socket(&qd, AF_INET, SOCK_STREAM, 0) == 0);
  CHECK(demi_connect(&qt, qd, (const struct sockaddr *)address,
                     sizeof(*address)) == 0);
  wait_for(qr, qt);
  return qd;
}

static inline int connect_to(const struct sockaddr_in *address) {
  demi_qresult_t qr;
  const int qd = connect_once(address, &qr);
  CHECK(qr.qr_opcode == DEMI_OPC_CONNECT);
  return qd;
}

static inline void push_wait(int qd, const demi_sgarray_t *sga) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  CHECK(demi_push(&qt, qd, sga) == 0);
  wait_for(&qr, qt);
  CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
}

static inline void pop_wait(int qd, demi_qresult_t *qr) {
  demi_qtoken_t qt = 0;
  CHECK(demi_pop(&qt, qd) == 0);
  wait_for(qr, qt);
  CHECK(qr->qr_opcode == DEMI_OPC_POP);
}

/* Demikernel's echo: pushes back each popped array until end of stream;
 * adds what it echoed to *messages and *bytes. */
static inline void echo_until_end_of_stream(int qd,
                                            unsigned long long *messages,
                                            unsigned long long *bytes) {
  for (;;) {
    demi_qresult_t qr;
    demi_sgarray_t sga;
    pop_wait(qd, &qr);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    if (sga.sga_numsegs == 0) return; /* the peer closed */
    for (uint32_t s = 0; s < sga.sga_numsegs; ++s) {
      *bytes += sga.sga_segs[s].sgaseg_len;
    }
    push_wait(qd, &sga); /* the popped array itself */
    CHECK(demi_sgafree(&sga) == 0);
    ++*messages;
  }
}

/* Seconds on the monotonic clock. */
static inline double now_seconds(void) {
  struct timespec t;
  CHECK(clock_gettime(CLOCK_MONOTONIC, &t) == 0);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Connects to `address`, retrying for up to 60 s while nobody listens there
 * yet (a server on another host may still be booting). */
static inline int connect_retrying(const struct sockaddr_in *address) {
  const double give_up = now_seconds() + 60;
  for (;;) {
    demi_qresult_t qr;
    const int qd = connect_once(address, &qr);
    if (qr.qr_opcode == DEMI_OPC_CONNECT) return qd;
    CHECK(qr.qr_opcode == DEMI_OPC_FAILED);
    fprintf(stderr, "connect: %s; retrying\n", strerror(qr.qr_ret));
    CHECK(demi_close(qd) == 0);
    CHECK(now_seconds() < give_up);
    sleep(1);
  }
}

/* A one-segment library array of `size` bytes holding message `index`. */
static inline demi_sgarray_t pattern_array(uint32_t size, uint64_t index) {
  demi_sgarray_t sga = demi_sgaalloc(size);
  CHECK(sga.sga_numsegs == 1);
  CHECK(sga.sga_segs[0].sgaseg_len == size);
  fill_pattern((uint8_t *)sga.sga_segs[0].sgaseg_buf, size, index, 0);
  return sga;
}

/* Checks that a popped array is message `index` of `size` bytes (any
 * number of segments). */
static inline void check_message(const demi_sgarray_t *sga, uint32_t size,
                                 uint64_t index) {
  uint64_t offset = 0;
  for (uint32_t s = 0; s < sga->sga_numsegs; ++s) {
    const demi_sgaseg_t *segment = &sga->sga_segs[s];
    CHECK(has_pattern((const uint8_t *)segment->sgaseg_buf, segment->sgaseg_len,
                      index, offset));
    offset += segment->sgaseg_len;
  }
  if (offset != size) {
    fprintf(stderr, "message %llu: %llu bytes, expected %u\n",
            (unsigned long long)index, (unsigned long long)offset, size);
  }
  CHECK(offset == size);
}

/* Forks a child that runs `role(argument)` and exits with its status; the
 * child tells the parent it is ready (listening) by calling ready(), and
 * start_role returns only then. */
static int ready_pipe[2] = {-1, -1};

static inline void ready(void) {
  char byte = 1;
  if (ready_pipe[1] >= 0) CHECK(write(ready_pipe[1], &byte, 1) == 1);
}

static inline pid_t start_role(int (*role)(int argc, char *const argv[]),
                               int argc, char *const argv[]) {
  pid_t pid;
  char byte = 0;
  CHECK(pipe(ready_pipe) == 0);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(ready_pipe[0]);
    exit(role(argc, argv));
  }
  close(ready_pipe[1]);
  CHECK(read(ready_pipe[0], &byte, 1) == 1); /* 0: the child died first */
  close(ready_pipe[0]);
  ready_pipe[0] = ready_pipe[1] = -1;
  return pid;
}

/* Waits for a child role; returns 1 if it exited 0. */
static inline int role_succeeded(pid_t pid, const char *name) {
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 1;
  fprintf(stderr, "%s (pid %ld) failed: status %d\n", name, (long)pid, status);
  return 0;
}

/* A program's run with no arguments (the one-guest test): its server role
 * forked, its client run here; the exit status: 0 if both succeeded. */
static inline int run_server_and_client(
    int (*server)(int argc, char *const argv[]),
    int (*client)(int argc, char *const argv[]), int argc, char *const argv[]) {
  pid_t server_pid = start_role(server, argc, argv);
  int ok = client(argc, argv) == 0;
  ok = role_succeeded(server_pid, "server") && ok;
  return ok ? 0 : 1;
}

#endif /* DEMI_TESTS_DEMI_STYLE_COMMON_H_ */
