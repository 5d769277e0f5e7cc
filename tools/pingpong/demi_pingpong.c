/* A Demikernel-style ping-pong, the loop Demikernel's own examples run:
 * push, wait for the push, pop, wait for the pop, free (client); pop, wait,
 * push the popped array back, wait, free (server). Nothing else happens per
 * iteration, so counting the client's instructions (callgrind) at two
 * iteration counts gives the library's cost per round trip
 * (tools/pingpong/count_instructions).
 *
 *   demi_pingpong --server ADDR PORT ITERATIONS [IDLE]
 *   demi_pingpong --client ADDR PORT ITERATIONS SIZE [IDLE]
 *   demi_pingpong --dgram-server ADDR PORT
 *   demi_pingpong --dgram-client ADDR PORT ITERATIONS SIZE
 *   demi_pingpong --idle-wait ADDR PORT SECONDS
 *
 * The datagram pair (SOCK_DGRAM: demi_pushto, pop, wait, free) runs the same
 * loop without a connection: the server echoes each datagram to its sender
 * (sga_addr) until a 1-byte one; the client (bound to PORT + 1) first
 * retries a hello until the server answers (datagrams sent before the
 * server binds are lost), then measures, then says goodbye.
 *
 * The client prints the median half round trip in microseconds (the cycle
 * counter read twice per iteration, outside the library, as perftest
 * does). With IDLE (the same on both
 * sides), the client first opens IDLE more connections to the server, which
 * stay open and silent while the ping-pong runs on the first one: what idle
 * connections cost a busy one (and, printed, the memory they take).
 *
 * Application memory: with DEMI_PINGPONG_MEMORY=app in the client's
 * environment, the client pushes one malloc'ed buffer (sga_buf NULL: the
 * library's region cache maps it) instead of a demi_sgaalloc buffer per
 * ping; count_instructions then counts that path.
 *
 * Sleeping waits: with DEMI_PINGPONG_PAUSE_US=N in the client's
 * environment, the client pauses N microseconds (nanosleep, outside the
 * timed interval) before each ping, so the server's wait for it outlasts
 * the spin budget (DEMI_SPIN_US) and sleeps: the half round trip then
 * includes the server's wake-up. --idle-wait connects a pair inside one
 * process, waits SECONDS on a pop nothing answers and prints the CPU time
 * the process used meanwhile (tools/pingpong/sleeping runs all three). */

#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tools/pingpong/demi_tool.h"
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

/* The process's resident and pinned memory, in KiB (/proc/self/status). */
static void memory_kib(long *rss, long *pinned) {
  char line[256];
  FILE *status = fopen("/proc/self/status", "r");
  *rss = *pinned = -1;
  if (status == NULL) return;
  while (fgets(line, sizeof(line), status) != NULL) {
    sscanf(line, "VmRSS: %ld", rss);
    sscanf(line, "VmPin: %ld", pinned);
  }
  fclose(status);
}

/* The k-th smallest of n samples (reorders them): linear on average, so
 * that counting instructions at two iteration counts leaves none of it in
 * the per-trip figure (a sort's n log n would). */
static double select_kth(double *v, long n, long k) {
  long lo = 0, hi = n - 1;
  while (lo < hi) {
    const double pivot = v[lo + (hi - lo) / 2];
    long i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot) ++i;
      while (v[j] > pivot) --j;
      if (i <= j) {
        const double t = v[i];
        v[i++] = v[j];
        v[j--] = t;
      }
    }
    if (k <= j) {
      hi = j;
    } else if (k >= i) {
      lo = i;
    } else {
      break;
    }
  }
  return v[k];
}

/* Samples are timed with the cycle counter, as perftest does: in the
 * Soft-RoCE guest clock_gettime falls back to a system call on an emulated
 * HPET (about 700 ns), which would put half a microsecond of the tool into
 * every sample. The counter's rate is calibrated once against the clock
 * (20 ms); without a usable counter, the clock. */
static double us_per_cycle = 0;

static void calibrate(void) {
#if defined(__x86_64__)
  const double start_us = monotonic_us();
  const uint64_t start_cycles = __rdtsc();
  double end_us = start_us;
  while (end_us - start_us < 20000) end_us = monotonic_us();
  const uint64_t end_cycles = __rdtsc();
  if (end_cycles > start_cycles) {
    us_per_cycle = (end_us - start_us) / (double)(end_cycles - start_cycles);
  }
#endif
}

