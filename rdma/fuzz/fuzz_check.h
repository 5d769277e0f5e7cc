// FUZZ_CHECK: the fuzz targets' assertion. A broken contract is a finding,
// so it aborts (libFuzzer then saves the input as a crash) in every build,
// optimized or not, unlike assert().

#ifndef DEMI_RDMA_FUZZ_FUZZ_CHECK_H_
#define DEMI_RDMA_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                            \
  ((condition) ? (void)0                                                 \
               : (std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", \
                               __FILE__, __LINE__, #condition),          \
                  std::abort()))

#endif  // DEMI_RDMA_FUZZ_FUZZ_CHECK_H_
