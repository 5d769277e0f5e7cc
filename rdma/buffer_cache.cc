#include "rdma/buffer_cache.h"

#include "absl/status/status.h"
#include "common/logging.h"

namespace demi::rdma {

BufferCache::~BufferCache() {
  if (pool_ == nullptr) return;
  for (Class& c : classes_) {
    for (uint32_t i = 0; i < c.count; ++i) {
      absl::Status freed = pool_->Free(c.buffers[i]);
      if (!freed.ok()) {
        DEMI_LOG(kError,
                 "buffer cache: giving a buffer back: ", freed.message());
      }
    }
    c.count = 0;
  }
}

size_t BufferCache::size() const {
  size_t n = 0;
  for (const Class& c : classes_) n += c.count;
  return n;
}

void BufferCache::Forget() {
  pool_ = nullptr;
  for (Class& c : classes_) c.count = 0;
}

}  // namespace demi::rdma
