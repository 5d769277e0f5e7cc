// Fuzz target: wire::DecodeHeader on anything a peer could SEND, and, for a
// batch, wire::DecodeBatchEntry over its entries as the receiver walks them.
// Checks the decoder's contract on every input it accepts: the header
// accounts for exactly the message, and encoding it again gives the same
// bytes (reserved bytes aside, which the decoder ignores).

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/errno_status.h"
#include "rdma/fuzz/fuzz_check.h"
#include "rdma/wire.h"

namespace wire = demi::rdma::wire;

namespace {

// The receiver's walk over a batch's entries (RcConnection::DecodeBatch):
// every accepted entry lies inside the SEND.
void WalkBatch(const uint8_t* data, size_t size, int count) {
  size_t offset = wire::kHeaderFixedSize;
  for (int i = 0; i < count; ++i) {
    wire::MessageHeader entry;
    size_t entry_size = 0;
    if (!wire::DecodeBatchEntry(data + offset, size - offset, &entry,
                                &entry_size)
             .ok()) {
      return;
    }
    FUZZ_CHECK(entry.type == wire::MessageType::kData);
    FUZZ_CHECK(entry.num_segments >= 1 &&
               entry.num_segments <= wire::kMaxSegments);
    uint64_t payload = 0;
    for (int s = 0; s < entry.num_segments; ++s) {
      payload += entry.segment_lengths[s];
    }
    FUZZ_CHECK(entry_size == wire::HeaderSize(entry.num_segments) + payload);
    FUZZ_CHECK(entry_size <= size - offset);
    offset += entry_size;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  wire::MessageHeader header;
  const absl::Status decoded = wire::DecodeHeader(data, size, &header);
  if (!decoded.ok()) {
    FUZZ_CHECK(demi::ErrnoFromStatus(decoded) == EPROTO);
    return 0;
  }
  FUZZ_CHECK(size >= wire::kHeaderFixedSize);
  if (header.type == wire::MessageType::kBatch) {
    FUZZ_CHECK(header.num_segments >= 2 &&
               header.num_segments <= wire::kMaxBatchMessages);
    WalkBatch(data, size, header.num_segments);
    return 0;
  }
  FUZZ_CHECK(header.num_segments <= wire::kMaxSegments);
  uint64_t payload = 0;
  for (int s = 0; s < header.num_segments; ++s) {
    payload += header.segment_lengths[s];
  }
  const size_t encoded_size = wire::EncodedSize(header);
  if (header.type == wire::MessageType::kData) {
    FUZZ_CHECK(header.num_segments >= 1);
    FUZZ_CHECK(encoded_size + payload == size);
  } else if (header.type == wire::MessageType::kFragmented) {
    // A first part: some of the message's bytes, not all.
    FUZZ_CHECK(header.num_segments >= 1);
    FUZZ_CHECK(size > encoded_size && size - encoded_size < payload);
  } else if (header.type == wire::MessageType::kFragment) {
    FUZZ_CHECK(header.num_segments == 0 && size > encoded_size);
  } else {
    FUZZ_CHECK(encoded_size == size);
  }
  if (header.type == wire::MessageType::kRendezvous) {
    for (int s = 0; s < header.num_segments; ++s) {
      FUZZ_CHECK(header.segment_lengths[s] > 0);
    }
  }
  // Encoding what was decoded gives the input back, reserved bytes zeroed.
  uint8_t expected[wire::kMaxEncodedSize];
  std::memcpy(expected, data, encoded_size);
  expected[5] = expected[6] = expected[7] = 0;
  if (header.type == wire::MessageType::kRendezvous ||
      header.type == wire::MessageType::kRendezvousDone) {
    uint8_t* block = expected + wire::HeaderSize(header.num_segments);
    std::memset(block + 4, 0, 4);
    for (int s = 0; s < header.num_segments; ++s) {
      std::memset(block + 8 + wire::kRemoteSegmentSize * s + 12, 0, 4);
    }
  }
  uint8_t again[wire::kMaxEncodedSize];
  FUZZ_CHECK(wire::EncodeHeader(header, again) == encoded_size);
  FUZZ_CHECK(std::memcmp(again, expected, encoded_size) == 0);
  return 0;
}
