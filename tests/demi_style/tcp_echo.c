/* A TCP echo server and its client, Demikernel style: the server pushes
 * back the very array it popped (zero copy), waits for the push, then frees
 * it; the client checks every byte of every echo, in order, for sizes from
 * 1 B to 64 MiB. See common.h for how it runs. */

#define _POSIX_C_SOURCE 200809L

#include "common.h"

static const uint32_t sizes[] = {
    1,    2,    63,   64,    65,       255,       1000,      4096,
    8191, 8192, 8193, 65536, 1u << 20, 16u << 20, 64u << 20,
};
#define NUM_SIZES (sizeof(sizes) / sizeof(sizes[0]))
#define ROUNDS 3 /* of every size up to 1 MiB; the larger ones once */

static struct sockaddr_in address;

static int server(int argc, char *const argv[]) {
  unsigned long long messages = 0, bytes = 0;
  int listener, qd;
  init_demi(argc, argv);
  listener = listen_on(&address);
  ready();
  qd = accept_wait(listener);
  echo_until_end_of_stream(qd, &messages, &bytes);
  printf("tcp_echo: server echoed %llu messages, %llu bytes, zero-copy\n",
         messages, bytes);
  CHECK(demi_close(qd) == 0);
  CHECK(demi_close(listener) == 0);
  return 0;
}

static int client(int argc, char *const argv[]) {
  uint64_t index = 0;
  int qd;
  init_demi(argc, argv);
  qd = connect_to(&address);
  for (int round = 0; round < ROUNDS; ++round) {
    for (size_t i = 0; i < NUM_SIZES; ++i) {
      demi_qresult_t qr;
      demi_sgarray_t sga;
      if (round > 0 && sizes[i] > (1u << 20)) continue;
      sga = pattern_array(sizes[i], index);
      push_wait(qd, &sga);
      CHECK(demi_sgafree(&sga) == 0);
      pop_wait(qd, &qr);
      check_message(&qr.qr_value.sga, sizes[i], index);
      CHECK(demi_sgafree(&qr.qr_value.sga) == 0);
      ++index;
    }
  }
  printf("tcp_echo: client checked %llu echoes\n", (unsigned long long)index);
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
  address = test_address(0);
  return run_server_and_client(server, client, argc, argv);
}
