/* A UDP echo server and its clients, Demikernel style: the server answers
 * each datagram by pushing the array it popped back to the array's sga_addr
 * (demi_pushto, zero copy); the client checks every byte of every answer,
 * for sizes from 1 B to the largest datagram the device carries. A datagram
 * lost on the way (unreliable datagrams may be) is sent again. See common.h
 * for how it runs.
 *
 * The soak client (--soak-client ADDR PORT COUNT MAX_LOST_PERCENT, for
 * datagrams under loss on the wire: tools/softroce/faults) does not resend:
 * it sends COUNT datagrams of mixed sizes in bursts of SOAK_BURST, each with
 * its sequence number in its first 8 bytes and that number's pattern after
 * them, checks every answer byte for byte and counts what never came back.
 * Nothing may block on a loss: a burst waits for its answers at most
 * SOAK_PATIENCE_MS after the last one arrived, then the next burst goes; an
 * answer arriving later still counts (late). Fails if more than
 * MAX_LOST_PERCENT of the datagrams were lost, or on any wrong byte.
 * Before the soak it exchanges one warm-up datagram, resent each second until
 * answered: the first datagram each way waits for its route (rdma_cm asks the
 * peer for its queue pair number; when loss takes that request or its answer,
 * the kernel asks again only after 4 s), and the soak measures datagrams
 * lost, not that wait. */

#define _POSIX_C_SOURCE 200809L

#include <demi/stats.h>

#include "common.h"

#define MESSAGES 600
/* The client tells the server to stop with this (a size no message has). */
static const char quit[] = "demi-style-quit";
#define QUIT_SIZE (sizeof(quit) - 1)

static struct sockaddr_in address;

static int is_quit(const demi_sgarray_t *sga) {
  return sga->sga_numsegs == 1 && sga->sga_segs[0].sgaseg_len == QUIT_SIZE &&
         memcmp(sga->sga_segs[0].sgaseg_buf, quit, QUIT_SIZE) == 0;
}

static int bound_socket(const struct sockaddr_in *local) {
  int qd = -1;
  CHECK(demi_socket(&qd, AF_INET, SOCK_DGRAM, 0) == 0);
  CHECK(demi_bind(qd, (const struct sockaddr *)local, sizeof(*local)) == 0);
  return qd;
}

static int server(int argc, char *const argv[]) {
  unsigned long long answered = 0, bytes = 0;
  int qd;
  init_demi(argc, argv);
  qd = bound_socket(&address);
  ready();
  for (;;) {
    const struct timespec idle = {60, 0};
    demi_qtoken_t qt = 0;
    demi_qresult_t qr;
    demi_sgarray_t sga;
    struct sockaddr_in source;
    CHECK(demi_pop(&qt, qd) == 0);
    CHECK(demi_wait(&qr, qt, &idle) == 0); /* a minute of silence: fail */
    CHECK(qr.qr_opcode == DEMI_OPC_POP);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    if (is_quit(&sga)) {
      CHECK(demi_sgafree(&sga) == 0);
      break;
    }
    memcpy(&source, &sga.sga_addr, sizeof(source));
    CHECK(demi_pushto(&qt, qd, &sga, (const struct sockaddr *)&source,
                      sizeof(source)) == 0);
    CHECK(demi_wait(&qr, qt, NULL) == 0);
    if (qr.qr_opcode != DEMI_OPC_PUSH) {
      fprintf(stderr, "udp_echo: answer %llu failed: %s\n", answered + 1,
              strerror(qr.qr_ret));
    }
    CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
    CHECK(demi_sgafree(&sga) == 0);
    ++answered;
    bytes += sga.sga_segs[0].sgaseg_len;
  }
  printf("udp_echo: server answered %llu datagrams, %llu bytes, zero-copy\n",
         answered, bytes);
  CHECK(demi_close(qd) == 0);
  return 0;
}

static void send_to_server(int qd, const demi_sgarray_t *sga) {
  demi_qtoken_t qt = 0;
  demi_qresult_t qr;
  CHECK(demi_pushto(&qt, qd, sga, (const struct sockaddr *)&address,
                    sizeof(address)) == 0);
  wait_for(&qr, qt);
  CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
}