static double now_us(void) {
#if defined(__x86_64__)
  if (us_per_cycle > 0) return (double)__rdtsc() * us_per_cycle;
#endif
  return monotonic_us();
}

static int server(const struct sockaddr_in *address, long iterations,
                  long idle) {
  int listener = -1, qd = -1;
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  int *idle_qds = calloc((size_t)idle + 1, sizeof(int));
  CHECK(idle_qds != NULL);
  listener = listen_on(address, 16);
  /* The client connects one at a time, the busy connection first. */
  for (long c = 0; c <= idle; ++c) {
    CHECK(demi_accept(&qt, listener) == 0);
    wait_for(qt, DEMI_OPC_ACCEPT, &qr);
    if (c == 0) {
      qd = qr.qr_value.ares.qd;
    } else {
      idle_qds[c - 1] = qr.qr_value.ares.qd;
    }
  }
  for (long i = 0; i < iterations; ++i) {
    demi_sgarray_t sga;
    CHECK(demi_pop(&qt, qd) == 0);
    wait_for(qt, DEMI_OPC_POP, &qr);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    CHECK(demi_push(&qt, qd, &sga) == 0);
    wait_for(qt, DEMI_OPC_PUSH, &qr);
    CHECK(demi_sgafree(&sga) == 0);
  }
  /* The client closes first; its end of stream ends the connection. */
  CHECK(demi_pop(&qt, qd) == 0);
  CHECK(demi_wait(&qr, qt, NULL) == 0);
  CHECK(demi_close(qd) == 0);
  for (long c = 0; c < idle; ++c) CHECK(demi_close(idle_qds[c]) == 0);
  free(idle_qds);
  CHECK(demi_close(listener) == 0);
  return 0;
}

static int client(const struct sockaddr_in *address, long iterations,
                  uint32_t size, long idle) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  double *samples = calloc((size_t)iterations, sizeof(double));
  int *idle_qds = calloc((size_t)idle + 1, sizeof(int));
  CHECK(samples != NULL && idle_qds != NULL);
  long rss_before, pinned_before, rss_after, pinned_after;
  const int qd = connect_to(address);
  memory_kib(&rss_before, &pinned_before);
  for (long c = 0; c < idle; ++c) idle_qds[c] = connect_to(address);
  memory_kib(&rss_after, &pinned_after);
  if (idle > 0) {
    printf(
        "demi_pingpong: %ld idle connections took %ld KiB resident (%ld "
        "KiB pinned), %ld KiB each\n",
        idle, rss_after - rss_before, pinned_after - pinned_before,
        (rss_after - rss_before) / idle);
  }
  const char *pause_text = getenv("DEMI_PINGPONG_PAUSE_US");
  const long pause_us = pause_text != NULL ? atol(pause_text) : 0;
  CHECK(pause_us >= 0);
  const struct timespec pause = {pause_us / 1000000,
                                 (pause_us % 1000000) * 1000};
  const char *memory = getenv("DEMI_PINGPONG_MEMORY");
  const int app_memory = memory != NULL && strcmp(memory, "app") == 0;
  CHECK(memory == NULL || app_memory || strcmp(memory, "lib") == 0);
  void *app_buffer = app_memory ? malloc(size) : NULL;
  CHECK(!app_memory || app_buffer != NULL);
  for (long i = 0; i < iterations; ++i) {
    if (pause_us > 0) nanosleep(&pause, NULL);
    double start = now_us();
    demi_sgarray_t sga;
    if (app_memory) {
      memset(&sga, 0, sizeof(sga));
      sga.sga_numsegs = 1;
      sga.sga_segs[0].sgaseg_buf = app_buffer;
      sga.sga_segs[0].sgaseg_len = size;
    } else {
      sga = demi_sgaalloc(size);
      CHECK(sga.sga_numsegs == 1);
    }
    memset(sga.sga_segs[0].sgaseg_buf, (int)(i & 0xff), size);
    CHECK(demi_push(&qt, qd, &sga) == 0);
    wait_for(qt, DEMI_OPC_PUSH, &qr);
    if (!app_memory) CHECK(demi_sgafree(&sga) == 0);
    CHECK(demi_pop(&qt, qd) == 0);
    wait_for(qt, DEMI_OPC_POP, &qr);
    CHECK(qr.qr_value.sga.sga_segs[0].sgaseg_len == size);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    samples[i] = (now_us() - start) / 2;
  }
  const double median = select_kth(samples, iterations, iterations / 2);
  printf(
      "demi_pingpong: %ld round trips of %u B, %ld idle connections, "
      "median half round trip %.2f us%s\n",
      iterations, size, idle, median,
      pause_us > 0 ? " (paused before each ping)" : "");
  free(samples);
  CHECK(demi_close(qd) == 0);
  free(app_buffer);
  for (long c = 0; c < idle; ++c) CHECK(demi_close(idle_qds[c]) == 0);
  free(idle_qds);
  return 0;
}

