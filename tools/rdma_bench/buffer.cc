#include "tools/rdma_bench/buffer.h"

#include <demi/sga.h>

#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demi::bench {

absl::StatusOr<std::unique_ptr<Buffer>> Buffer::Allocate(Memory memory,
                                                         uint64_t size) {
  auto buffer = std::unique_ptr<Buffer>(new Buffer(memory));
  void* data = nullptr;
  if (memory == Memory::kLibrary) {
    buffer->sga_ = demi_sgaalloc(size);
    if (buffer->sga_.sga_numsegs == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("demi_sgaalloc(", size, ") returned no memory"));
    }
    data = buffer->sga_.sga_segs[0].sgaseg_buf;
  } else {
    data = buffer->app_ = std::malloc(size);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("malloc(", size, ") failed"));
    }
    buffer->sga_.sga_buf = nullptr;
    buffer->sga_.sga_numsegs = 1;
  }
  buffer->sga_.sga_segs[0].sgaseg_buf = data;
  buffer->sga_.sga_segs[0].sgaseg_len = static_cast<uint32_t>(size);
  std::memset(data, kFill, size);  // touch every page before measuring
  return buffer;
}

Buffer::~Buffer() {
  if (memory_ == Memory::kLibrary) {
    (void)demi_sgafree(&sga_);
  } else {
    std::free(app_);
  }
}

}  // namespace demi::bench
