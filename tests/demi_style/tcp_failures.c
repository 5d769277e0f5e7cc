/* How a connection fails when its peer goes away, timed: the client
 * exchanges a few checked messages with the server, then waits on a pop
 * while the server's side fails in the way MODE says; the client checks
 * that the pop completes DEMI_OPC_FAILED with an allowed errno within the
 * bound, then that a push on the dead connection fails too.
 *
 *   tcp_failures --server ADDR PORT MODE
 *       kill: the server process kills itself (SIGKILL) after the exchange
 *       cut:  the server runs `ip link set eth0 down` after the exchange and
 *             exits (its host is gone from the wire: what a powered-off
 *             host looks like to its peers)
 *   tcp_failures --client ADDR PORT BOUND_SECONDS ERRNO_NAME...
 *       the pop must fail within BOUND_SECONDS with one of the errnos
 *       (ECONNRESET, ETIMEDOUT)
 *   tcp_failures --connect ADDR PORT BOUND_SECONDS
 *       a connect to ADDR (a host that is down) must fail within the bound
 *       (ETIMEDOUT, EHOSTUNREACH, ENETUNREACH or ECONNREFUSED)
 *
 * The client and --connect also keep a connection to another peer: an echo
 * server they fork on their own host ($DEMI_RDMA_ADDR, PORT + 1). After the
 * failure it must still carry checked messages: one dead peer fails only
 * its own connections.
 *
 * Each prints one line saying what happened and how long it took. */

#define _POSIX_C_SOURCE 200809L

#include <signal.h>

#include "common.h"

#define EXCHANGES 10

static struct sockaddr_in address;
static struct sockaddr_in other_address; /* the other peer, on this host */

static int errno_named(const char *name) {
  if (strcmp(name, "ECONNRESET") == 0) return ECONNRESET;
  if (strcmp(name, "ETIMEDOUT") == 0) return ETIMEDOUT;
  if (strcmp(name, "EHOSTUNREACH") == 0) return EHOSTUNREACH;
  if (strcmp(name, "ENETUNREACH") == 0) return ENETUNREACH;
  if (strcmp(name, "ECONNREFUSED") == 0) return ECONNREFUSED;
  fprintf(stderr, "tcp_failures: unknown errno name %s\n", name);
  exit(2);
}

static int server(const char *mode, int argc, char *const argv[]) {
  int listener, qd;
  init_demi(argc, argv);
  listener = listen_on(&address);
  qd = accept_wait(listener);
  for (int i = 0; i < EXCHANGES; ++i) {
    demi_qresult_t qr;
    demi_sgarray_t sga;
    pop_wait(qd, &qr);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    CHECK(sga.sga_numsegs > 0);
    push_wait(qd, &sga);
    CHECK(demi_sgafree(&sga) == 0);
  }
  printf("tcp_failures: server exchanged %d messages; now: %s\n", EXCHANGES,
         mode);
  fflush(stdout);
  if (strcmp(mode, "kill") == 0) {
    raise(SIGKILL);
  } else if (strcmp(mode, "cut") == 0) {
    /* Give the last echo time to be acknowledged first. */
    sleep(1);
    CHECK(system("ip link set eth0 down") == 0);
    _exit(0); /* no close, no disconnect: the wire is gone */
  }
  fprintf(stderr, "tcp_failures: unknown mode %s\n", mode);
  return 2;
}

