// The records RcConnection keeps of its sends: what kind of request each
// is, the sends queued for a credit or a send-queue slot (QueuedSend), and
// the requests posted, by send-queue slot (PostedSend). Private to
// RcConnection's implementation.

#ifndef DEMI_RDMA_SEND_RECORDS_H_
#define DEMI_RDMA_SEND_RECORDS_H_

#include <cstdint>

#include "rdma/segment.h"
#include "rdma/wire.h"

namespace demi::rdma {

// What a send-queue request is; its cookie's meaning depends on it.
enum class SendKind : uint8_t {
  kData,
  kCreditUpdate,
  kEndOfStream,
  kRendezvous,      // cookie: the outbound transfer's index
  kRendezvousDone,  // cookie: the peer's transfer id
  kRead,            // cookie: the receive buffer of the inbound transfer
  kKeepalive,       // a zero-length RDMA WRITE (SendKeepalive)
  kBind,            // binds a window of an outbound transfer (BindWindows)
  kDrain,           // a zero-length RDMA WRITE that retires what is before
                    // it, so windows can be bound (BindWindows)
  kFirstPart,       // the first SEND of a message in parts (SendInParts)
  kNextPart,        // a later one; the last reports the cookie
};

// A send waiting for a credit or a send-queue slot.
struct QueuedSend {
  uint64_t cookie = 0;
  SendKind kind = SendKind::kData;
  uint8_t num_segments = 0;
  // Staged (its bytes copied to the entry's stage) and so reported done
  // by its Send() through done_at_post: never reported again.
  bool reported = false;
  Segment segments[wire::kMaxSegments];
  // kFirstPart / kNextPart: `segments` is the whole message; this part is
  // its bytes [part_offset, part_offset + part_bytes).
  uint32_t part_offset = 0;
  uint32_t part_bytes = 0;
};
// A posted work request, by send-queue slot (ring order = completion
// order).
struct PostedSend {
  uint64_t cookie = 0;
  SendKind kind = SendKind::kData;
  bool report = true;   // kData: report the cookie on completion
  uint8_t entries = 1;  // kData: queued sends it carries (a batch: > 1)
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_SEND_RECORDS_H_
