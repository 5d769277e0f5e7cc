// SendFifo: a connection's sends waiting for a credit or a send-queue slot,
// oldest first: a ring of `depth` entries whose last place is kept for the
// end of stream, so a close can always end a stream whose sends fill it.
//
// A small data send may be staged as it is queued: its bytes are copied to
// the entry's stage (kStageSize bytes of registered memory of the
// connection's, set_stages), so its caller has its memory back at once, and
// runs of staged sends can go as one kBatch SEND (BatchRun, EncodeBatch;
// wire.md). The connection decides what may be staged (only while credits
// cover the FIFO up to it: a staged send was reported done and must go out
// without waiting for the peer).
//
// Thread-safety: none. Lifetime: the stages' memory outlives the FIFO.

#ifndef DEMI_RDMA_SEND_FIFO_H_
#define DEMI_RDMA_SEND_FIFO_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/fixed_ring.h"
#include "rdma/segment.h"
#include "rdma/send_records.h"
#include "rdma/wire.h"

namespace demi::rdma {

// The bytes of each full SEND of a message in parts, for a peer whose
// receive buffers hold `peer_buffer` bytes, on a path of `path_mtu`-byte
// packets (0: unknown): the buffer rounded down to whole packets when that
// still carries the largest data header and a byte, else the buffer. So no
// part ends in a nearly empty packet: 64 KiB in parts of 8264 bytes (an 8 KiB
// eager limit and its header) is 71 packets of 1024 bytes; in parts of 8192
// bytes, 65.
inline uint32_t PartSendBytes(uint32_t peer_buffer, uint32_t path_mtu) {
  if (path_mtu == 0) return peer_buffer;
  const uint32_t whole = peer_buffer / path_mtu * path_mtu;
  return whole > wire::kMaxHeaderSize ? whole : peer_buffer;
}

class SendFifo {
 public:
  // The most bytes a staged send carries.
  static constexpr size_t kStageSize = 256;

  explicit SendFifo(uint32_t depth) : ring_(depth) {}

  // Where the stages lie: depth * kStageSize bytes at `stages`, registered
  // under `lkey`.
  void set_stages(uint8_t* stages, uint32_t lkey) {
    stages_ = stages;
    lkey_ = lkey;
  }

  // Whether a data send of `bytes` would be staged by Push(..., stage).
  bool CanStage(uint64_t bytes) const {
    return stages_ != nullptr && bytes <= kStageSize;
  }

  uint32_t size() const { return ring_.size(); }
  bool empty() const { return ring_.empty(); }
  // No place for data: the last is kept for the end of stream.
  bool DataFull() const { return ring_.size() + 1 >= ring_.capacity(); }
  const QueuedSend& operator[](uint32_t i) const { return ring_[i]; }
  const QueuedSend& front() const { return ring_.front(); }
  void pop_front(uint32_t n = 1) { ring_.pop_front(n); }

  // Queues a send of `kind`. With `stage`, a data send that fits kStageSize
  // is staged (QueuedSend::reported); *staged says whether it was. EAGAIN
  // if there is no place (data: DataFull; end of stream: full).
  absl::Status Push(SendKind kind, absl::Span<const Segment> segments,
                    uint64_t cookie, bool stage, bool* staged);

  // Queues bytes [offset, offset + bytes) of the message `segments` as one
  // part (kFirstPart or kNextPart); only the `last` part reports `cookie`.
  // The caller checked there is room.
  void PushPart(SendKind kind, absl::Span<const Segment> segments,
                uint64_t cookie, uint32_t offset, uint32_t bytes, bool last);

  // How many entries from position `from` (of `available`) can go as one
  // kBatch SEND of at most `limit` bytes: consecutive staged data sends, at
  // most wire::kMaxBatchMessages; 1 if fewer than two.
  uint32_t BatchRun(uint32_t from, uint32_t available, size_t limit) const;
  // Writes the kBatch message of entries from..from + n - 1 (staged) to
  // `out`: the fixed header with `credits_returned`, then each message's
  // header and bytes. Returns its length.
  size_t EncodeBatch(uint32_t from, uint32_t n, uint16_t credits_returned,
                     uint8_t* out) const;

  // Empties the FIFO, calling `report(cookie)` for each send whose cookie
  // is still owed (not staged: a staged one was reported done by its Send).
  template <typename Fn>
  void Drain(Fn report) {
    while (!ring_.empty()) {
      const QueuedSend& entry = ring_.front();
      ring_.pop_front();  // the slot keeps its value until reused
      if ((entry.kind == SendKind::kData ||
           entry.kind == SendKind::kNextPart) &&
          !entry.reported) {
        report(entry.cookie);
      }
    }
  }

 private:
  // Copies the bytes of `entry`, in ring slot `slot`, to that slot's stage
  // and points its segments there, if they fit. Returns whether it did.
  bool Stage(uint32_t slot, QueuedSend& entry);

  FixedRing<QueuedSend> ring_;
  uint8_t* stages_ = nullptr;
  uint32_t lkey_ = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_SEND_FIFO_H_
