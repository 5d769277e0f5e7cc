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

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace demi::rdma::wire {

// Bumped on any incompatible change; peers with different versions refuse to
// connect (the passive side rejects, the active side fails with EPROTO).
inline constexpr uint8_t kVersion = 1;

// Most segments one message carries (DEMI_SGARRAY_MAXSIZE).
inline constexpr int kMaxSegments = 16;

// ---- Connection parameters (rdma_cm private data) -------------------------

struct ConnectionParams {
  uint16_t receive_buffers = 0;      // receives the sender keeps posted
  uint32_t receive_buffer_size = 0;  // bytes per receive buffer
};

inline constexpr size_t kConnectionParamsSize = 8;
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
};

struct MessageHeader {
  MessageType type = MessageType::kData;
  uint16_t credits_returned = 0;  // receive buffers re-posted since last told
  uint8_t num_segments = 0;       // 0..kMaxSegments (0 only if not kData)
  uint32_t segment_lengths[kMaxSegments] = {};
};

// Fixed part, then 4 bytes per segment.
inline constexpr size_t kHeaderFixedSize = 8;
inline constexpr size_t kMaxHeaderSize = kHeaderFixedSize + 4 * kMaxSegments;
static_assert(kMaxHeaderSize == 72, "header layout changed: bump kVersion");

inline constexpr size_t HeaderSize(int num_segments) {
  return kHeaderFixedSize + 4 * static_cast<size_t>(num_segments);
}

// Writes HeaderSize(header.num_segments) bytes to `out` and returns that size.
size_t EncodeHeader(const MessageHeader& header, uint8_t out[kMaxHeaderSize]);

// Decodes the header of a received message of `message_length` bytes and
// checks that its segments account for exactly the rest of the message.
absl::StatusOr<MessageHeader> DecodeHeader(const uint8_t* message,
                                           size_t message_length);

}  // namespace demi::rdma::wire

#endif  // DEMI_RDMA_WIRE_H_
