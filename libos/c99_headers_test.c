/* The headers Demikernel ships (<demi/libos.h>, <demi/sga.h>, <demi/wait.h>,
 * <demi/types.h>, <demi/cc.h>) as a program written for Demikernel includes
 * them: C99, -Wall -Wextra -Werror -Wpedantic, with the feature-test macro
 * its examples define (or another, or none: see BUILD.bazel). Layouts are
 * checked the C99 way (a negative array size fails to compile). */

#include <demi/cc.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/types.h>
#include <demi/wait.h>
#include <stddef.h>
#include <string.h>

#define LAYOUT(name, condition) typedef char name[(condition) ? 1 : -1]

LAYOUT(segment_size, sizeof(demi_sgaseg_t) == 12);
LAYOUT(array_size, sizeof(demi_sgarray_t) == 12 + 16 * 12 + 16);
LAYOUT(array_addr, offsetof(demi_sgarray_t, sga_addr) == 12 + 16 * 12);
LAYOUT(accept_size, sizeof(demi_accept_result_t) == 20);
LAYOUT(result_value, offsetof(demi_qresult_t, qr_value) == 24);
LAYOUT(result_size, sizeof(demi_qresult_t) == 24 + sizeof(demi_sgarray_t));
LAYOUT(args_size, sizeof(struct demi_args) == 20);
LAYOUT(args_argv, offsetof(struct demi_args, argv) == 4);
LAYOUT(args_callback, offsetof(struct demi_args, callback) == 12);

/* A program's own function with Demikernel's annotation macros. */
static ATTR_NODISCARD int first_length(_In_ const demi_sgarray_t *sga)
    ATTR_NONNULL(1);
static int first_length(const demi_sgarray_t *sga) {
  return (int)sga->sga_segs[0].sgaseg_len;
}

int main(int argc, char *const argv[]) {
  /* Demikernel's examples initialize with designated initializers. */
  const struct demi_args args = {
      .argc = argc,
      .argv = argv,
      .callback = NULL,
  };
  demi_sgarray_t sga;
  memset(&sga, 0, sizeof(sga));
  sga.sga_segs[0].sgaseg_len = 7;
  if (args.argc != argc || args.argv != argv) return 2;
  return first_length(&sga) == 7 ? 0 : 1;
}
