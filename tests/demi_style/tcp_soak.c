/* A soak of one connection, for the wire and its faults: the client keeps a
 * window of pushes in flight, of mixed sizes (80% small, 19% eager, 1% by
 * rendezvous), and checks every byte of every echo, in order; the server is
 * Demikernel's echo (it pushes back the array it popped, waits for the push,
 * frees it). After the stream, a 64 B ping-pong in Demikernel's style
 * measures the half round trip. A wait that sees no progress for the stall
 * limit fails the run, naming what it waited for, instead of hanging.
 *
 *   tcp_soak                                  both roles here (a short run)
 *   tcp_soak --server ADDR PORT               one connection, then exit
 *   tcp_soak --client ADDR PORT MESSAGES [WINDOW]
 *
 * The client retries its connect for up to 60 s (the server's host may
 * still be booting). DEMI_SOAK_STALL_S (default 120) is the stall limit.
 * The last line of the client is a summary: messages, bytes each way,
 * seconds, rate, and the ping-pong's median and 99th percentile. */

#define _POSIX_C_SOURCE 200809L

#include "common.h"

#define MAX_WINDOW 64
#define PINGS 1000

static struct sockaddr_in address;
static double stall_limit = 120.0;

/* The client closes with SO_LINGER and exits at once: without it, its end
 * of stream could be lost on the wire and never retransmitted (the queue
 * pair goes with the process). The server requires the end of stream. */
static const struct linger close_linger = {1, 30};

/* splitmix64: the size of each message, from its index alone (the client
 * knows what each echo must be without keeping it). */
static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint32_t message_size(uint64_t index) {
  const uint64_t r = mix(index);
  const uint32_t pick = (uint32_t)(r % 1000);
  const uint64_t rest = r >> 10;
  if (pick < 10) return 8193 + (uint32_t)(rest % (65536 - 8192)); /* rndv */
  if (pick < 200) return 257 + (uint32_t)(rest % (8192 - 256));   /* eager */
  return 1 + (uint32_t)(rest % 256);                              /* small */
}

/* demi_wait_any over `qts`, giving up (exit 1) after the stall limit
 * without a result; `what` names the wait in the failure. */
static int wait_any_or_fail(demi_qresult_t *qr, const demi_qtoken_t *qts,
                            int count, const char *what, uint64_t index) {
  const struct timespec second = {1, 0};
  double waited = 0;
  for (;;) {
    int offset = -1;
    int rc = demi_wait_any(qr, &offset, qts, count, &second);
    if (rc == 0) {
      if (qr->qr_opcode == DEMI_OPC_FAILED) {
        fprintf(stderr, "tcp_soak: %s (%llu) failed: %s\n", what,
                (unsigned long long)index, strerror((int)qr->qr_ret));
      }
      return offset;
    }
    CHECK(rc == ETIMEDOUT);
    waited += 1.0;
    if (waited >= stall_limit) {
      fprintf(stderr,
              "tcp_soak: no progress for %.0f s waiting for %s (%llu)\n",
              waited, what, (unsigned long long)index);
      exit(1);
    }
  }
}

