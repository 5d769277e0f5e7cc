/* What the C examples share: exiting with a message when a demi_* call or an
 * operation fails. Each program sets `example_name` for its messages. */

#ifndef DEMI_EXAMPLE_H_
#define DEMI_EXAMPLE_H_

#include <demi/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char *example_name;

/* Exits 1 with a message if `error` (what a demi_* call returned) is not 0. */
static inline void must(int error, const char *what) {
  if (error != 0) {
    fprintf(stderr, "%s: %s: %s\n", example_name, what, strerror(error));
    exit(1);
  }
}

/* Waits for `qt`; exits 1 unless it completed with `opcode`. */
static inline demi_qresult_t wait_for(demi_qtoken_t qt, demi_opcode_t opcode) {
  demi_qresult_t qr;
  must(demi_wait(&qr, qt, NULL), "demi_wait");
  if (qr.qr_opcode != opcode) {
    fprintf(stderr, "%s: operation failed: %s\n", example_name,
            strerror(qr.qr_ret));
    exit(1);
  }
  return qr;
}

#endif /* DEMI_EXAMPLE_H_ */