static int client(int argc, char *const argv[]) {
  struct sockaddr_in local = address;
  demi_dgram_stats_t stats;
  unsigned long long resent = 0, stale = 0;
  uint32_t max;
  int qd;
  init_demi(argc, argv);
  local.sin_port = htons((uint16_t)(ntohs(address.sin_port) + 1));
  qd = bound_socket(&local);
  CHECK(demi_dgram_stats(&stats) == 0);
  max = stats.max_payload;
  CHECK(max > QUIT_SIZE);
  for (uint64_t i = 0; i < MESSAGES; ++i) {
    /* 1, 2, ... 64 B, then steps up to the largest; never QUIT_SIZE. */
    uint32_t size =
        i < 64 ? (uint32_t)i + 1 : 64 + (uint32_t)(i * 37) % (max - 63);
    demi_sgarray_t sga;
    demi_qtoken_t qt = 0;
    int answered = 0;
    if (size == QUIT_SIZE) ++size;
    sga = pattern_array(size, i);
    send_to_server(qd, &sga);
    CHECK(demi_pop(&qt, qd) == 0);
    while (!answered) {
      const struct timespec patience = {1, 0};
      demi_qresult_t qr;
      int rc = demi_wait(&qr, qt, &patience);
      if (rc == ETIMEDOUT) { /* lost: send it again; the pop stays */
        CHECK(++resent < 100);
        send_to_server(qd, &sga);
        continue;
      }
      CHECK(rc == 0);
      CHECK(qr.qr_opcode == DEMI_OPC_POP);
      if (qr.qr_value.sga.sga_segs[0].sgaseg_len == size &&
          *(const uint8_t *)qr.qr_value.sga.sga_segs[0].sgaseg_buf ==
              pattern_byte(i, 0)) {
        check_message(&qr.qr_value.sga, size, i);
        answered = 1;
      } else {
        CHECK(resent > 0); /* only a copy sent again answers twice */
        ++stale;
        CHECK(demi_pop(&qt, qd) == 0);
      }
      CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    }
    CHECK(demi_sgafree(&sga) == 0);
  }
  {
    demi_sgarray_t stop = demi_sgaalloc(QUIT_SIZE);
    CHECK(stop.sga_numsegs == 1);
    memcpy(stop.sga_segs[0].sgaseg_buf, quit, QUIT_SIZE);
    for (int copy = 0; copy < 3; ++copy) send_to_server(qd, &stop);
    CHECK(demi_sgafree(&stop) == 0);
  }
  printf(
      "udp_echo: client checked %d answers (largest %u B), %llu resent, "
      "%llu stale\n",
      MESSAGES, max, resent, stale);
  CHECK(demi_close(qd) == 0);
  return 0;
}

#define SOAK_BURST 16
#define SOAK_PATIENCE_MS 50

/* The size of soak datagram `index`: 4 in 5 between 8 and 256 B, the rest
 * up to `max`; at least 8 (the sequence number) and never QUIT_SIZE. */
static uint32_t soak_size(uint64_t index, uint32_t max) {
  uint32_t size = index % 5 != 0 ? 8 + (uint32_t)(index * 131u) % 249u
                                 : 8 + (uint32_t)(index * 37u) % (max - 7);
  return size == QUIT_SIZE ? size + 1 : size;
}

/* The sequence number of the warm-up datagram (no soak datagram has it). */
#define SOAK_WARM_UP UINT64_MAX

/* The sequence number in the first 8 bytes of a popped answer. */
static uint64_t soak_index(const demi_sgarray_t *sga) {
  uint64_t index;
  CHECK(sga->sga_numsegs == 1 && sga->sga_segs[0].sgaseg_len >= sizeof(index));
  memcpy(&index, sga->sga_segs[0].sgaseg_buf, sizeof(index));
  return index;
}

/* Exchanges the warm-up datagram with the server, resending it each second
 * (at most 60 times) until an answer comes back: then both hosts have their
 * route to the other. Leaves a pop pending in *pop; returns the number of
 * times it was sent. */
static int soak_warm_up(int qd, demi_qtoken_t *pop) {
  demi_sgarray_t sga = demi_sgaalloc(sizeof(uint64_t));
  const uint64_t index = SOAK_WARM_UP;
  int answered = 0, attempt = 0;
  CHECK(sga.sga_numsegs == 1);
  memcpy(sga.sga_segs[0].sgaseg_buf, &index, sizeof(index));
  for (; !answered; ++attempt) {
    const struct timespec patience = {1, 0};
    demi_qresult_t qr;
    int rc;
    CHECK(attempt < 60);
    send_to_server(qd, &sga);
    rc = demi_wait(&qr, *pop, &patience);
    if (rc == ETIMEDOUT) continue;
    CHECK(rc == 0 && qr.qr_opcode == DEMI_OPC_POP);
    answered = soak_index(&qr.qr_value.sga) == SOAK_WARM_UP;
    CHECK(answered);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    CHECK(demi_pop(pop, qd) == 0);
  }
  CHECK(demi_sgafree(&sga) == 0);
  return attempt;
}

/* Checks one popped answer of the soak; returns its sequence number. */
static uint64_t check_soak_answer(const demi_sgarray_t *sga, uint64_t sent,
                                  uint32_t max) {
  const demi_sgaseg_t *segment = &sga->sga_segs[0];
  const uint64_t index = soak_index(sga);
  CHECK(index < sent); /* an answer to something sent */
  CHECK(segment->sgaseg_len == soak_size(index, max));
  CHECK(has_pattern((const uint8_t *)segment->sgaseg_buf + sizeof(index),
                    segment->sgaseg_len - sizeof(index), index, 0));
  return index;
}

