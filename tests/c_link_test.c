/* A C11 program linked against bazel-bin/libdemi.so, as an application
 * outside Bazel would be: it sees only the demi_* symbols. Runs on the host
 * too, where there is no RDMA device, so demi_init may fail with ENODEV
 * there. */

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
  /* Where the test device is announced (tools/softroce/run sets
   * DEMI_RDMA_ADDR), ENODEV is a failure. */
  int require_device = getenv("DEMI_RDMA_ADDR") != NULL;
  int qd = -1;
  /* Before demi_init every call fails cleanly. */
  if (demi_socket(&qd, AF_INET, SOCK_STREAM, 0) != EINVAL) return 1;
  if (demi_sgaalloc(64).sga_numsegs != 0) return 2;
  int rc = demi_init(NULL);
  if (rc == ENODEV && !require_device) {
    puts("c_link_test: no RDMA device here; demi_init said ENODEV");
    return 0;
  }
  if (rc != 0) return 3;
  if (demi_init(NULL) != EEXIST) return 4;
  if (demi_socket(&qd, AF_INET, SOCK_STREAM, 0) != 0) return 5;
  demi_sgarray_t sga = demi_sgaalloc(64);
  if (sga.sga_numsegs != 1 || demi_sgafree(&sga) != 0) return 6;
  if (demi_close(qd) != 0) return 7;
  puts("c_link_test: initialized, socket and sgaalloc work");
  return 0;
}
