/* An echo client on the installed library: connects to ADDRESS:PORT, sends
 * messages of 1 B to 1 MiB (the larger ones go by rendezvous: the server
 * reads them from this process's memory), and checks every byte of every
 * echo. Exits 0 and prints "client: N echoes checked" if all came back
 * intact, 1 otherwise. */

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

const char *example_name = "client";

/* Byte i of message m. */
static uint8_t pattern(uint32_t m, uint32_t i) {
  return (uint8_t)(i * 31u + m * 7u + 1u);
}

int main(int argc, char *argv[]) {
  static const uint32_t sizes[] = {1, 64, 4096, 8192, 65536, 1u << 20};
  const uint32_t count = sizeof(sizes) / sizeof(sizes[0]);
  struct sockaddr_in server = {.sin_family = AF_INET};
  if (argc != 3 || inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
    fprintf(stderr, "usage: client ADDRESS PORT\n");
    return 2;
  }
  server.sin_port = htons((uint16_t)atoi(argv[2]));

  must(demi_init(NULL), "demi_init");
  int qd;
  must(demi_socket(&qd, AF_INET, SOCK_STREAM, 0), "demi_socket");
  demi_qtoken_t qt;
  must(demi_connect(&qt, qd, (struct sockaddr *)&server, sizeof(server)),
       "demi_connect");
  wait_for(qt, DEMI_OPC_CONNECT);

  for (uint32_t m = 0; m < count; ++m) {
    demi_sgarray_t sga = demi_sgaalloc(sizes[m]);
    if (sga.sga_numsegs == 0) {
      fprintf(stderr, "client: demi_sgaalloc(%u) failed\n", sizes[m]);
      return 1;
    }
    uint8_t *bytes = sga.sga_segs[0].sgaseg_buf;
    for (uint32_t i = 0; i < sizes[m]; ++i) bytes[i] = pattern(m, i);
    must(demi_push(&qt, qd, &sga), "demi_push");
    wait_for(qt, DEMI_OPC_PUSH);
    must(demi_sgafree(&sga), "demi_sgafree");

    must(demi_pop(&qt, qd), "demi_pop");
    demi_qresult_t qr = wait_for(qt, DEMI_OPC_POP);
    uint32_t at = 0;
    for (uint32_t s = 0; s < qr.qr_value.sga.sga_numsegs; ++s) {
      const uint8_t *got = qr.qr_value.sga.sga_segs[s].sgaseg_buf;
      for (uint32_t i = 0; i < qr.qr_value.sga.sga_segs[s].sgaseg_len; ++i) {
        if (at >= sizes[m] || got[i] != pattern(m, at)) {
          fprintf(stderr, "client: echo %u differs at byte %u\n", m, at);
          return 1;
        }
        ++at;
      }
    }
    if (at != sizes[m]) {
      fprintf(stderr, "client: echo %u has %u bytes, not %u\n", m, at,
              sizes[m]);
      return 1;
    }
    must(demi_sgafree(&qr.qr_value.sga), "demi_sgafree");
  }
  printf("client: %u echoes checked\n", count);
  must(demi_close(qd), "demi_close");
  return 0;
}