static int soak_client(int argc, char *const argv[], uint64_t count,
                       double max_lost_percent) {
  struct sockaddr_in local = address;
  const char *own = getenv("DEMI_RDMA_ADDR");
  demi_dgram_stats_t stats;
  unsigned long long answered = 0, late = 0, duplicated = 0;
  uint8_t *seen = calloc(count, 1);
  demi_qtoken_t pop = 0;
  double started, lost_percent;
  uint32_t max;
  int qd, warm_up_sends;
  CHECK(seen != NULL);
  init_demi(argc, argv);
  /* This host's address (another host's, across a wire), the next port. */
  if (own != NULL) CHECK(inet_pton(AF_INET, own, &local.sin_addr) == 1);
  local.sin_port = htons((uint16_t)(ntohs(address.sin_port) + 1));
  qd = bound_socket(&local);
  CHECK(demi_dgram_stats(&stats) == 0);
  max = stats.max_payload;
  CHECK(max > QUIT_SIZE && max > 16);
  CHECK(demi_pop(&pop, qd) == 0);
  warm_up_sends = soak_warm_up(qd, &pop);
  started = now_seconds();
  for (uint64_t first = 0; first < count; first += SOAK_BURST) {
    const uint64_t end =
        first + SOAK_BURST < count ? first + SOAK_BURST : count;
    uint64_t waiting = end - first;
    for (uint64_t i = first; i < end; ++i) {
      const uint32_t size = soak_size(i, max);
      demi_sgarray_t sga = demi_sgaalloc(size);
      uint8_t *data = (uint8_t *)sga.sga_segs[0].sgaseg_buf;
      CHECK(sga.sga_numsegs == 1);
      memcpy(data, &i, sizeof(i));
      fill_pattern(data + sizeof(i), size - sizeof(i), i, 0);
      send_to_server(qd, &sga);
      CHECK(demi_sgafree(&sga) == 0);
    }
    while (waiting > 0) {
      const struct timespec patience = {0, SOAK_PATIENCE_MS * 1000000L};
      demi_qresult_t qr;
      uint64_t index;
      int rc = demi_wait(&qr, pop, &patience);
      if (rc == ETIMEDOUT) break; /* the rest of the burst is lost */
      CHECK(rc == 0);
      CHECK(qr.qr_opcode == DEMI_OPC_POP);
      if (soak_index(&qr.qr_value.sga) == SOAK_WARM_UP) {
        /* A resent warm-up's answer, after the first one. */
        CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
        CHECK(demi_pop(&pop, qd) == 0);
        continue;
      }
      index = check_soak_answer(&qr.qr_value.sga, end, max);
      CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
      CHECK(demi_pop(&pop, qd) == 0);
      if (seen[index]) {
        ++duplicated; /* the wire duplicated it (netem duplicate) */
        continue;
      }
      seen[index] = 1;
      ++answered;
      if (index < first) {
        ++late;
      } else {
        --waiting;
      }
    }
  }
  {
    demi_sgarray_t stop = demi_sgaalloc(QUIT_SIZE);
    CHECK(stop.sga_numsegs == 1);
    memcpy(stop.sga_segs[0].sgaseg_buf, quit, QUIT_SIZE);
    /* Eight copies: under 10% loss all of them lost is 1 in 10^8. */
    for (int copy = 0; copy < 8; ++copy) send_to_server(qd, &stop);
    CHECK(demi_sgafree(&stop) == 0);
  }
  CHECK(demi_dgram_stats(&stats) == 0);
  lost_percent = 100.0 * (double)(count - answered) / (double)count;
  printf(
      "udp_echo: soak of %llu datagrams (8 B to %u B) in %.1f s: %llu "
      "answered and checked, %llu lost (%.2f%%, at most %.1f%% allowed), %llu "
      "late, %llu duplicated; library: %llu sent, %llu received, receive "
      "queue empty %llu times; warm-up sent %d times\n",
      (unsigned long long)count, max, now_seconds() - started, answered,
      (unsigned long long)(count - answered), lost_percent, max_lost_percent,
      late, duplicated, (unsigned long long)stats.sent,
      (unsigned long long)stats.received,
      (unsigned long long)stats.receive_queue_empty, warm_up_sends);
  free(seen);
  CHECK(lost_percent <= max_lost_percent);
  CHECK(demi_close(qd) == 0);
  return 0;
}

int main(int argc, char *const argv[]) {
  if (argc >= 4) {
    build_address(argv[2], argv[3], &address);
    if (strcmp(argv[1], "--server") == 0) return server(argc, argv);
    if (strcmp(argv[1], "--client") == 0) return client(argc, argv);
    if (strcmp(argv[1], "--soak-client") == 0 && argc >= 6) {
      return soak_client(argc, argv, strtoull(argv[4], NULL, 10),
                         strtod(argv[5], NULL));
    }
  }
  if (argc != 1) {
    fprintf(stderr,
            "usage: %s [--server|--client ADDR PORT | --soak-client ADDR "
            "PORT COUNT MAX_LOST_PERCENT]\n",
            argv[0]);
    return 2;
  }
  address = test_address(2);
  return run_server_and_client(server, client, argc, argv);
}
