#include "rdma/datagram_wire.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"

namespace demi::rdma::datagram_wire {
namespace {

DatagramHeader Header(int num_segments, uint32_t first_length = 5) {
  DatagramHeader header;
  header.num_segments = static_cast<uint8_t>(num_segments);
  header.source_ipv4 = inet_addr("10.77.0.1");
  header.source_port = 4791;
  for (int i = 0; i < num_segments; ++i) {
    header.segment_lengths[i] = first_length + static_cast<uint32_t>(i);
  }
  return header;
}

// A whole datagram (header + payload) as the receiver sees it after the GRH.
std::vector<uint8_t> Datagram(const DatagramHeader& header) {
  std::vector<uint8_t> datagram(kMaxHeaderSize);
  datagram.resize(EncodeHeader(header, datagram.data()));
  for (int i = 0; i < header.num_segments; ++i) {
    datagram.insert(datagram.end(), header.segment_lengths[i],
                    static_cast<uint8_t>(i));
  }
  return datagram;
}

int DecodeErrno(const std::vector<uint8_t>& datagram) {
  return ErrnoFromStatus(
      DecodeHeader(datagram.data(), datagram.size()).status());
}

TEST(DatagramWireTest, RoundTripEverySegmentCount) {
  for (int n = 1; n <= kMaxSegments; ++n) {
    DatagramHeader sent = Header(n, 100);
    std::vector<uint8_t> datagram = Datagram(sent);
    absl::StatusOr<DatagramHeader> got =
        DecodeHeader(datagram.data(), datagram.size());
    ASSERT_TRUE(got.ok()) << n << ": " << got.status();
    EXPECT_EQ(got->type, DatagramType::kData);
    EXPECT_EQ(got->num_segments, n);
    EXPECT_EQ(got->source_ipv4, sent.source_ipv4);
    EXPECT_EQ(got->source_port, sent.source_port);
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(got->segment_lengths[i], sent.segment_lengths[i]);
    }
  }
}

TEST(DatagramWireTest, LayoutIsAsDocumented) {
  DatagramHeader header = Header(1, 0x0a0b0c0d);
  header.source_port = 0x1234;
  uint8_t bytes[kMaxHeaderSize];
  ASSERT_EQ(EncodeHeader(header, bytes), HeaderSize(1));
  const uint8_t expected[] = {kVersion, 1,    1, 0, 10,   77,   0,    1,
                              0x34,     0x12, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a};
  ASSERT_EQ(sizeof(expected), HeaderSize(1));
  EXPECT_EQ(std::memcmp(bytes, expected, sizeof(expected)), 0);
}

TEST(DatagramWireTest, MalformedIsEPROTO) {
  std::vector<uint8_t> good = Datagram(Header(3));
  ASSERT_TRUE(DecodeHeader(good.data(), good.size()).ok());

  EXPECT_EQ(ErrnoFromStatus(DecodeHeader(nullptr, 20).status()), EPROTO);
  EXPECT_EQ(DecodeErrno(std::vector<uint8_t>(good.begin(), good.begin() + 11)),
            EPROTO);  // shorter than the fixed part
  EXPECT_EQ(DecodeErrno(std::vector<uint8_t>(good.begin(), good.begin() + 20)),
            EPROTO);  // shorter than its segment table

  std::vector<uint8_t> bad = good;
  bad[0] = kVersion + 1;
  EXPECT_EQ(DecodeErrno(bad), EPROTO);
  bad = good;
  bad[1] = 2;  // unknown type
  EXPECT_EQ(DecodeErrno(bad), EPROTO);
  bad = good;
  bad[1] = 0;
  EXPECT_EQ(DecodeErrno(bad), EPROTO);
  bad = good;
  bad[2] = 0;  // no segments
  EXPECT_EQ(DecodeErrno(bad), EPROTO);
  bad = good;
  bad[2] = kMaxSegments + 1;
  EXPECT_EQ(DecodeErrno(bad), EPROTO);

  bad = good;
  bad.push_back(0);  // one byte more than the segments say
  EXPECT_EQ(DecodeErrno(bad), EPROTO);
  bad = good;
  bad.pop_back();  // one byte less
  EXPECT_EQ(DecodeErrno(bad), EPROTO);

  // Lengths whose sum overflows 32 bits must not wrap around to a match.
  DatagramHeader huge = Header(2);
  huge.segment_lengths[0] = 0xffffffffu;
  huge.segment_lengths[1] = 1 + static_cast<uint32_t>(HeaderSize(2));
  uint8_t bytes[kMaxHeaderSize];
  size_t size = EncodeHeader(huge, bytes);
  std::vector<uint8_t> wrapped(bytes, bytes + size);
  EXPECT_EQ(DecodeErrno(wrapped), EPROTO);
}

// An IPv4 header as RoCE v2 leaves it in bytes 20-39 (checksum filled in).
void PutIpv4Header(uint8_t* at, const char* source, const char* destination) {
  uint8_t header[20] = {0x45, 0, 0, 108, 0, 0, 0x40, 0, 64, 17};
  const uint32_t s = inet_addr(source), d = inet_addr(destination);
  std::memcpy(header + 12, &s, 4);
  std::memcpy(header + 16, &d, 4);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += header[i] << 8 | header[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  header[10] = static_cast<uint8_t>(~sum >> 8);
  header[11] = static_cast<uint8_t>(~sum);
  std::memcpy(at, header, sizeof(header));
}

TEST(DatagramWireTest, SourceOfRoceV2Ipv4IsTheIpHeaders) {
  uint8_t network[kGrhSize] = {};
  PutIpv4Header(network + 20, "10.77.0.2", "10.77.0.1");
  EXPECT_EQ(SourceIpv4FromNetworkHeader(network), inet_addr("10.77.0.2"));
  // Whatever the undefined first 20 bytes hold, short of a GRH's version.
  std::memset(network, 0xa5, 20);
  EXPECT_EQ(SourceIpv4FromNetworkHeader(network), inet_addr("10.77.0.2"));
}

TEST(DatagramWireTest, SourceOfAGrhIsItsIpv4MappedGid) {
  uint8_t network[kGrhSize] = {0x60};
  const uint8_t mapped[16] = {0, 0, 0,    0,    0,  0,  0, 0,
                              0, 0, 0xff, 0xff, 10, 77, 0, 3};
  std::memcpy(network + 8, mapped, sizeof(mapped));
  std::memcpy(network + 24, mapped, sizeof(mapped));
  EXPECT_EQ(SourceIpv4FromNetworkHeader(network), inet_addr("10.77.0.3"));
  // A source GID that names no IPv4 address (link-local IPv6).
  network[8] = 0xfe;
  network[9] = 0x80;
  EXPECT_EQ(SourceIpv4FromNetworkHeader(network), std::nullopt);
}

TEST(DatagramWireTest, AGrhThatLooksLikeIpv4ByChanceIsReadAsAGrh) {
  // A mapped source 69.0.0.7 puts 0x45 in byte 20, an IPv4 header's first
  // byte; without a valid checksum it stays a GRH.
  uint8_t network[kGrhSize] = {0x60};
  const uint8_t mapped[16] = {0, 0, 0,    0,    0,  0, 0, 0,
                              0, 0, 0xff, 0xff, 69, 0, 0, 7};
  std::memcpy(network + 8, mapped, sizeof(mapped));
  EXPECT_EQ(SourceIpv4FromNetworkHeader(network), inet_addr("69.0.0.7"));
}

TEST(DatagramWireTest, NoNetworkHeaderHasNoSource) {
  uint8_t network[kGrhSize] = {};
  EXPECT_EQ(SourceIpv4FromNetworkHeader(network), std::nullopt);
  EXPECT_EQ(SourceIpv4FromNetworkHeader(nullptr), std::nullopt);
}

}  // namespace
}  // namespace demi::rdma::datagram_wire
