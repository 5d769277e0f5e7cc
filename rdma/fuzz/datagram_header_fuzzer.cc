// Fuzz target: datagram_wire::DecodeHeader on any datagram a sender could
// put after the GRH. Checks the decoder's contract on the inputs it
// accepts: 1 to kMaxSegments segments that account for exactly the rest,
// and the same header bytes when encoded again (reserved bytes aside).
// The first kGrhSize bytes of every input are also read as a receive's
// network header (SourceIpv4FromNetworkHeader): a source it finds is one of
// the two places an IPv4 source can be (an IPv4 header's source field, an
// IPv4-mapped GID's last four bytes).

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "common/errno_status.h"
#include "rdma/datagram_wire.h"
#include "rdma/fuzz/fuzz_check.h"

namespace dw = demi::rdma::datagram_wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= dw::kGrhSize) {
    const std::optional<uint32_t> source =
        dw::SourceIpv4FromNetworkHeader(data);
    if (source.has_value()) {
      uint32_t from_ipv4_header = 0, from_gid = 0;
      std::memcpy(&from_ipv4_header, data + 32, 4);
      std::memcpy(&from_gid, data + 20, 4);
      FUZZ_CHECK(*source == from_ipv4_header || *source == from_gid);
    }
  }
  absl::StatusOr<dw::DatagramHeader> header = dw::DecodeHeader(data, size);
  if (!header.ok()) {
    FUZZ_CHECK(demi::ErrnoFromStatus(header.status()) == EPROTO);
    return 0;
  }
  FUZZ_CHECK(header->type == dw::DatagramType::kData);
  FUZZ_CHECK(header->num_segments >= 1 &&
             header->num_segments <= dw::kMaxSegments);
  const size_t header_size = dw::HeaderSize(header->num_segments);
  uint64_t payload = 0;
  for (int s = 0; s < header->num_segments; ++s) {
    payload += header->segment_lengths[s];
  }
  FUZZ_CHECK(header_size + payload == size);
  uint8_t expected[dw::kMaxHeaderSize];
  std::memcpy(expected, data, header_size);
  expected[3] = expected[10] = expected[11] = 0;
  uint8_t again[dw::kMaxHeaderSize];
  FUZZ_CHECK(dw::EncodeHeader(*header, again) == header_size);
  FUZZ_CHECK(std::memcmp(again, expected, header_size) == 0);
  return 0;
}
