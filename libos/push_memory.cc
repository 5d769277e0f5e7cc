#include "libos/push_memory.h"

#include <cerrno>
#include <new>

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
                       ReceiveHandleTable& handles, uint32_t max_pushes)
    : devices_(devices), handles_(handles) {
  pushes_reading_.reserve(max_pushes);
}

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
                             ibv_pd* pd, bool remote_read,
                             rdma::Segment* segments,
                             PushRecord* record) const {
  CopyArray(sga, &record->sga);
  record->library_buffer =
      buffer.kind == Buffer::Kind::kPool || buffer.kind == Buffer::Kind::kLarge
          ? sga.sga_buf
          : nullptr;
  record->received = buffer.received;
  record->cache = nullptr;
  record->num_regions = 0;
  // The buffer's own keys serve segments inside it, on its device, and for
  // a rendezvous only if the peer may read with them.
  const rdma::RegisteredSpan& span = buffer.span;
  const bool own_keys = span.data != nullptr && span.pd == pd &&
                        (!remote_read || span.remote_read);
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
        return ErrnoError(EIO, "a queue pair on a device without a cache");
      }
    }
    absl::StatusOr<rdma::RegionCache::Lease> lease =
        record->cache->Acquire(segment.sgaseg_buf, segment.sgaseg_len);
    if (!lease.ok()) {
      ReleaseLeases(*record);
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

void PushMemory::Started(const PushRecord& record) {
  if (record.library_buffer != nullptr) {
    ++pushes_reading_[record.library_buffer];
  }
  if (record.received != nullptr) ++record.received->pushes;
}

void PushMemory::Finished(const PushRecord& record) {
  ReleaseLeases(record);
  if (record.library_buffer != nullptr) {
    LibraryPushFinished(record.library_buffer);
  }
  ReceiveHandle* handle = record.received;
  if (handle == nullptr) return;
  if (--handle->pushes > 0 || !handle->free_pending) return;
  handle->free_pending = false;
  handle->owner->ReturnBuffer(handle->buffer_index);
}

void PushMemory::Abandon(const PushRecord& record) {
  ReleaseLeases(record);
  if (record.library_buffer != nullptr) {
    LibraryPushFinished(record.library_buffer);
  }
}

void PushMemory::ReleaseLeases(const PushRecord& record) const {
  for (uint32_t i = 0; i < record.num_regions; ++i) {
    record.cache->Release(record.regions[i]);
  }
}

void PushMemory::LibraryPushFinished(const void* buffer) {
  auto it = pushes_reading_.find(buffer);
  if (it == pushes_reading_.end() || --it->second > 0) return;
  pushes_reading_.erase(it);
  if (free_when_pushed_.erase(buffer) > 0) {
    absl::Status freed = FreeLibraryBuffer(const_cast<void*>(buffer));
    if (!freed.ok()) DEMI_LOG(kError, "deferred free: ", freed.message());
  }
}

absl::Status PushMemory::FreeLibraryBuffer(void* buffer) {
  auto* pool_buffer = static_cast<rdma::PoolBuffer*>(buffer);
  if (devices_.pool().Owns(pool_buffer)) {
    return devices_.pool().Free(pool_buffer);
  }
  return devices_.large_pool().Free(static_cast<rdma::LargeBuffer*>(buffer));
}

absl::Status PushMemory::Free(void* sga_buf) {
  if (sga_buf == nullptr) {
    return ErrnoError(EINVAL, "not an array the library owns");
  }
  Buffer buffer;
  if (!Classify(sga_buf, &buffer)) {
    return ErrnoError(EINVAL, "not an array the library owns (or freed)");
  }
  if (buffer.kind == Buffer::Kind::kReceived) {
    ReceiveHandle& handle = *buffer.received;
    handle.popped = false;
    if (handle.pushes > 0) {
      handle.free_pending = true;  // returned when its last push finishes
    } else {
      handle.owner->ReturnBuffer(handle.buffer_index);
    }
    return absl::OkStatus();
  }
  if (!pushes_reading_.empty() && pushes_reading_.contains(sga_buf)) {
    free_when_pushed_.insert(sga_buf);  // freed when its pushes complete
    return absl::OkStatus();
  }
  return FreeLibraryBuffer(sga_buf);
}

}  // namespace demi::libos