static int dgram_socket(const struct sockaddr_in *address) {
  int qd = -1;
  CHECK(demi_socket(&qd, AF_INET, SOCK_DGRAM, 0) == 0);
  CHECK(demi_bind(qd, (const struct sockaddr *)address, sizeof(*address)) == 0);
  return qd;
}

static int dgram_server(const struct sockaddr_in *address) {
  const int qd = dgram_socket(address);
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  for (;;) {
    demi_sgarray_t sga;
    CHECK(demi_pop(&qt, qd) == 0);
    wait_for(qt, DEMI_OPC_POP, &qr);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    const int last = sga.sga_segs[0].sgaseg_len == 1;
    const struct sockaddr_in to = sga.sga_addr;
    CHECK(demi_pushto(&qt, qd, &sga, (const struct sockaddr *)&to,
                      sizeof(to)) == 0);
    wait_for(qt, DEMI_OPC_PUSH, &qr);
    CHECK(demi_sgafree(&sga) == 0);
    if (last) break;
  }
  CHECK(demi_close(qd) == 0);
  return 0;
}

/* Pushes a datagram of `size` bytes (`fill`) to `to` and waits for it. */
static void push_dgram(int qd, const struct sockaddr_in *to, uint32_t size,
                       int fill) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  demi_sgarray_t sga = demi_sgaalloc(size);
  CHECK(sga.sga_numsegs == 1);
  memset(sga.sga_segs[0].sgaseg_buf, fill, size);
  CHECK(demi_pushto(&qt, qd, &sga, (const struct sockaddr *)to, sizeof(*to)) ==
        0);
  wait_for(qt, DEMI_OPC_PUSH, &qr);
  CHECK(demi_sgafree(&sga) == 0);
}

static int dgram_client(const struct sockaddr_in *server, long iterations,
                        uint32_t size) {
  struct sockaddr_in local = *server;
  local.sin_port = htons((uint16_t)(ntohs(server->sin_port) + 1));
  const int qd = dgram_socket(&local);
  double *samples = calloc((size_t)iterations, sizeof(double));
  CHECK(samples != NULL);
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  /* Hello until answered; then drain answers to earlier hellos. */
  CHECK(demi_pop(&qt, qd) == 0);
  for (int attempt = 0;; ++attempt) {
    CHECK(attempt < 200);
    push_dgram(qd, server, size, 0);
    const struct timespec wait = {0, 50 * 1000 * 1000};
    const int rc = demi_wait(&qr, qt, &wait);
    if (rc == 0) break;
    CHECK(rc == ETIMEDOUT);
  }
  for (;;) {
    CHECK(qr.qr_opcode == DEMI_OPC_POP);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    CHECK(demi_pop(&qt, qd) == 0);
    const struct timespec wait = {0, 100 * 1000 * 1000};
    const int rc = demi_wait(&qr, qt, &wait);
    if (rc == ETIMEDOUT) break; /* the pop stays pending: the first below */
    CHECK(rc == 0);
  }
  for (long i = 0; i < iterations; ++i) {
    double start = now_us();
    if (i > 0) CHECK(demi_pop(&qt, qd) == 0);
    push_dgram(qd, server, size, (int)(i & 0xff));
    wait_for(qt, DEMI_OPC_POP, &qr);
    CHECK(qr.qr_value.sga.sga_segs[0].sgaseg_len == size);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    samples[i] = (now_us() - start) / 2;
  }
  const double median = select_kth(samples, iterations, iterations / 2);
  printf(
      "demi_pingpong: %ld datagram round trips of %u B, median half round "
      "trip %.2f us\n",
      iterations, size, median);
  free(samples);
  /* Goodbye (and its echo, if it comes). */
  CHECK(demi_pop(&qt, qd) == 0);
  push_dgram(qd, server, 1, 0);
  const struct timespec wait = {0, 200 * 1000 * 1000};
  if (demi_wait(&qr, qt, &wait) == 0 && qr.qr_opcode == DEMI_OPC_POP) {
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
  }
  CHECK(demi_close(qd) == 0);
  return 0;
}

