/* A UDP echo server and its client, Demikernel style: the server answers
 * each datagram by pushing the array it popped back to the array's sga_addr
 * (demi_pushto, zero copy); the client checks every byte of every answer,
 * for sizes from 1 B to the largest datagram the device carries. A datagram
 * lost on the way (unreliable datagrams may be) is sent again. See common.h
 * for how it runs. */

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

int main(int argc, char *const argv[]) {
  pid_t server_pid;
  int ok;
  if (argc >= 4) {
    build_address(argv[2], argv[3], &address);
    if (strcmp(argv[1], "--server") == 0) return server(argc, argv);
    if (strcmp(argv[1], "--client") == 0) return client(argc, argv);
  }
  if (argc != 1) {
    fprintf(stderr, "usage: %s [--server|--client ADDR PORT]\n", argv[0]);
    return 2;
  }
  address = test_address(2);
  server_pid = start_role(server, argc, argv);
  ok = client(argc, argv) == 0;
  ok = role_succeeded(server_pid, "server") && ok;
  return ok ? 0 : 1;
}
