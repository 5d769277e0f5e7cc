#include "libos/receive_handles.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <new>

#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::libos {
namespace {

constexpr size_t kReservedBytes =
    ReceiveHandleTable::kMaxHandles * sizeof(ReceiveHandle);

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

ReceiveHandleTable::ReceiveHandleTable() {
  void* reserved = mmap(nullptr, kReservedBytes, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) {
    DEMI_LOG(kError, ErrnoStatus(errno, "receive handles: mmap").message());
    return;  // every Add fails
  }
  base_ = static_cast<ReceiveHandle*>(reserved);
}

ReceiveHandleTable::~ReceiveHandleTable() {
  if (base_ != nullptr && munmap(base_, kReservedBytes) != 0) {
    DEMI_LOG(kError, ErrnoStatus(errno, "receive handles: munmap").message());
  }
}

ReceiveHandle* ReceiveHandleTable::Add(ReceiveBufferOwner& owner,
                                       uint32_t count) {
  if (base_ == nullptr || count == 0) return nullptr;
  size_t first;
  auto runs = free_runs_.find(count);
  if (runs != free_runs_.end() && !runs->second.empty()) {
    first = runs->second.back();
    runs->second.pop_back();
  } else {
    if (count > kMaxHandles - used_) {
      DEMI_LOG(kWarning, "receive handles: all ", kMaxHandles, " in use");
      return nullptr;
    }
    const size_t end_bytes = (used_ + count) * sizeof(ReceiveHandle);
    if (end_bytes > writable_bytes_) {
      const size_t page = PageSize();
      const size_t writable =
          std::min(kReservedBytes, (end_bytes + page - 1) / page * page);
      if (mprotect(reinterpret_cast<char*>(base_) + writable_bytes_,
                   writable - writable_bytes_, PROT_READ | PROT_WRITE) != 0) {
        DEMI_LOG(kError,
                 ErrnoStatus(errno, "receive handles: mprotect").message());
        return nullptr;
      }
      writable_bytes_ = writable;
    }
    first = used_;
    used_ += count;
  }
  ReceiveHandle* handles = base_ + first;
  for (uint32_t i = 0; i < count; ++i) {
    ReceiveHandle* handle = new (handles + i) ReceiveHandle();
    handle->owner = &owner;
    handle->buffer_index = i;
  }
  arrays_[first] = count;
  return handles;
}

void ReceiveHandleTable::Remove(ReceiveHandle* handles) {
  if (handles == nullptr || base_ == nullptr) return;
  const size_t first = static_cast<size_t>(handles - base_);
  auto array = arrays_.find(first);
  if (array == arrays_.end()) {
    DEMI_LOG(kError, "receive handles: removing an array never added");
    return;
  }
  const uint32_t count = array->second;
  arrays_.erase(array);
  for (uint32_t i = 0; i < count; ++i) handles[i] = ReceiveHandle();  // free
  free_runs_[count].push_back(first);
}

}  // namespace demi::libos
