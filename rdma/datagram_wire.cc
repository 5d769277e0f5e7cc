#include "rdma/datagram_wire.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "rdma/byte_order.h"

namespace demi::rdma::datagram_wire {
namespace {

// The IPv4 header checksum: the ones' complement sum of its ten 16-bit
// words, checksum included, is all ones.
bool Ipv4HeaderChecksumHolds(const uint8_t header[20]) {
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) {
    sum += static_cast<uint32_t>(header[i]) << 8 | header[i + 1];
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

// Layout of the fixed part (12 bytes):
//   0: version  1: type  2: num_segments  3: reserved (0)
//   4-7: source IPv4 (network order)  8-9: source port  10-11: reserved (0)

absl::Status ProtocolError(absl::string_view what) {
  return ErrnoError(EPROTO, absl::StrCat("datagram wire: ", what));
}

}  // namespace

size_t EncodeHeader(const DatagramHeader& header, uint8_t out[kMaxHeaderSize]) {
  out[0] = kVersion;
  out[1] = static_cast<uint8_t>(header.type);
  out[2] = header.num_segments;
  out[3] = 0;
  std::memcpy(out + 4, &header.source_ipv4, 4);  // already network order
  Put16(out + 8, header.source_port);
  out[10] = out[11] = 0;
  for (int i = 0; i < header.num_segments; ++i) {
    Put32(out + kHeaderFixedSize + 4 * i, header.segment_lengths[i]);
  }
  return HeaderSize(header.num_segments);
}

absl::StatusOr<DatagramHeader> DecodeHeader(const uint8_t* datagram,
                                            size_t length) {
  if (datagram == nullptr || length < kHeaderFixedSize) {
    return ProtocolError(
        absl::StrCat("datagram of ", length, " bytes has no header"));
  }
  if (datagram[0] != kVersion) {
    return ProtocolError(absl::StrCat("datagram version ", datagram[0]));
  }
  if (datagram[1] != static_cast<uint8_t>(DatagramType::kData)) {
    return ProtocolError(absl::StrCat("unknown datagram type ", datagram[1]));
  }
  DatagramHeader header;
  header.num_segments = datagram[2];
  if (header.num_segments == 0 || header.num_segments > kMaxSegments) {
    return ProtocolError(
        absl::StrCat(header.num_segments, " segments in one datagram"));
  }
  std::memcpy(&header.source_ipv4, datagram + 4, 4);
  header.source_port = Get16(datagram + 8);
  const size_t header_size = HeaderSize(header.num_segments);
  if (length < header_size) {
    return ProtocolError("datagram shorter than its segment table");
  }
  uint64_t payload = 0;
  for (int i = 0; i < header.num_segments; ++i) {
    header.segment_lengths[i] =
        Get32(datagram + kHeaderFixedSize + 4 * static_cast<size_t>(i));
    payload += header.segment_lengths[i];
  }
  if (header_size + payload != length) {
    return ProtocolError(absl::StrCat("segments hold ", payload,
                                      " bytes but the datagram carries ",
                                      length - header_size));
  }
  return header;
}

std::optional<uint32_t> SourceIpv4FromNetworkHeader(
    const uint8_t network_header[kGrhSize]) {
  if (network_header == nullptr) return std::nullopt;
  // RoCE v2 over IPv4 leaves bytes 0-19 undefined and the IPv4 header (20
  // bytes: version 4, header length 5 words) in bytes 20-39; a GRH starts
  // with IP version 6. Bytes 20-39 of a GRH (the end of the source GID, the
  // destination GID) can look like an IPv4 header by chance, so when byte 0
  // says 6 the IPv4 reading is taken only if its header checksum holds.
  const uint8_t* ip = network_header + 20;
  const bool ipv4_shaped = ip[0] == 0x45;
  const bool grh_shaped = (network_header[0] >> 4) == 6;
  uint32_t ipv4 = 0;
  if (ipv4_shaped && (!grh_shaped || Ipv4HeaderChecksumHolds(ip))) {
    std::memcpy(&ipv4, ip + 12, sizeof(ipv4));  // the source address
    return ipv4;
  }
  // A GRH: the source GID in bytes 8-23 names an IPv4 address only in its
  // IPv4-mapped form (::ffff:a.b.c.d).
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0,    0,
                                                0, 0, 0, 0, 0xff, 0xff};
  if (grh_shaped && std::memcmp(network_header + 8, kMappedPrefix,
                                sizeof(kMappedPrefix)) == 0) {
    std::memcpy(&ipv4, network_header + 20, sizeof(ipv4));
    return ipv4;
  }
  return std::nullopt;
}

}  // namespace demi::rdma::datagram_wire
