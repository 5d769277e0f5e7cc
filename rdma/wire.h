// The wire format: everything two peers exchange, in one place.
// See wire.md for the layout diagrams and the rules for changing it.
//
// Two things cross the wire:
//  * ConnectionParams, in rdma_cm's private data when connecting and
//    accepting: what the peers must agree on before the first SEND.
//  * A MessageHeader at the start of every SEND, followed by one uint32
//    length per segment, followed by the segments' bytes back to back.
//
// All integers are little-endian. Encode* writes exactly k*Size bytes and
// cannot fail; Decode* checks everything a peer could get wrong and returns
// an error (EPROTO) rather than trusting it. Pure functions, thread-safe.

#ifndef DEMI_RDMA_WIRE_H_
#define DEMI_RDMA_WIRE_H_

#include <cstddef>
#include <cstdint>

#include "absl/base/attributes.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "rdma/byte_order.h"

namespace demi::rdma::wire {

// Bumped on any incompatible change; peers with different versions refuse to
// connect (the passive side rejects, the active side fails with EPROTO).
inline constexpr uint8_t kVersion = 5;

// Most segments one message carries (DEMI_SGARRAY_MAXSIZE).
inline constexpr int kMaxSegments = 16;

// ---- Connection parameters (rdma_cm private data) -------------------------

struct ConnectionParams {
  uint16_t receive_buffers = 0;      // receives the sender keeps posted
  uint32_t receive_buffer_size = 0;  // bytes per receive buffer
  bool rendezvous = false;           // the sender accepts rendezvous messages
  // With rendezvous (and only then, non-zero): the most bytes of rendezvous
  // messages the sender of these parameters takes from its peer at once. A
  // push larger than the peer's quota fails at once (EMSGSIZE); a peer that
  // announces more than it (in one message or in several not yet read)
  // breaks the protocol.
  uint64_t rendezvous_quota = 0;
};

inline constexpr size_t kConnectionParamsSize = 16;
// RC connect requests carry 56 bytes of private data, accepts 196.
static_assert(kConnectionParamsSize <= 56, "must fit a connect request");

void EncodeConnectionParams(const ConnectionParams& params,
                            uint8_t out[kConnectionParamsSize]);
absl::StatusOr<ConnectionParams> DecodeConnectionParams(const void* data,
                                                        size_t length);

// ---- Message header
// ----------------------------------------------------------

enum class MessageType : uint8_t {
  kData = 1,          // an application message (one push = one pop)
  kCreditUpdate = 2,  // no payload; only returns credits
  kEndOfStream = 3,   // the sender closed gracefully; no payload
  // A message too large to send eagerly: its segments' lengths, addresses and
  // remote keys; the receiver pulls them with RDMA READ.
  kRendezvous = 4,
  // The receiver has read transfer `transfer_id`; the sender may reuse it.
  kRendezvousDone = 5,
  // Several small data messages in one SEND (num_segments: how many, 2 to
  // kMaxBatchMessages): each follows the fixed part exactly as a kData SEND
  // would carry it, credits_returned 0. See DecodeBatchEntry.
  kBatch = 6,
  // The first SEND of a message too large for one receive buffer, sent in
  // parts: a data header for the whole message (its segments' lengths),
  // then the message's first bytes (at least one, fewer than all).
  kFragmented = 7,
  // The next part of the message a kFragmented SEND began: the fixed part
  // (no segments), then the next bytes (at least one). The parts of one
  // message follow each other; only credit updates and done messages may
  // come between them.
  kFragment = 8,
};

// Most messages one kBatch SEND carries.
inline constexpr int kMaxBatchMessages = 16;

// Where one segment of a rendezvous message lies at the sender.
struct RemoteSegment {
  uint64_t address;
  uint32_t rkey;

