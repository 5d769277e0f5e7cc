#include "libos/receive_handles.h"

#include <utility>

namespace demi::libos {

ReceiveHandle* ReceiveHandleTable::Add(ReceiveBufferOwner& owner,
                                       uint32_t count) {
  auto handles = std::make_unique<ReceiveHandle[]>(count);
  for (uint32_t i = 0; i < count; ++i) {
    handles[i].owner = &owner;
    handles[i].buffer_index = i;
  }
  ReceiveHandle* first = handles.get();
  const auto begin = reinterpret_cast<uintptr_t>(first);
  arrays_[begin] =
      Array{begin + count * sizeof(ReceiveHandle), std::move(handles)};
  return first;
}

void ReceiveHandleTable::Remove(ReceiveHandle* handles) {
  if (handles != nullptr) arrays_.erase(reinterpret_cast<uintptr_t>(handles));
}

ReceiveHandle* ReceiveHandleTable::Find(const void* pointer) const {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  auto it = arrays_.upper_bound(address);
  if (it == arrays_.begin()) return nullptr;
  --it;
  if (address >= it->second.end ||
      (address - it->first) % sizeof(ReceiveHandle) != 0) {
    return nullptr;
  }
  return reinterpret_cast<ReceiveHandle*>(address);
}

}  // namespace demi::libos
