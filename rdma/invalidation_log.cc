#include "rdma/invalidation_log.h"

#include <algorithm>

namespace demi::rdma {

void InvalidationLog::BeginWrite() {
  mu_.Lock();
  // Sequentially consistent: the odd generation is visible before whatever
  // the producer does next (the read() that lets an munmap return).
  generation_.fetch_add(1, std::memory_order_seq_cst);
}

void InvalidationLog::Append(AddressRange range) {
  ring_[appended_ % kCapacity] = range;
  ++appended_;
}

void InvalidationLog::EndWrite() {
  generation_.fetch_add(1, std::memory_order_release);
  mu_.Unlock();
}

size_t InvalidationLog::Read(Cursor* cursor, absl::Span<AddressRange> out,
                             bool* lost) {
  demi::MutexLock lock(&mu_);  // Waits out an open write section.
  if (appended_ - cursor->next > kCapacity) {
    *lost = true;
    cursor->next = appended_ - kCapacity;
  }
  const size_t count = std::min<uint64_t>(appended_ - cursor->next, out.size());
  for (size_t i = 0; i < count; ++i) {
    out[i] = ring_[(cursor->next + i) % kCapacity];
  }
  cursor->next += count;
  if (cursor->next == appended_) {
    cursor->generation = generation_.load(std::memory_order_relaxed);
  }
  return count;
}

}  // namespace demi::rdma
