/* Message rate of several threads, each driving its own connection: what
 * the library's per-thread workers buy (libos/worker.h).
 *
 *   demi_rate --server ADDR PORT THREADS MESSAGES SIZE [shared]
 *   demi_rate --client ADDR PORT THREADS MESSAGES SIZE [shared]
 *
 * Thread t uses port PORT + t. A client thread keeps up to 32 pushes of
 * SIZE bytes in flight (demi_wait_any) until MESSAGES went out, then waits
 * for the server's 1-byte answer that all arrived; a server thread keeps
 * 32 pops posted, frees each message, and answers after MESSAGES. Each
 * thread opens its own queues, so they land in its own worker; with
 * `shared` the main thread opens them all first (one worker: every thread
 * takes the same lock, as before workers existed). The client prints each
 * thread's rate and the combined rate (all messages over the time from the
 * first thread's start to the last one's end). */

#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/pingpong/demi_tool.h"

enum { kWindow = 32, kMaxThreads = 16 };

struct job {
  struct sockaddr_in address;
  long messages;
  uint32_t size;
  int qd;       /* opened by the main thread (shared), else -1 */
  double start; /* seconds */
  double end;
};

static pthread_barrier_t ready;

static int accept_on(const struct sockaddr_in *address) {
  const int listener = listen_on(address, 4);
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  CHECK(demi_accept(&qt, listener) == 0);
  wait_for(qt, DEMI_OPC_ACCEPT, &qr);
  return qr.qr_value.ares.qd; /* the listener stays open until exit */
}

static void *serve(void *arg) {
  struct job *job = arg;
  const int qd = job->qd >= 0 ? job->qd : accept_on(&job->address);
  demi_qtoken_t pops[kWindow];
  demi_qresult_t qr;
  const long posted = job->messages < kWindow ? job->messages : kWindow;
  for (long i = 0; i < posted; ++i) CHECK(demi_pop(&pops[i], qd) == 0);
  long received = 0, total_posted = posted, outstanding = posted;
  while (received < job->messages) {
    int index = -1;
    CHECK(demi_wait_any(&qr, &index, pops, (int)outstanding, NULL) == 0);
    CHECK(qr.qr_opcode == DEMI_OPC_POP);
    CHECK(qr.qr_value.sga.sga_segs[0].sgaseg_len == job->size);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    ++received;
    if (total_posted < job->messages) {
      CHECK(demi_pop(&pops[index], qd) == 0);
      ++total_posted;
    } else {
      pops[index] = pops[--outstanding];
    }
  }
  demi_sgarray_t done = demi_sgaalloc(1);
  CHECK(done.sga_numsegs == 1);
  demi_qtoken_t qt = 0;
  CHECK(demi_push(&qt, qd, &done) == 0);
  wait_for(qt, DEMI_OPC_PUSH, &qr);
  CHECK(demi_sgafree(&done) == 0);
  /* The client closes first. */
  CHECK(demi_pop(&qt, qd) == 0);
  CHECK(demi_wait(&qr, qt, NULL) == 0);
  CHECK(demi_close(qd) == 0);
  return NULL;
}

static void *drive(void *arg) {
  struct job *job = arg;
  const int qd = job->qd >= 0 ? job->qd : connect_to(&job->address);
  demi_sgarray_t sga = demi_sgaalloc(job->size);
  CHECK(sga.sga_numsegs == 1);
  memset(sga.sga_segs[0].sgaseg_buf, 0x5a, job->size);
  demi_qtoken_t pushes[kWindow];
  demi_qresult_t qr;
  int outstanding = 0;
  pthread_barrier_wait(&ready);
  job->start = monotonic_us() / 1e6;
  for (long sent = 0; sent < job->messages; ++sent) {
    if (outstanding == kWindow) {
      int index = -1;
      CHECK(demi_wait_any(&qr, &index, pushes, outstanding, NULL) == 0);
      CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
      pushes[index] = pushes[--outstanding];
    }
    CHECK(demi_push(&pushes[outstanding++], qd, &sga) == 0);
  }
  while (outstanding > 0) {
    int index = -1;
    CHECK(demi_wait_any(&qr, &index, pushes, outstanding, NULL) == 0);
    CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
    pushes[index] = pushes[--outstanding];
  }
  demi_qtoken_t qt = 0;
  CHECK(demi_pop(&qt, qd) == 0);
  wait_for(qt, DEMI_OPC_POP, &qr); /* every message arrived */
  job->end = monotonic_us() / 1e6;
  CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
  CHECK(demi_sgafree(&sga) == 0);
  CHECK(demi_close(qd) == 0);
  return NULL;
}

int main(int argc, char **argv) {
  const int is_server = argc >= 7 && strcmp(argv[1], "--server") == 0;
  const int is_client = argc >= 7 && strcmp(argv[1], "--client") == 0;
  if (!is_server && !is_client) {
    fprintf(stderr,
            "usage: demi_rate --server ADDR PORT THREADS MESSAGES SIZE "
            "[shared]\n"
            "       demi_rate --client ADDR PORT THREADS MESSAGES SIZE "
            "[shared]\n");
    return 2;
  }
  const int threads = atoi(argv[4]);
  const long messages = atol(argv[5]);
  const uint32_t size = (uint32_t)atol(argv[6]);
  const int shared = argc > 7 && strcmp(argv[7], "shared") == 0;
  CHECK(threads >= 1 && threads <= kMaxThreads && messages > 0 && size > 0);
  CHECK(demi_init(NULL) == 0);
  struct job jobs[kMaxThreads];
  pthread_t ids[kMaxThreads];
  for (int t = 0; t < threads; ++t) {
    memset(&jobs[t], 0, sizeof(jobs[t]));
    jobs[t].address.sin_family = AF_INET;
    CHECK(inet_pton(AF_INET, argv[2], &jobs[t].address.sin_addr) == 1);
    jobs[t].address.sin_port = htons((uint16_t)(atoi(argv[3]) + t));
    jobs[t].messages = messages;
    jobs[t].size = size;
    jobs[t].qd = -1;
  }
  if (shared) { /* the main thread opens every queue: one worker */
    for (int t = 0; t < threads; ++t) {
      jobs[t].qd = is_client ? connect_to(&jobs[t].address)
                             : accept_on(&jobs[t].address);
    }
  }
  CHECK(pthread_barrier_init(&ready, NULL, (unsigned)threads) == 0);
  for (int t = 0; t < threads; ++t) {
    CHECK(pthread_create(&ids[t], NULL, is_client ? drive : serve, &jobs[t]) ==
          0);
  }
  for (int t = 0; t < threads; ++t) CHECK(pthread_join(ids[t], NULL) == 0);
  if (is_client) {
    double first = jobs[0].start, last = jobs[0].end;
    for (int t = 0; t < threads; ++t) {
      printf("demi_rate: thread %d: %.3f M messages/s\n", t,
             (double)messages / (jobs[t].end - jobs[t].start) / 1e6);
      if (jobs[t].start < first) first = jobs[t].start;
      if (jobs[t].end > last) last = jobs[t].end;
    }
    printf(
        "demi_rate: %d threads (%s), %ld messages of %u B each: combined "
        "%.3f M messages/s\n",
        threads, shared ? "one worker" : "a worker each", messages, size,
        (double)messages * threads / (last - first) / 1e6);
  }
  return 0;
}
