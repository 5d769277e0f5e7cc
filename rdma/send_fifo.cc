#include "rdma/send_fifo.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/errno_status.h"
#include "rdma/wire.h"

namespace demi::rdma {

absl::Status SendFifo::Push(SendKind kind, absl::Span<const Segment> segments,
                            uint64_t cookie, bool stage, bool* staged) {
  if (kind == SendKind::kEndOfStream ? ring_.full() : DataFull()) {
    return ErrnoError(EAGAIN, "send queue full");
  }
  const uint32_t slot = ring_.SlotAfterBack(0);
  QueuedSend& entry = ring_.slot(slot);
  entry.cookie = cookie;
  entry.kind = kind;
  entry.num_segments = static_cast<uint8_t>(segments.size());
  std::copy(segments.begin(), segments.end(), entry.segments);
  entry.part_offset = entry.part_bytes = 0;
  entry.reported = stage && kind == SendKind::kData && Stage(slot, entry);
  *staged = entry.reported;
  ring_.Extend(1);
  return absl::OkStatus();
}

void SendFifo::PushPart(SendKind kind, absl::Span<const Segment> segments,
                        uint64_t cookie, uint32_t offset, uint32_t bytes,
                        bool last) {
  QueuedSend& entry = ring_.slot(ring_.SlotAfterBack(0));
  entry.cookie = cookie;
  entry.kind = kind;
  entry.num_segments = static_cast<uint8_t>(segments.size());
  std::copy(segments.begin(), segments.end(), entry.segments);
  entry.part_offset = offset;
  entry.part_bytes = bytes;
  entry.reported = !last;  // only the last part reports the push
  ring_.Extend(1);
}

bool SendFifo::Stage(uint32_t slot, QueuedSend& entry) {
  size_t total = 0;
  for (uint32_t i = 0; i < entry.num_segments; ++i) {
    total += entry.segments[i].length;
  }
  if (!CanStage(total)) return false;
  uint8_t* stage = stages_ + static_cast<size_t>(slot) * kStageSize;
  for (uint32_t i = 0; i < entry.num_segments; ++i) {
    Segment& segment = entry.segments[i];
    std::memcpy(stage, segment.data, segment.length);
    segment.data = stage;
    segment.lkey = lkey_;
    segment.rkey = 0;
    stage += segment.length;
  }
  return true;
}

uint32_t SendFifo::BatchRun(uint32_t from, uint32_t available,
                            size_t limit) const {
  size_t bytes = wire::kHeaderFixedSize;
  uint32_t n = 0;
  while (n < available && n < wire::kMaxBatchMessages) {
    const QueuedSend& entry = ring_[from + n];
    if (entry.kind != SendKind::kData || !entry.reported) break;
    size_t size = wire::HeaderSize(entry.num_segments);
    for (uint32_t i = 0; i < entry.num_segments; ++i) {
      size += entry.segments[i].length;
    }
    if (bytes + size > limit) break;
    bytes += size;
    ++n;
  }
  return n >= 2 ? n : 1;
}

size_t SendFifo::EncodeBatch(uint32_t from, uint32_t n,
                             uint16_t credits_returned, uint8_t* out) const {
  wire::EncodeFixedPart(wire::MessageType::kBatch, credits_returned,
                        static_cast<uint8_t>(n), out);
  size_t at = wire::kHeaderFixedSize;
  for (uint32_t k = 0; k < n; ++k) {
    const QueuedSend& entry = ring_[from + k];
    const Segment* segments = entry.segments;
    at += wire::EncodeDataHeader(
        0, entry.num_segments, [segments](int i) { return segments[i].length; },
        out + at);
    for (uint32_t i = 0; i < entry.num_segments; ++i) {
      std::memcpy(out + at, segments[i].data, segments[i].length);
      at += segments[i].length;
    }
  }
  return at;
}

}  // namespace demi::rdma
