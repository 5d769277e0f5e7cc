#include "libos/push_memory.h"

#include <cerrno>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "rdma/buffer_pool.h"
#include "rdma/large_buffer_pool.h"

namespace demi::libos {

using push_memory_internal::Inside;

PushTable::PushTable(uint32_t capacity)
    : capacity_(capacity),
      entries_(static_cast<Entry*>(
          std::calloc(capacity == 0 ? 1 : capacity, sizeof(Entry)))) {
  if (entries_ == nullptr) throw std::bad_alloc();
}

PushMemory::PushMemory(const rdma::DeviceRegistry& devices,
                       ReceiveHandleTable& handles, uint32_t worker,
                       ReturnElsewhere return_elsewhere)
    : devices_(devices),
      handles_(handles),
      worker_(worker),
      return_elsewhere_(std::move(return_elsewhere)) {}

absl::StatusOr<PushMemory::Buffer> PushMemory::Identify(
    const void* sga_buf) const {
  Buffer buffer;
  const char* why = nullptr;
  if (int e = Describe(sga_buf, &buffer, &why); e != 0) {
    return ErrnoError(e, why);
  }
  return buffer;
}

absl::Status PushMemory::Map(const demi_sgarray_t& sga, const Buffer& buffer,
                             ibv_pd* pd, rdma::Segment* segments,
                             PushRecord* record) {
  CopyArray(sga, &record->sga);
  record->library_buffer =
      buffer.kind == Buffer::Kind::kPool || buffer.kind == Buffer::Kind::kLarge
          ? sga.sga_buf
          : nullptr;
  record->received = nullptr;
  record->cache = nullptr;
  record->num_regions = 0;
  // Pinned first: a demi_sgafree from now on waits for this push.
  if (record->library_buffer != nullptr &&
      !LibraryPins(record->library_buffer).Pin()) {
    record->library_buffer = nullptr;
    return ErrnoError(EINVAL, "the array was freed");
  }
  if (buffer.received != nullptr) {
    if (!buffer.received->pins.Pin()) {
      return ErrnoError(EINVAL, "the popped array was freed");
    }
    record->received = buffer.received;
  }
  // The buffer's own keys serve segments inside it, on its device.
  const rdma::RegisteredSpan& span = buffer.span;
  const bool own_keys = span.data != nullptr && span.pd == pd;
  const auto begin = reinterpret_cast<uintptr_t>(span.data);
  for (uint32_t i = 0; i < sga.sga_numsegs; ++i) {
    const demi_sgaseg_t& segment = sga.sga_segs[i];
    const auto address = reinterpret_cast<uintptr_t>(segment.sgaseg_buf);
    if (own_keys && Inside(address, segment.sgaseg_len, begin, span.size)) {
      segments[i] = {segment.sgaseg_buf, segment.sgaseg_len, span.lkey,
                     span.rkey};
      continue;
    }
    if (record->cache == nullptr) {
      record->cache = devices_.CacheFor(pd);
      if (record->cache == nullptr) {
        Finished(*record);
        return ErrnoError(EIO, "a queue pair on a device without a cache");
      }
    }
    absl::StatusOr<rdma::RegionCache::Lease> lease =
        record->cache->Acquire(segment.sgaseg_buf, segment.sgaseg_len);
    if (!lease.ok()) {
      Finished(*record);
      record->num_regions = 0;
      return ErrnoError(
          ErrnoFromStatus(lease.status()),
          absl::StrCat("segment ", i, ": ", lease.status().message()));
    }
    record->regions[record->num_regions++] = lease->region;
    segments[i] = {segment.sgaseg_buf, segment.sgaseg_len, lease->keys.lkey,
                   lease->keys.rkey};
  }
  return absl::OkStatus();
}

bool PushMemory::DropIdleRegistrations(ibv_pd* pd) {
  size_t dropped = devices_.large_pool().DropKept();
  if (rdma::RegionCache* cache = devices_.CacheFor(pd); cache != nullptr) {
    dropped += cache->DropIdle();
  }
  return dropped > 0;
}

void PushMemory::Finished(const PushRecord& record) {
  Abandon(record);
  if (record.received != nullptr && record.received->pins.Unpin()) {
    GiveBack(*record.received);
  }
}

void PushMemory::Abandon(const PushRecord& record) {
  ReleaseLeases(record);
  if (record.library_buffer != nullptr &&
      LibraryPins(record.library_buffer).Unpin()) {
    absl::Status freed = FreeLibraryBuffer(record.library_buffer);
    if (!freed.ok()) DEMI_LOG(kError, "deferred free: ", freed.message());
  }
}

void PushMemory::GiveBack(ReceiveHandle& handle) {
  if (handle.worker == worker_) {
    handle.owner()->ReturnBuffer(handle.buffer_index);
  } else {
    return_elsewhere_(handle);
  }
}

void PushMemory::ReleaseLeases(const PushRecord& record) const {
  for (uint32_t i = 0; i < record.num_regions; ++i) {
    record.cache->Release(record.regions[i]);
  }
}

PinCount& PushMemory::LibraryPins(const void* buffer) const {
  const auto* pool_buffer = static_cast<const rdma::PoolBuffer*>(buffer);
  if (devices_.pool().Owns(pool_buffer)) return pool_buffer->pins();
  return static_cast<const rdma::LargeBuffer*>(buffer)->pins();
}

absl::Status PushMemory::FreeLibraryBuffer(void* buffer) const {
  auto* pool_buffer = static_cast<rdma::PoolBuffer*>(buffer);
  if (devices_.pool().Owns(pool_buffer)) {
    return devices_.pool().Free(pool_buffer);
  }
  return devices_.large_pool().Free(static_cast<rdma::LargeBuffer*>(buffer));
}

absl::Status PushMemory::Free(void* sga_buf, const Buffer& buffer,
                              rdma::BufferCache* keep) {
  PinCount& pins = buffer.kind == Buffer::Kind::kReceived
                       ? buffer.received->pins
                       : LibraryPins(sga_buf);
  switch (pins.Release()) {
    case PinCount::kFreeNow:
      break;
    case PinCount::kDeferred:
      return absl::OkStatus();  // freed when its last push finishes
    case PinCount::kAlreadyReleased:
      return ErrnoError(EINVAL, "the array was freed already");
  }
  if (buffer.kind == Buffer::Kind::kReceived) {
    GiveBack(*buffer.received);
    return absl::OkStatus();
  }
  if (buffer.kind == Buffer::Kind::kPool && keep != nullptr &&
      &keep->pool() == &devices_.pool() &&
      keep->Keep(static_cast<rdma::PoolBuffer*>(sga_buf))) {
    return absl::OkStatus();
  }
  return FreeLibraryBuffer(sga_buf);
}

}  // namespace demi::libos
