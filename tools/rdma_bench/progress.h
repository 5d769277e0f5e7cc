// rdma_bench's progress lines, on stderr ("rdma_bench: ..."), flushed at
// once: the table goes to stdout.

#ifndef DEMI_TOOLS_RDMA_BENCH_PROGRESS_H_
#define DEMI_TOOLS_RDMA_BENCH_PROGRESS_H_

#include <cstdio>
#include <string>

namespace demi::bench {

inline void Progress(const std::string& line) {
  std::fprintf(stderr, "rdma_bench: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_PROGRESS_H_
