/* A relay, Demikernel style: a source pushes messages of 1 B to 64 MiB to
 * the relay, which pushes every array it pops onto its connection to a sink
 * (zero copy: the popped receive buffer, or the buffer a large message was
 * pulled into, is what the sink reads) and frees it once that push is done;
 * the sink checks every byte, in order. The source's close travels on: the
 * relay closes its side when it pops the end of stream. Three processes; see
 * common.h for how it runs (roles: --source, --relay, --sink ADDR PORT, the
 * relay's PORT + 1 being the sink's). */

#define _POSIX_C_SOURCE 200809L

#include "common.h"

static const uint32_t sizes[] = {
    1,    64,     1000,     8192, 8193,      65536,     2,
    4096, 100000, 1u << 20, 5000, 16u << 20, 64u << 20,
};
#define NUM_SIZES (sizeof(sizes) / sizeof(sizes[0]))
#define MESSAGES 120

static uint32_t size_of(uint64_t i) {
  uint32_t size = sizes[i % NUM_SIZES];
  return (i >= NUM_SIZES && size >= (16u << 20)) ? 700 : size;
}

static struct sockaddr_in relay_address, sink_address;

static int sink(int argc, char *const argv[]) {
  unsigned long long bytes = 0;
  uint64_t index = 0;
  int listener, qd;
  init_demi(argc, argv);
  listener = listen_on(&sink_address);
  ready();
  qd = accept_wait(listener);
  for (;;) {
    demi_qresult_t qr;
    pop_wait(qd, &qr);
    if (qr.qr_value.sga.sga_numsegs == 0) break; /* the relay closed */
    CHECK(index < MESSAGES);
    check_message(&qr.qr_value.sga, size_of(index), index);
    bytes += size_of(index);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    ++index;
  }
  CHECK(index == MESSAGES);
  printf("tcp_relay: sink checked %llu messages, %llu bytes, in order\n",
         (unsigned long long)index, bytes);
  CHECK(demi_close(qd) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

static int relay(int argc, char *const argv[]) {
  unsigned long long messages = 0, bytes = 0;
  int listener, in, out;
  init_demi(argc, argv);
  out = connect_to(&sink_address);
  listener = listen_on(&relay_address);
  ready();
  in = accept_wait(listener);
  for (;;) {
    demi_qresult_t qr;
    demi_sgarray_t sga;
    pop_wait(in, &qr);
    memcpy(&sga, &qr.qr_value.sga, sizeof(sga));
    if (sga.sga_numsegs == 0) break;
    for (uint32_t s = 0; s < sga.sga_numsegs; ++s) {
      bytes += sga.sga_segs[s].sgaseg_len;
    }
    push_wait(out, &sga); /* popped from `in`, pushed on `out` */
    CHECK(demi_sgafree(&sga) == 0);
    ++messages;
  }
  printf("tcp_relay: relay forwarded %llu messages, %llu bytes, zero-copy\n",
         messages, bytes);
  CHECK(demi_close(in) == 0);
  CHECK(demi_close(out) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

static int source(int argc, char *const argv[]) {
  int qd;
  init_demi(argc, argv);
  qd = connect_to(&relay_address);
  for (uint64_t i = 0; i < MESSAGES; ++i) {
    demi_sgarray_t sga = pattern_array(size_of(i), i);
    push_wait(qd, &sga);
    CHECK(demi_sgafree(&sga) == 0);
  }
  CHECK(demi_close(qd) == 0);
  return 0;
}

int main(int argc, char *const argv[]) {
  pid_t sink_pid, relay_pid;
  int ok;
  if (argc >= 4) {
    build_address(argv[2], argv[3], &relay_address);
    sink_address = relay_address;
    sink_address.sin_port =
        htons((uint16_t)(ntohs(relay_address.sin_port) + 1));
    if (strcmp(argv[1], "--source") == 0) return source(argc, argv);
    if (strcmp(argv[1], "--relay") == 0) return relay(argc, argv);
    if (strcmp(argv[1], "--sink") == 0) return sink(argc, argv);
  }
  if (argc != 1) {
    fprintf(stderr, "usage: %s [--source|--relay|--sink ADDR PORT]\n", argv[0]);
    return 2;
  }
  relay_address = test_address(3);
  sink_address = test_address(4);
  sink_pid = start_role(sink, argc, argv);
  relay_pid = start_role(relay, argc, argv);
  ok = source(argc, argv) == 0;
  ok = role_succeeded(relay_pid, "relay") && ok;
  ok = role_succeeded(sink_pid, "sink") && ok;
  return ok ? 0 : 1;
}
