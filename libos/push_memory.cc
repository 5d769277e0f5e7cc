#include "libos/push_memory.h"

#include <cerrno>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "rdma/buffer_pool.h"
#include "rdma/large_buffer_pool.h"

namespace demi::libos {

int CheckPushArray(const demi_sgarray_t* sga, uint64_t* total,
                   const char** why) {
  if (sga == nullptr) {
    *why = "null scatter-gather array";
    return EINVAL;
  }
  if (sga->sga_numsegs == 0 || sga->sga_numsegs > DEMI_SGARRAY_MAXSIZE) {
    *why = "the segment count is not 1 to DEMI_SGARRAY_MAXSIZE";
    return EINVAL;
  }
  uint64_t sum = 0;
  for (uint32_t i = 0; i < sga->sga_numsegs; ++i) {
    if (sga->sga_segs[i].sgaseg_buf == nullptr ||
        sga->sga_segs[i].sgaseg_len == 0) {
      *why = "a segment is null or empty";
      return EINVAL;
    }
    sum += sga->sga_segs[i].sgaseg_len;
  }
  *total = sum;
  return 0;
}

void UnmappedSegments(const demi_sgarray_t& sga, rdma::Segment* out) {
  for (uint32_t i = 0; i < sga.sga_numsegs; ++i) {
    out[i] = {sga.sga_segs[i].sgaseg_buf, sga.sga_segs[i].sgaseg_len, 0, 0};
  }
}

namespace {

// The registered memory of a demi_sgaalloc buffer (a PoolBuffer or a
// LargeBuffer: both registered in `pd` for local and remote read access).
template <typename LibraryBuffer>
rdma::RegisteredSpan LibrarySpan(const LibraryBuffer* buffer, ibv_pd* pd) {
  return {static_cast<const uint8_t*>(buffer->data()),
          buffer->capacity(),
          buffer->keys().lkey,
          buffer->keys().rkey,
          pd,
          /*remote_read=*/true};
}

}  // namespace

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

bool PushMemory::Classify(const void* sga_buf, Buffer* buffer) const {
  buffer->kind = Buffer::Kind::kApplication;
  buffer->received = nullptr;
  if (sga_buf == nullptr) return true;
  if (!free_when_pushed_.empty() && free_when_pushed_.contains(sga_buf)) {
    return false;  // freed while pushes read it
  }
  // demi_sgaalloc buffers first (the pool's check is O(1)), then popped
  // arrays (also O(1)), then large buffers.
  if (devices_.pool().IsAllocated(
          static_cast<const rdma::PoolBuffer*>(sga_buf))) {
    buffer->kind = Buffer::Kind::kPool;
    return true;
  }
  ReceiveHandle* handle = handles_.Find(sga_buf);
  if (handle != nullptr && handle->popped) {
    buffer->kind = Buffer::Kind::kReceived;
    buffer->received = handle;
    return true;
  }
  if (devices_.large_pool().IsAllocated(
          static_cast<const rdma::LargeBuffer*>(sga_buf))) {
    buffer->kind = Buffer::Kind::kLarge;
    return true;
  }
  return false;
}

int PushMemory::Describe(const void* sga_buf, Buffer* buffer,
                         const char** why) const {
  if (!Classify(sga_buf, buffer)) {
    *why =
        "sga_buf is neither NULL, nor memory from demi_sgaalloc, nor a popped "
        "array (or the array was freed)";
    return EINVAL;
  }
  switch (buffer->kind) {
    case Buffer::Kind::kApplication:
      break;
    case Buffer::Kind::kPool:
      buffer->span = LibrarySpan(static_cast<const rdma::PoolBuffer*>(sga_buf),
                                 devices_.pool_pd());
      break;
    case Buffer::Kind::kReceived:
      buffer->span =
          buffer->received->owner->HeldBuffer(buffer->received->buffer_index);
      if (buffer->span.data == nullptr) {
        *why = "a popped array's buffer is not held";
        return EIO;
      }
      break;
    case Buffer::Kind::kLarge:
      buffer->span = LibrarySpan(static_cast<const rdma::LargeBuffer*>(sga_buf),
                                 devices_.pool_pd());
      break;
  }
  return 0;
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

namespace {

// Whether [address, address + length) lies inside [begin, begin + size).
bool Inside(uintptr_t address, size_t length, uintptr_t begin, size_t size) {
  return address >= begin && length <= size && address - begin <= size - length;
}

}  // namespace

bool PushMemory::InlineReadableSegment(const demi_sgaseg_t& segment,
                                       const rdma::RegisteredSpan& span,
                                       ibv_pd* pd) {
  const auto address = reinterpret_cast<uintptr_t>(segment.sgaseg_buf);
  if (span.data != nullptr &&
      Inside(address, segment.sgaseg_len,
             reinterpret_cast<uintptr_t>(span.data), span.size)) {
    return true;
  }
  const rdma::AddressRange& pages = mapped_.pages;
  if (mapped_cache_ != nullptr && mapped_cache_->StillMapped(mapped_) &&
      Inside(address, segment.sgaseg_len, pages.begin,
             pages.end - pages.begin)) {
    return true;
  }
  rdma::RegionCache* cache = devices_.CacheFor(pd);
  if (cache == nullptr ||
      !cache->FindMapped(segment.sgaseg_buf, segment.sgaseg_len, &mapped_)) {
    return false;
  }
  mapped_cache_ = cache;
  return true;
}

bool PushMemory::InlineReadable(const demi_sgarray_t& sga, const Buffer& buffer,
                                ibv_pd* pd) {
  for (uint32_t i = 0; i < sga.sga_numsegs; ++i) {
    if (!InlineReadableSegment(sga.sga_segs[i], buffer.span, pd)) return false;
  }
  return true;
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
