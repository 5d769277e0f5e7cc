// The datagram wire format: the header at the start of every datagram a
// SOCK_DGRAM socket sends over an unreliable-datagram queue pair. See
// datagram_wire.md for the layout and the rules for changing it.
//
// A UD receive shows the sender only through its GID (in the GRH) and queue
// pair number, so the header carries the sender's bound IPv4 address and
// port (what demi_pop reports in sga_addr) and the segment lengths (one push
// is one pop, with the same segments).
//
// Multi-byte integers are little-endian, as in wire.h; the IPv4 address is
// carried as its four octets in network order (as in sin_addr). EncodeHeader
// writes exactly HeaderSize() bytes and cannot fail; DecodeHeader checks
// everything a peer could get wrong and returns EPROTO rather than trusting
// it. Pure functions, thread-safe.

#ifndef DEMI_RDMA_DATAGRAM_WIRE_H_
#define DEMI_RDMA_DATAGRAM_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"

namespace demi::rdma::datagram_wire {

// Bumped on any change a version-1 receiver would misread; a datagram of
// another version is dropped (and counted as malformed) by the receiver.
inline constexpr uint8_t kVersion = 1;

// Most segments one datagram carries (DEMI_SGARRAY_MAXSIZE).
inline constexpr int kMaxSegments = 16;

// Bytes a UD receive buffer reserves for the Global Routing Header before the
// datagram itself (always, whether or not the sender's packet had one).
inline constexpr size_t kGrhSize = 40;

enum class DatagramType : uint8_t {
  kData = 1,  // an application datagram (one pushto = one pop)
};

struct DatagramHeader {
  DatagramType type = DatagramType::kData;
  uint8_t num_segments = 0;  // 1..kMaxSegments
  uint32_t source_ipv4 = 0;  // the sender's bound address, network order
  uint16_t source_port = 0;  // the sender's bound port, host order
  uint32_t segment_lengths[kMaxSegments] = {};
};

// Fixed part, then 4 bytes per segment.
inline constexpr size_t kHeaderFixedSize = 12;
inline constexpr size_t kMaxHeaderSize = kHeaderFixedSize + 4 * kMaxSegments;
static_assert(kHeaderFixedSize == 12, "header layout changed: bump kVersion");
static_assert(kMaxHeaderSize == 76, "header layout changed: bump kVersion");

inline constexpr size_t HeaderSize(int num_segments) {
  return kHeaderFixedSize + 4 * static_cast<size_t>(num_segments);
}

// Writes HeaderSize(header.num_segments) bytes to `out` and returns that
// size. The caller keeps num_segments in 1..kMaxSegments.
size_t EncodeHeader(const DatagramHeader& header, uint8_t out[kMaxHeaderSize]);

// Decodes the header of a received datagram of `length` bytes (after the
// GRH) and checks that its segments account for exactly the rest of it.
// EPROTO for anything else: short, other version or type, no or too many
// segments, lengths that do not add up.
absl::StatusOr<DatagramHeader> DecodeHeader(const uint8_t* datagram,
                                            size_t length);

// The sender's IPv4 address (network order) from the network header a UD
// receive leaves in the first kGrhSize bytes of its buffer (when the
// completion has IBV_WC_GRH): what the packet really came from, whatever its
// datagram header claims. RoCE v2 over IPv4 leaves the IPv4 header in the
// last 20 bytes (version 4 in byte 20); a GRH (RoCE v1, IPv6) carries the
// source GID in bytes 8-23, IPv4-mapped (::ffff:a.b.c.d) for an IPv4
// address. Nullopt for anything else (no IPv4 source to compare with).
std::optional<uint32_t> SourceIpv4FromNetworkHeader(
    const uint8_t network_header[kGrhSize]);

}  // namespace demi::rdma::datagram_wire

#endif  // DEMI_RDMA_DATAGRAM_WIRE_H_
