// One message's memory for the benchmark: from demi_sgaalloc, or malloc'ed
// and pushed with sga_buf == NULL.

#ifndef DEMI_TOOLS_RDMA_BENCH_BUFFER_H_
#define DEMI_TOOLS_RDMA_BENCH_BUFFER_H_

#include <demi/types.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "tools/rdma_bench/options.h"

namespace demi::bench {

// One array of one segment of `size` bytes, every byte kFill (each page
// touched before measuring). Freed by the destructor (demi_sgafree defers
// the free of library memory a push still reads). Not thread-safe.
class Buffer {
 public:
  static constexpr uint8_t kFill = 0x5a;

  // Errors are cells the library cannot run (FailedPrecondition, reason).
  static absl::StatusOr<std::unique_ptr<Buffer>> Allocate(Memory memory,
                                                          uint64_t size);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  const demi_sgarray_t& sga() const { return sga_; }
  uint8_t* data() const {
    return static_cast<uint8_t*>(sga_.sga_segs[0].sgaseg_buf);
  }

 private:
  explicit Buffer(Memory memory) : memory_(memory) {}
  Memory memory_;
  demi_sgarray_t sga_{};
  void* app_ = nullptr;
};

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_BUFFER_H_
