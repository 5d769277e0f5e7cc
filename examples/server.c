/* An echo server on the installed library: accepts one connection on
 * ADDRESS:PORT, pushes back every message it pops (the very array: zero
 * copy) until the client closes, then exits 0. Any failure exits 1 with a
 * message. Built by Makefile, CMakeLists.txt or check. */

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

const char *example_name = "server";

int main(int argc, char *argv[]) {
  struct sockaddr_in address = {.sin_family = AF_INET};
  if (argc != 3 || inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) {
    fprintf(stderr, "usage: server ADDRESS PORT\n");
    return 2;
  }
  address.sin_port = htons((uint16_t)atoi(argv[2]));

  must(demi_init(NULL), "demi_init");
  int listener;
  must(demi_socket(&listener, AF_INET, SOCK_STREAM, 0), "demi_socket");
  must(demi_bind(listener, (struct sockaddr *)&address, sizeof(address)),
       "demi_bind");
  must(demi_listen(listener, 1), "demi_listen");
  demi_qtoken_t qt;
  must(demi_accept(&qt, listener), "demi_accept");
  int qd = wait_for(qt, DEMI_OPC_ACCEPT).qr_value.ares.qd;

  unsigned long messages = 0;
  for (;;) {
    demi_qresult_t qr;
    must(demi_pop(&qt, qd), "demi_pop");
    must(demi_wait(&qr, qt, NULL), "demi_wait");
    if (qr.qr_opcode == DEMI_OPC_FAILED && qr.qr_ret == ECONNRESET) break;
    if (qr.qr_opcode != DEMI_OPC_POP) {
      fprintf(stderr, "server: pop failed: %s\n", strerror(qr.qr_ret));
      return 1;
    }
    if (qr.qr_value.sga.sga_numsegs == 0) break; /* the client closed */
    must(demi_push(&qt, qd, &qr.qr_value.sga), "demi_push");
    wait_for(qt, DEMI_OPC_PUSH);
    must(demi_sgafree(&qr.qr_value.sga), "demi_sgafree");
    ++messages;
  }
  printf("server: echoed %lu messages\n", messages);
  must(demi_close(qd), "demi_close");
  must(demi_close(listener), "demi_close");
  return 0;
}