/* The other peer: echoes until end of stream. */
static int other_peer(int argc, char *const argv[]) {
  unsigned long long messages = 0, bytes = 0;
  int listener, qd;
  init_demi(argc, argv);
  listener = listen_on(&other_address);
  ready();
  qd = accept_wait(listener);
  echo_until_end_of_stream(qd, &messages, &bytes);
  CHECK(demi_close(qd) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

/* Forks the other peer (before this process starts its libOS). */
static pid_t start_other_peer(int argc, char *const argv[]) {
  const char *own = getenv("DEMI_RDMA_ADDR");
  other_address = address;
  if (own != NULL) CHECK(inet_pton(AF_INET, own, &other_address.sin_addr) == 1);
  other_address.sin_port = htons((uint16_t)(ntohs(address.sin_port) + 1));
  return start_role(other_peer, argc, argv);
}

/* EXCHANGES messages pushed to an echo on `qd`, each answer checked. */
static void exchange_checked(int qd) {
  for (int i = 0; i < EXCHANGES; ++i) {
    demi_qresult_t qr;
    demi_sgarray_t sga = pattern_array(100, (uint64_t)i);
    push_wait(qd, &sga);
    CHECK(demi_sgafree(&sga) == 0);
    pop_wait(qd, &qr);
    check_message(&qr.qr_value.sga, 100, (uint64_t)i);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
  }
}

/* Exchanges checked messages with the other peer, closes, collects it. */
static void check_other_peer(int qd, pid_t pid) {
  static const struct linger wait_for_the_end = {1, 10};
  exchange_checked(qd);
  CHECK(demi_setsockopt(qd, SOL_SOCKET, SO_LINGER, &wait_for_the_end,
                        sizeof(wait_for_the_end)) == 0);
  CHECK(demi_close(qd) == 0);
  CHECK(role_succeeded(pid, "the other peer"));
  printf(
      "tcp_failures: the connection to another peer still works (%d "
      "messages checked)\n",
      EXCHANGES);
}

static int allowed(int e, int argc, char *const argv[], int first) {
  for (int i = first; i < argc; ++i) {
    if (errno_named(argv[i]) == e) return 1;
  }
  return 0;
}

/* Waits for `qt`, started at `start`, which must fail within `bound`
 * seconds of it; prints what happened to `what` and returns the errno. */
static int expect_failure(const char *what, demi_qtoken_t qt, double start,
                          double bound) {
  demi_qresult_t qr;
  double took;
  wait_for(&qr, qt);
  took = now_seconds() - start;
  printf(
      "tcp_failures: %s completed with opcode %d, %s, after %.2f s (bound "
      "%.0f s)\n",
      what, (int)qr.qr_opcode, strerror(qr.qr_ret), took, bound);
  CHECK(qr.qr_opcode == DEMI_OPC_FAILED);
  CHECK(took <= bound);
  return (int)qr.qr_ret;
}

static int client(double bound, int argc, char *const argv[]) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  const pid_t other_pid = start_other_peer(argc, argv);
  int qd, other;
  init_demi(argc, argv);
  other = connect_retrying(&other_address);
  qd = connect_retrying(&address);
  exchange_checked(qd);
  /* An idle connection with only a pop pending. */
  CHECK(demi_pop(&qt, qd) == 0);
  CHECK(allowed(expect_failure("the pending pop", qt, now_seconds(), bound),
                argc, argv, 5));
  /* Later operations fail at once. */
  {
    demi_sgarray_t sga = pattern_array(100, 0);
    CHECK(demi_push(&qt, qd, &sga) == 0);
    wait_for(&qr, qt);
    CHECK(qr.qr_opcode == DEMI_OPC_FAILED);
    CHECK(demi_sgafree(&sga) == 0);
  }
  CHECK(demi_close(qd) == 0);
  check_other_peer(other, other_pid);
  return 0;
}

static int connect_down(double bound, int argc, char *const argv[]) {
  demi_qtoken_t qt = 0;
  double start;
  const pid_t other_pid = start_other_peer(argc, argv);
  int qd = -1, e, other;
  init_demi(argc, argv);
  other = connect_retrying(&other_address);
  CHECK(demi_socket(&qd, AF_INET, SOCK_STREAM, 0) == 0);
  start = now_seconds();
  CHECK(demi_connect(&qt, qd, (const struct sockaddr *)&address,
                     sizeof(address)) == 0);
  e = expect_failure("the connect", qt, start, bound);
  CHECK(e == ETIMEDOUT || e == EHOSTUNREACH || e == ENETUNREACH ||
        e == ECONNREFUSED);
  CHECK(demi_close(qd) == 0);
  check_other_peer(other, other_pid);
  return 0;
}

int main(int argc, char *const argv[]) {
  if (argc >= 5) {
    build_address(argv[2], argv[3], &address);
    if (strcmp(argv[1], "--server") == 0 && argc == 5) {
      return server(argv[4], argc, argv);
    }
    if (strcmp(argv[1], "--client") == 0 && argc >= 6) {
      return client(atof(argv[4]), argc, argv);
    }
    if (strcmp(argv[1], "--connect") == 0 && argc == 5) {
      return connect_down(atof(argv[4]), argc, argv);
    }
  }
  fprintf(stderr,
          "usage: %s --server ADDR PORT kill|cut | --client ADDR PORT "
          "BOUND_SECONDS ERRNO_NAME... | --connect ADDR PORT BOUND_SECONDS\n",
          argv[0]);
  return 2;
}