static int server(int argc, char *const argv[]) {
  unsigned long long messages = 0, bytes = 0;
  int listener, qd;
  init_demi(argc, argv);
  listener = listen_on(&address);
  ready();
  qd = accept_wait(listener);
  for (;;) {
    demi_qresult_t qr;
    demi_sgarray_t sga;
    demi_qtoken_t qt = 0;
    CHECK(demi_pop(&qt, qd) == 0);
    wait_any_or_fail(&qr, &qt, 1, "a message", messages);
    CHECK(qr.qr_opcode == DEMI_OPC_POP);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    if (sga.sga_numsegs == 0) break; /* the client closed */
    for (uint32_t s = 0; s < sga.sga_numsegs; ++s) {
      bytes += sga.sga_segs[s].sgaseg_len;
    }
    CHECK(demi_push(&qt, qd, &sga) == 0); /* the popped array itself */
    wait_any_or_fail(&qr, &qt, 1, "the echo's push", messages);
    CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
    CHECK(demi_sgafree(&sga) == 0);
    ++messages;
  }
  printf("tcp_soak: server echoed %llu messages, %llu bytes\n", messages,
         bytes);
  CHECK(demi_close(qd) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

static int compare_doubles(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The stream: `messages` pushes, at most `window` not yet echoed. */
static void stream(int qd, uint64_t messages, uint32_t window,
                   unsigned long long *bytes) {
  demi_qtoken_t qts[1 + MAX_WINDOW]; /* [0]: the pop; then the pushes */
  demi_sgarray_t pushed[MAX_WINDOW];
  uint64_t next_push = 0, next_echo = 0;
  int pushes = 0; /* in qts[1..pushes] */
  CHECK(demi_pop(&qts[0], qd) == 0);
  while (next_echo < messages) {
    demi_qresult_t qr;
    int offset;
    while (next_push < messages && next_push - next_echo < window &&
           pushes < MAX_WINDOW) {
      const uint32_t size = message_size(next_push);
      pushed[pushes] = pattern_array(size, next_push);
      CHECK(demi_push(&qts[1 + pushes], qd, &pushed[pushes]) == 0);
      ++pushes;
      ++next_push;
      *bytes += size;
    }
    offset =
        wait_any_or_fail(&qr, qts, 1 + pushes, "an echo or a push", next_echo);
    if (offset == 0) {
      CHECK(qr.qr_opcode == DEMI_OPC_POP);
      CHECK(qr.qr_value.sga.sga_numsegs > 0); /* no end of stream yet */
      check_message(&qr.qr_value.sga, message_size(next_echo), next_echo);
      CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
      if (++next_echo < messages) CHECK(demi_pop(&qts[0], qd) == 0);
    } else {
      CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
      CHECK(demi_sgafree(&pushed[offset - 1]) == 0);
      /* The last push fills the hole. */
      --pushes;
      qts[offset] = qts[1 + pushes];
      pushed[offset - 1] = pushed[pushes];
    }
  }
  /* Every echo is in, so every push is done: take them. */
  while (pushes > 0) {
    demi_qresult_t qr;
    wait_any_or_fail(&qr, &qts[pushes], 1, "a push", next_push);
    CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
    CHECK(demi_sgafree(&pushed[--pushes]) == 0);
  }
}

/* Demikernel-style 64 B ping-pong; fills half round trips in us. */
static void ping_pong(int qd, uint64_t first_index, double *half) {
  for (int i = 0; i < PINGS; ++i) {
    const uint64_t index = first_index + (uint64_t)i;
    demi_sgarray_t sga = pattern_array(64, index);
    demi_qresult_t qr;
    demi_qtoken_t qt = 0;
    const double start = now_seconds();
    CHECK(demi_push(&qt, qd, &sga) == 0);
    wait_any_or_fail(&qr, &qt, 1, "a ping's push", index);
    CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
    CHECK(demi_pop(&qt, qd) == 0);
    wait_any_or_fail(&qr, &qt, 1, "a pong", index);
    CHECK(qr.qr_opcode == DEMI_OPC_POP);
    half[i] = (now_seconds() - start) * 1e6 / 2;
    check_message(&qr.qr_value.sga, 64, index);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    CHECK(demi_sgafree(&sga) == 0);
  }
  qsort(half, PINGS, sizeof(half[0]), compare_doubles);
}

static int client_run(uint64_t messages, uint32_t window, int argc,
                      char *const argv[]) {
  static double half[PINGS];
  unsigned long long bytes = 0;
  double start, seconds;
  int qd;
  init_demi(argc, argv);
  qd = connect_retrying(&address);
  start = now_seconds();
  stream(qd, messages, window, &bytes);
  seconds = now_seconds() - start;
  ping_pong(qd, messages, half);
  CHECK(demi_setsockopt(qd, SOL_SOCKET, SO_LINGER, &close_linger,
                        sizeof(close_linger)) == 0);
  CHECK(demi_close(qd) == 0); /* returns once the end of stream is acked */
  printf(
      "tcp_soak: %llu messages (%llu bytes each way) echoed and checked in "
      "order in %.1f s: %.0f messages/s, %.2f MB/s; 64 B half round trip "
      "median %.1f us, p99 %.1f us\n",
      (unsigned long long)messages, bytes, seconds, (double)messages / seconds,
      (double)bytes / seconds / 1e6, half[PINGS / 2], half[PINGS * 99 / 100]);
  return 0;
}

static int client(int argc, char *const argv[]) {
  return client_run(5000, 16, argc, argv);
}

int main(int argc, char *const argv[]) {
  const char *stall = getenv("DEMI_SOAK_STALL_S");
  if (stall != NULL) stall_limit = atof(stall);
  if (argc >= 4) {
    build_address(argv[2], argv[3], &address);
    if (strcmp(argv[1], "--server") == 0 && argc == 4) {
      return server(argc, argv);
    }
    if (strcmp(argv[1], "--client") == 0 && (argc == 5 || argc == 6)) {
      const uint64_t messages = strtoull(argv[4], NULL, 10);
      const uint32_t window = argc == 6 ? (uint32_t)atoi(argv[5]) : 16;
      CHECK(messages > 0 && window > 0 && window <= MAX_WINDOW);
      return client_run(messages, window, argc, argv);
    }
  }
  if (argc != 1) {
    fprintf(stderr,
            "usage: %s [--server ADDR PORT | --client ADDR PORT MESSAGES "
            "[WINDOW]]\n",
            argv[0]);
    return 2;
  }
  address = test_address(0);
  return run_server_and_client(server, client, argc, argv);
}