  friend bool operator==(const RemoteSegment&, const RemoteSegment&) = default;
};

// The arrays are left uninitialized by `MessageHeader header;` (the hot path
// fills only the first num_segments entries); `MessageHeader{...}` zeroes
// them.
struct MessageHeader {
  MessageType type = MessageType::kData;
  uint16_t credits_returned = 0;  // receive buffers re-posted since last told
  // 0..kMaxSegments (0 only if not kData, kRendezvous or kFragmented);
  // kBatch: its message count.
  uint8_t num_segments = 0;
  uint32_t segment_lengths[kMaxSegments];
  // kRendezvous and kRendezvousDone: the sender's number for the transfer.
  uint32_t transfer_id = 0;
  // kRendezvous: one per segment.
  RemoteSegment remote[kMaxSegments];
};

// Fixed part, then 4 bytes per segment: the header of a data message, which
// its payload follows.
inline constexpr size_t kHeaderFixedSize = 8;
inline constexpr size_t kMaxHeaderSize = kHeaderFixedSize + 4 * kMaxSegments;
static_assert(kMaxHeaderSize == 72, "header layout changed: bump kVersion");

inline constexpr size_t HeaderSize(int num_segments) {
  return kHeaderFixedSize + 4 * static_cast<size_t>(num_segments);
}

// A rendezvous message: the data header, then transfer id (4) and reserved
// (4), then per segment address (8), rkey (4) and reserved (4). A done
// message: the fixed part, transfer id (4), reserved (4).
inline constexpr size_t kRemoteSegmentSize = 16;
inline constexpr size_t RendezvousSize(int num_segments) {
  return HeaderSize(num_segments) + 8 +
         kRemoteSegmentSize * static_cast<size_t>(num_segments);
}
inline constexpr size_t kRendezvousDoneSize = kHeaderFixedSize + 8;
// The most bytes EncodeHeader writes (a rendezvous message of 16 segments).
// A receive buffer must hold it for the peer to send rendezvous messages.
inline constexpr size_t kMaxEncodedSize = RendezvousSize(kMaxSegments);
static_assert(kMaxEncodedSize == 336,
              "rendezvous layout changed: bump kVersion");

// The bytes EncodeHeader writes for `header`: HeaderSize(n) for data and
// kFragmented (the payload follows), RendezvousSize(n), kRendezvousDoneSize,
// or the fixed part (kFragment's payload follows it).
size_t EncodedSize(const MessageHeader& header);

// Writes EncodedSize(header) bytes to `out` and returns that size.
size_t EncodeHeader(const MessageHeader& header, uint8_t out[kMaxEncodedSize]);

// EncodeHeader of a data message, for the send path (no MessageHeader to
// fill): writes the fixed part, then each of the `num_segments` (1 to
// kMaxSegments) lengths, and returns HeaderSize(num_segments). `length(i)`
// gives segment i's length. The same bytes as EncodeHeader.
// Writes the kHeaderFixedSize bytes every message starts with.
inline void EncodeFixedPart(MessageType type, uint16_t credits_returned,
                            uint8_t num_segments, uint8_t* out) {
  out[0] = kVersion;
  out[1] = static_cast<uint8_t>(type);
  Put16(out + 2, credits_returned);
  out[4] = num_segments;
  out[5] = out[6] = out[7] = 0;
}

// Always inlined: it is on every data send (a call costs more than most
// of its work under emulation).
// `type` kFragmented writes a first part's header (the whole message's
// lengths) the same way.
template <typename LengthOf>
ABSL_ATTRIBUTE_ALWAYS_INLINE inline size_t EncodeDataHeader(
    uint16_t credits_returned, uint8_t num_segments, LengthOf length,
    uint8_t* out, MessageType type = MessageType::kData) {
  EncodeFixedPart(type, credits_returned, num_segments, out);
  for (int i = 0; i < num_segments; ++i) {
    Put32(out + kHeaderFixedSize + 4 * i, length(i));
  }
  return HeaderSize(num_segments);
}

// Decodes the header of a received message of `message_length` bytes into
// `*header` and checks that it accounts for exactly the message: a data
// message's segments fill the rest; every other type has exactly its encoded
// size; a kFragmented message carries at least one byte and fewer than its
// segments hold, a kFragment at least one. EPROTO if it does not (`*header`
// is then partly written). Fills only what the type carries:
// segment_lengths[0, num_segments), and transfer_id and remote[0,
// num_segments) for the rendezvous types.
absl::Status DecodeHeader(const uint8_t* message, size_t message_length,
                          MessageHeader* header);

// Decodes one message of a kBatch SEND: `entry` points at it (at
// kHeaderFixedSize for the first, then right after the previous one), with
// `remaining` bytes of the SEND from there. Sets `*header` (type kData) and
// `*entry_size` (its header and payload). EPROTO if it is not a data header
// with no credits, 1 to kMaxSegments segments, and a payload that fits.
// Whether the entries fill the SEND exactly is the caller's to check.
absl::Status DecodeBatchEntry(const uint8_t* entry, size_t remaining,
                              MessageHeader* header, size_t* entry_size);

}  // namespace demi::rdma::wire

#endif  // DEMI_RDMA_WIRE_H_