static double cpu_seconds(void) {
  struct rusage usage;
  CHECK(getrusage(RUSAGE_SELF, &usage) == 0);
  return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

/* A connection to itself, a pop nothing answers, a wait of `seconds`: the
 * CPU time the process used meanwhile. */
static int idle_wait(const struct sockaddr_in *address, long seconds) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  const int listener = listen_on(address, 4);
  demi_qtoken_t accept = 0;
  CHECK(demi_accept(&accept, listener) == 0);
  const int client_qd = connect_to(address);
  wait_for(accept, DEMI_OPC_ACCEPT, &qr);
  const int server_qd = qr.qr_value.ares.qd;
  CHECK(demi_pop(&qt, server_qd) == 0);
  const double cpu_before = cpu_seconds();
  const double start = now_us();
  const struct timespec timeout = {seconds, 0};
  CHECK(demi_wait(&qr, qt, &timeout) == ETIMEDOUT);
  const double elapsed = (now_us() - start) / 1e6;
  const double cpu = cpu_seconds() - cpu_before;
  printf(
      "demi_pingpong: idle wait of %.2f s used %.3f s of CPU (%.2f%% of a "
      "core)\n",
      elapsed, cpu, 100 * cpu / elapsed);
  CHECK(demi_close(client_qd) == 0);
  CHECK(demi_close(server_qd) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

int main(int argc, char *const argv[]) {
  calibrate();
  struct sockaddr_in address;
  long iterations = 0, idle = 0;
  const char *mode = argc > 1 ? argv[1] : "";
  const int is_client = strcmp(mode, "--client") == 0;
  const int dgram_server_mode = strcmp(mode, "--dgram-server") == 0;
  const int dgram_client_mode = strcmp(mode, "--dgram-client") == 0;
  if (strcmp(mode, "--idle-wait") == 0 && argc >= 5) {
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)atoi(argv[3]));
    CHECK(inet_pton(AF_INET, argv[2], &address.sin_addr) == 1);
    CHECK(demi_init(NULL) == 0);
    return idle_wait(&address, atol(argv[4]));
  }
  if ((dgram_server_mode && argc < 4) || (dgram_client_mode && argc < 6) ||
      (!dgram_server_mode && !dgram_client_mode &&
       (argc < 5 || (is_client && argc < 6)))) {
    fprintf(stderr,
            "usage: %s --server ADDR PORT ITERATIONS [IDLE]\n"
            "       %s --client ADDR PORT ITERATIONS SIZE [IDLE]\n"
            "       %s --dgram-server ADDR PORT\n"
            "       %s --dgram-client ADDR PORT ITERATIONS SIZE\n"
            "       %s --idle-wait ADDR PORT SECONDS\n",
            argv[0], argv[0], argv[0], argv[0], argv[0]);
    return 2;
  }
  memset(&address, 0, sizeof(address));
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)atoi(argv[3]));
  CHECK(inet_pton(AF_INET, argv[2], &address.sin_addr) == 1);
  if (!dgram_server_mode) {
    iterations = atol(argv[4]);
    CHECK(iterations > 0);
  }
  if (!dgram_server_mode && !dgram_client_mode && argc > 5 + is_client) {
    idle = atol(argv[5 + is_client]);
  }
  CHECK(idle >= 0);
  {
    const struct demi_args args = {
        .argc = argc, .argv = argv, .callback = NULL};
    CHECK(demi_init(&args) == 0);
  }
  if (dgram_server_mode) return dgram_server(&address);
  if (dgram_client_mode) {
    return dgram_client(&address, iterations, (uint32_t)atoi(argv[5]));
  }
  if (!is_client) return server(&address, iterations, idle);
  return client(&address, iterations, (uint32_t)atoi(argv[5]), idle);
}
