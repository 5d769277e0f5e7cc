/* One-way TCP, Demikernel style: the client keeps up to WINDOW pushes in
 * flight (demi_wait_any on their tokens), the server pops every message and
 * checks its size and bytes in order, then sees the client's close as an
 * empty pop. Sizes from 1 B to 64 MiB. See common.h for how it runs. */

#define _POSIX_C_SOURCE 200809L

#include "common.h"

static const uint32_t sizes[] = {
    1,     7,     64,  100,      1024, 4000,      8192,      8193,
    20000, 65536, 100, 1u << 20, 3,    16u << 20, 64u << 20, 12,
};
#define NUM_SIZES (sizeof(sizes) / sizeof(sizes[0]))
#define MESSAGES 400
#define WINDOW 16

/* Message i's size: the list over and over, the two largest only once. */
static uint32_t size_of(uint64_t i) {
  uint32_t size = sizes[i % NUM_SIZES];
  return (i >= NUM_SIZES && size >= (16u << 20)) ? 4096 : size;
}

static struct sockaddr_in address;

static int server(int argc, char *const argv[]) {
  unsigned long long bytes = 0;
  uint64_t index = 0;
  int listener, qd;
  init_demi(argc, argv);
  listener = listen_on(&address);
  ready();
  qd = accept_wait(listener);
  for (;;) {
    demi_qresult_t qr;
    pop_wait(qd, &qr);
    if (qr.qr_value.sga.sga_numsegs == 0) break; /* end of stream */
    CHECK(index < MESSAGES);
    check_message(&qr.qr_value.sga, size_of(index), index);
    bytes += size_of(index);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    ++index;
  }
  CHECK(index == MESSAGES);
  printf("tcp_push_pop: server popped %llu messages, %llu bytes, in order\n",
         (unsigned long long)index, bytes);
  CHECK(demi_close(qd) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

static int client(int argc, char *const argv[]) {
  demi_qtoken_t tokens[WINDOW];
  int in_flight = 0;
  uint64_t next = 0;
  int qd;
  init_demi(argc, argv);
  qd = connect_to(&address);
  while (next < MESSAGES || in_flight > 0) {
    demi_qresult_t qr;
    int done = -1;
    if (next < MESSAGES && in_flight < WINDOW) {
      demi_sgarray_t sga = pattern_array(size_of(next), next);
      CHECK(demi_push(&tokens[in_flight], qd, &sga) == 0);
      ++in_flight;
      ++next;
      continue;
    }
    CHECK(demi_wait_any(&qr, &done, tokens, in_flight, NULL) == 0);
    CHECK(qr.qr_opcode == DEMI_OPC_PUSH);
    CHECK(done >= 0 && done < in_flight);
    CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
    tokens[done] = tokens[--in_flight];
  }
  CHECK(demi_close(qd) == 0);
  return 0;
}

int main(int argc, char *const argv[]) {
  if (argc >= 4) {
    build_address(argv[2], argv[3], &address);
    if (strcmp(argv[1], "--server") == 0) return server(argc, argv);
    if (strcmp(argv[1], "--client") == 0) return client(argc, argv);
  }
  if (argc != 1) {
    fprintf(stderr, "usage: %s [--server|--client ADDR PORT]\n", argv[0]);
    return 2;
  }
  address = test_address(1);
  return run_server_and_client(server, client, argc, argv);
}
