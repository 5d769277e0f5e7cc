#include "libos/receive_handles.h"

#include <new>
#include <utility>

#include "common/logging.h"

namespace demi::libos {

ReceiveHandleTable::ReceiveHandleTable() {
  absl::StatusOr<ReservedRange> range =
      ReservedRange::Reserve(kMaxHandles * sizeof(ReceiveHandle));
  if (!range.ok()) {
    DEMI_LOG(kError, "receive handles: ", range.status().message());
    return;  // every Add fails
  }
  range_ = *std::move(range);
}

ReceiveHandle* ReceiveHandleTable::Add(ReceiveBufferOwner& owner,
                                       uint32_t count, uint32_t per_buffer,
                                       uint32_t worker, bool return_at_once) {
  if (range_.base() == nullptr || count == 0 || per_buffer == 0) {
    return nullptr;
  }
  demi::MutexLock lock(&mu_);
  const size_t used = used_.load(std::memory_order_relaxed);
  size_t first;
  auto runs = free_runs_.find(count);
  if (runs != free_runs_.end() && !runs->second.empty()) {
    first = runs->second.back();
    runs->second.pop_back();
  } else {
    if (count > kMaxHandles - used) {
      DEMI_LOG(kWarning, "receive handles: all ", kMaxHandles, " in use");
      return nullptr;
    }
    absl::Status grown = range_.Grow((used + count) * sizeof(ReceiveHandle));
    if (!grown.ok()) {
      DEMI_LOG(kError, "receive handles: ", grown.message());
      return nullptr;
    }
    first = used;
  }
  ReceiveHandle* handles = base() + first;
  for (uint32_t i = 0; i < count; ++i) {
    ReceiveHandle* handle = new (handles + i) ReceiveHandle();
    handle->buffer_index = i / per_buffer;
    handle->worker = worker;
    handle->return_at_once = return_at_once;
    handle->owner_.store(&owner, std::memory_order_release);
  }
  // Published after the handles are built: Find never sees one half made.
  if (first == used) used_.store(used + count, std::memory_order_release);
  arrays_[first] = count;
  return handles;
}

void ReceiveHandleTable::Remove(ReceiveHandle* handles) {
  if (handles == nullptr || range_.base() == nullptr) return;
  demi::MutexLock lock(&mu_);
  const size_t first = static_cast<size_t>(handles - base());
  auto array = arrays_.find(first);
  if (array == arrays_.end()) {
    DEMI_LOG(kError, "receive handles: removing an array never added");
    return;
  }
  const uint32_t count = array->second;
  arrays_.erase(array);
  for (uint32_t i = 0; i < count; ++i) {
    handles[i].~ReceiveHandle();
    new (handles + i) ReceiveHandle();  // free: no owner
  }
  free_runs_[count].push_back(first);
}

}  // namespace demi::libos
