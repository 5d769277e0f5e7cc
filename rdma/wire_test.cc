#include "rdma/wire.h"

#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "common/errno_status.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"

namespace demi::rdma::wire {
namespace {

// A header of `type`, everything else zero.
MessageHeader Header(MessageType type, uint8_t num_segments = 0,
                     uint16_t credits_returned = 0) {
  MessageHeader header{};
  header.type = type;
  header.num_segments = num_segments;
  header.credits_returned = credits_returned;
  return header;
}

// DecodeHeader as a value, for the checks below.
absl::StatusOr<MessageHeader> Decoded(const uint8_t* message, size_t length) {
  MessageHeader header{};
  absl::Status decoded = DecodeHeader(message, length, &header);
  if (!decoded.ok()) return decoded;
  return header;
}

TEST(WireTest, ConnectionParamsRoundTrip) {
  uint8_t bytes[kConnectionParamsSize];
  EncodeConnectionParams({.receive_buffers = 64, .receive_buffer_size = 8264},
                         bytes);
  EXPECT_EQ(bytes[0], kVersion);
  auto params = DecodeConnectionParams(bytes, sizeof(bytes));
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->receive_buffers, 64);
  EXPECT_EQ(params->receive_buffer_size, 8264u);
  EXPECT_FALSE(params->rendezvous);
  EXPECT_EQ(params->rendezvous_quota, 0u);
  EncodeConnectionParams({.receive_buffers = 3,
                          .receive_buffer_size = 400,
                          .rendezvous = true,
                          .rendezvous_quota = uint64_t{5} << 30},
                         bytes);
  params = DecodeConnectionParams(bytes, sizeof(bytes));
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_TRUE(params->rendezvous);
  EXPECT_EQ(params->rendezvous_quota, uint64_t{5} << 30);
}

TEST(WireTest, RendezvousFlagAndQuotaMustAgree) {
  uint8_t bytes[kConnectionParamsSize];
  // Without rendezvous no quota is sent, whatever the struct held.
  EncodeConnectionParams({.receive_buffers = 3,
                          .receive_buffer_size = 400,
                          .rendezvous_quota = 1 << 20},
                         bytes);
  EXPECT_EQ(DecodeConnectionParams(bytes, sizeof(bytes))->rendezvous_quota, 0u);
  // Rendezvous with no quota, and a quota without rendezvous: EPROTO.
  EncodeConnectionParams(
      {.receive_buffers = 3, .receive_buffer_size = 400, .rendezvous = true},
      bytes);
  EXPECT_EQ(
      ErrnoFromStatus(DecodeConnectionParams(bytes, sizeof(bytes)).status()),
      EPROTO);
  bytes[1] = 0;
  bytes[8] = 1;
  EXPECT_EQ(
      ErrnoFromStatus(DecodeConnectionParams(bytes, sizeof(bytes)).status()),
      EPROTO);
}

TEST(WireTest, ConnectionParamsAreLittleEndian) {
  uint8_t bytes[kConnectionParamsSize];
  EncodeConnectionParams(
      {.receive_buffers = 0x0102, .receive_buffer_size = 0x0a0b0c0d}, bytes);
  const uint8_t expected[] = {kVersion, 0, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a,
                              0,        0, 0,    0,    0,    0,    0,    0};
  EXPECT_EQ(std::memcmp(bytes, expected, sizeof(expected)), 0);
}

TEST(WireTest, BadConnectionParamsAreEPROTO) {
  uint8_t bytes[kConnectionParamsSize];
  EncodeConnectionParams({.receive_buffers = 4, .receive_buffer_size = 4096},
                         bytes);
  EXPECT_EQ(
      ErrnoFromStatus(
          DecodeConnectionParams(bytes, kConnectionParamsSize - 1).status()),
      EPROTO);
  EXPECT_EQ(
      ErrnoFromStatus(
          DecodeConnectionParams(nullptr, kConnectionParamsSize).status()),
      EPROTO);
  uint8_t wrong_version[kConnectionParamsSize];
  std::memcpy(wrong_version, bytes, sizeof(bytes));
  wrong_version[0] = kVersion + 1;
  EXPECT_EQ(ErrnoFromStatus(
                DecodeConnectionParams(wrong_version, sizeof(bytes)).status()),
            EPROTO);
  uint8_t no_buffers[kConnectionParamsSize];
  EncodeConnectionParams({.receive_buffers = 0, .receive_buffer_size = 4096},
                         no_buffers);
  EXPECT_EQ(ErrnoFromStatus(
                DecodeConnectionParams(no_buffers, sizeof(bytes)).status()),
            EPROTO);
}

// Builds a whole message (header + payload) as the receiver sees it.
std::vector<uint8_t> Message(const MessageHeader& header) {
  std::vector<uint8_t> message(kMaxEncodedSize);
  size_t size = EncodeHeader(header, message.data());
  message.resize(size);
  for (int i = 0; i < header.num_segments; ++i) {
    message.insert(message.end(), header.segment_lengths[i],
                   static_cast<uint8_t>(i));
  }
  return message;
}

TEST(WireTest, HeaderRoundTripsForEverySegmentCount) {
  std::mt19937 random(7);
  for (int n = 1; n <= kMaxSegments; ++n) {
    MessageHeader header;
    header.type = MessageType::kData;
    header.credits_returned = static_cast<uint16_t>(random());
    header.num_segments = static_cast<uint8_t>(n);
    for (int i = 0; i < n; ++i) header.segment_lengths[i] = random() % 300;
    std::vector<uint8_t> message = Message(header);
    EXPECT_EQ(
        EncodeHeader(header, std::vector<uint8_t>(kMaxEncodedSize).data()),
        HeaderSize(n));
    auto decoded = Decoded(message.data(), message.size());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->type, MessageType::kData);
    EXPECT_EQ(decoded->credits_returned, header.credits_returned);
    ASSERT_EQ(decoded->num_segments, n);
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(decoded->segment_lengths[i], header.segment_lengths[i]);
    }
  }
}

TEST(WireTest, ControlMessagesHaveNoSegments) {
  for (MessageType type :
       {MessageType::kCreditUpdate, MessageType::kEndOfStream}) {
    MessageHeader header = Header(type, 0, 9);
    std::vector<uint8_t> message = Message(header);
    EXPECT_EQ(message.size(), kHeaderFixedSize);
    auto decoded = Decoded(message.data(), message.size());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->type, type);
    EXPECT_EQ(decoded->credits_returned, 9);
  }
}

TEST(WireTest, MalformedMessagesAreEPROTO) {
  MessageHeader header = Header(MessageType::kData, 2);
  header.segment_lengths[0] = 10;
  header.segment_lengths[1] = 20;
  std::vector<uint8_t> good = Message(header);
  ASSERT_TRUE(Decoded(good.data(), good.size()).ok());

  auto expect_eproto = [](std::vector<uint8_t> message, size_t length) {
    EXPECT_EQ(ErrnoFromStatus(Decoded(message.data(), length).status()),
              EPROTO);
  };
  expect_eproto(good, good.size() - 1);  // payload shorter than declared
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  expect_eproto(longer, longer.size());  // payload longer than declared
  expect_eproto(good, 4);                // no header at all
  expect_eproto(good, 12);               // segment table cut short
  std::vector<uint8_t> bad = good;
  bad[0] = kVersion + 1;
  expect_eproto(bad, bad.size());
  bad = good;
  bad[1] = 0;
  expect_eproto(bad, bad.size());  // unknown type
  bad = good;
  bad[1] = 77;
  expect_eproto(bad, bad.size());
  bad = good;
  bad[4] = kMaxSegments + 1;
  expect_eproto(bad, bad.size());
  bad = good;
  bad[1] = static_cast<uint8_t>(MessageType::kCreditUpdate);
  expect_eproto(bad, bad.size());  // control message with segments
  MessageHeader empty_data = Header(MessageType::kData);
  std::vector<uint8_t> no_segments = Message(empty_data);
  expect_eproto(no_segments, no_segments.size());
  for (int reserved : {5, 6, 7}) {  // the fixed part's reserved bytes
    bad = good;
    bad[reserved] = 1;
    expect_eproto(bad, bad.size());
  }
}

// A batch as the sender lays it out: the fixed part (kBatch, the count),
// then each message as a data SEND would carry it, credits 0.
std::vector<uint8_t> Batch(uint16_t credits,
                           const std::vector<std::vector<uint32_t>>& messages) {
  std::vector<uint8_t> out(kHeaderFixedSize);
  EncodeFixedPart(MessageType::kBatch, credits,
                  static_cast<uint8_t>(messages.size()), out.data());
  uint8_t fill = 1;
  for (const std::vector<uint32_t>& lengths : messages) {
    const size_t at = out.size();
    out.resize(at + HeaderSize(static_cast<int>(lengths.size())));
    EncodeDataHeader(
        0, static_cast<uint8_t>(lengths.size()),
        [&](int i) { return lengths[i]; }, out.data() + at);
    for (uint32_t length : lengths) out.insert(out.end(), length, fill++);
  }
  return out;
}

// Decodes every entry of `batch`; EPROTO (or another error) as Decode does.
absl::StatusOr<std::vector<std::vector<uint32_t>>> DecodeBatch(
    const std::vector<uint8_t>& batch) {
  MessageHeader header;
  DEMI_RETURN_IF_ERROR(DecodeHeader(batch.data(), batch.size(), &header));
  if (header.type != MessageType::kBatch) {
    return absl::InternalError("not a batch");
  }
  std::vector<std::vector<uint32_t>> messages;
  size_t at = kHeaderFixedSize;
  for (int m = 0; m < header.num_segments; ++m) {
    MessageHeader entry;
    size_t size = 0;
    DEMI_RETURN_IF_ERROR(
        DecodeBatchEntry(batch.data() + at, batch.size() - at, &entry, &size));
    messages.emplace_back(entry.segment_lengths,
                          entry.segment_lengths + entry.num_segments);
    at += size;
  }
  if (at != batch.size()) return absl::InternalError("bytes left over");
  return messages;
}

// A first part: the whole message's lengths, then at least one of its bytes
// and fewer than all; EncodeDataHeader writes it as EncodeHeader does.
TEST(WireTest, FirstPartCarriesTheWholeMessagesLengths) {
  MessageHeader header = Header(MessageType::kFragmented, 2, 5);
  header.segment_lengths[0] = 10000;
  header.segment_lengths[1] = 20;
  uint8_t encoded[kMaxEncodedSize];
  ASSERT_EQ(EncodeHeader(header, encoded), HeaderSize(2));
  uint8_t fast[kMaxEncodedSize];
  ASSERT_EQ(EncodeDataHeader(
                5, 2, [&](int i) { return header.segment_lengths[i]; }, fast,
                MessageType::kFragmented),
            HeaderSize(2));
  EXPECT_EQ(std::vector<uint8_t>(encoded, encoded + HeaderSize(2)),
            std::vector<uint8_t>(fast, fast + HeaderSize(2)));
  std::vector<uint8_t> message(encoded, encoded + HeaderSize(2));
  for (size_t part : {size_t{1}, size_t{8000}, size_t{10019}}) {
    message.resize(HeaderSize(2) + part, 'x');
    auto decoded = Decoded(message.data(), message.size());
    ASSERT_TRUE(decoded.ok()) << part << ": " << decoded.status();
    EXPECT_EQ(decoded->type, MessageType::kFragmented);
    EXPECT_EQ(decoded->credits_returned, 5);
    EXPECT_EQ(decoded->segment_lengths[0], 10000u);
    EXPECT_EQ(decoded->segment_lengths[1], 20u);
  }
  for (size_t part : {size_t{0}, size_t{10020}, size_t{10021}}) {
    message.resize(HeaderSize(2) + part, 'x');
    EXPECT_EQ(ErrnoFromStatus(Decoded(message.data(), message.size()).status()),
              EPROTO)
        << part << " bytes in the first part";
  }
  // No segments: a first part of nothing.
  MessageHeader none = Header(MessageType::kFragmented, 0);
  uint8_t bytes[kMaxEncodedSize];
  std::vector<uint8_t> empty(bytes, bytes + EncodeHeader(none, bytes));
  empty.push_back('x');
  EXPECT_EQ(ErrnoFromStatus(Decoded(empty.data(), empty.size()).status()),
            EPROTO);
}

// A next part: the fixed part (no segments), then at least one byte.
TEST(WireTest, NextPartIsTheFixedPartAndBytes) {
  uint8_t fixed[kHeaderFixedSize];
  EncodeFixedPart(MessageType::kFragment, 3, 0, fixed);
  std::vector<uint8_t> message(fixed, fixed + kHeaderFixedSize);
  EXPECT_EQ(ErrnoFromStatus(Decoded(message.data(), message.size()).status()),
            EPROTO);  // empty
  message.resize(kHeaderFixedSize + 8120, 'y');
  auto decoded = Decoded(message.data(), message.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->type, MessageType::kFragment);
  EXPECT_EQ(decoded->credits_returned, 3);
  message[4] = 1;  // a segment count on a next part
  EXPECT_EQ(ErrnoFromStatus(Decoded(message.data(), message.size()).status()),
            EPROTO);
}

TEST(WireTest, BatchEntriesDecodeInOrder) {
  const std::vector<std::vector<uint32_t>> messages = {
      {64}, {1, 2, 3}, {100}, std::vector<uint32_t>(kMaxSegments, 1)};
  std::vector<uint8_t> batch = Batch(7, messages);
  MessageHeader header;
  ASSERT_TRUE(DecodeHeader(batch.data(), batch.size(), &header).ok());
  EXPECT_EQ(header.type, MessageType::kBatch);
  EXPECT_EQ(header.credits_returned, 7);
  EXPECT_EQ(header.num_segments, messages.size());
  absl::StatusOr<std::vector<std::vector<uint32_t>>> decoded =
      DecodeBatch(batch);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, messages);
  // The payload of entry 1 follows its header: bytes 2, 3 and 4 of `fill`.
  const size_t second = kHeaderFixedSize + HeaderSize(1) + 64;
  EXPECT_EQ(batch[second + HeaderSize(3)], 2);
}

TEST(WireTest, MalformedBatchesAreEPROTO) {
  const std::vector<uint8_t> good = Batch(0, {{10}, {20, 5}});
  ASSERT_TRUE(DecodeBatch(good).ok());
  auto expect_eproto = [](const std::vector<uint8_t>& batch) {
    absl::StatusOr<std::vector<std::vector<uint32_t>>> decoded =
        DecodeBatch(batch);
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(ErrnoFromStatus(decoded.status()), EPROTO) << decoded.status();
  };
  std::vector<uint8_t> bad = good;
  bad[4] = 1;  // a batch of one
  expect_eproto(bad);
  bad[4] = kMaxBatchMessages + 1;
  expect_eproto(bad);
  bad[4] = 3;  // more entries than the bytes hold
  expect_eproto(bad);
  bad = good;
  bad[kHeaderFixedSize + 2] = 1;  // an entry returning credits
  expect_eproto(bad);
  bad = good;
  bad[kHeaderFixedSize + 1] = static_cast<uint8_t>(MessageType::kBatch);
  expect_eproto(bad);  // a batch inside a batch
  bad = good;
  bad[kHeaderFixedSize + 4] = 0;  // an entry without segments
  expect_eproto(bad);
  bad = good;
  bad[kHeaderFixedSize + 6] = 1;  // an entry with a reserved byte set
  expect_eproto(bad);
  bad = good;
  bad.resize(bad.size() - 1);  // the last entry cut short
  expect_eproto(bad);
  bad = good;
  bad[kHeaderFixedSize + kHeaderFixedSize] = 200;  // first entry too long
  expect_eproto(bad);
}

TEST(WireTest, RendezvousRoundTripsForEverySegmentCount) {
  std::mt19937_64 random(11);
  for (int n = 1; n <= kMaxSegments; ++n) {
    MessageHeader header =
        Header(MessageType::kRendezvous, static_cast<uint8_t>(n), 3);
    header.transfer_id = static_cast<uint32_t>(random());
    for (int i = 0; i < n; ++i) {
      header.segment_lengths[i] = 1 + static_cast<uint32_t>(random() >> 34);
      header.remote[i] = {random(), static_cast<uint32_t>(random())};
    }
    uint8_t out[kMaxEncodedSize];
    const size_t size = EncodeHeader(header, out);
    EXPECT_EQ(size, RendezvousSize(n));
    auto decoded = Decoded(out, size);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->type, MessageType::kRendezvous);
    EXPECT_EQ(decoded->transfer_id, header.transfer_id);
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(decoded->segment_lengths[i], header.segment_lengths[i]);
      EXPECT_EQ(decoded->remote[i], header.remote[i]);
    }
    // One byte more or less is malformed.
    EXPECT_EQ(ErrnoFromStatus(Decoded(out, size - 1).status()), EPROTO);
  }
}

TEST(WireTest, RendezvousDoneRoundTrips) {
  MessageHeader header = Header(MessageType::kRendezvousDone, 0, 5);
  header.transfer_id = 0xdeadbeef;
  uint8_t out[kMaxEncodedSize];
  ASSERT_EQ(EncodeHeader(header, out), kRendezvousDoneSize);
  auto decoded = Decoded(out, kRendezvousDoneSize);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->transfer_id, 0xdeadbeef);
  EXPECT_EQ(decoded->credits_returned, 5);
  EXPECT_EQ(ErrnoFromStatus(Decoded(out, kHeaderFixedSize).status()), EPROTO);
}

TEST(WireTest, MalformedRendezvousIsEPROTO) {
  MessageHeader header = Header(MessageType::kRendezvous, 2);
  header.segment_lengths[0] = 100;
  header.segment_lengths[1] = 0;  // empty segment
  uint8_t out[kMaxEncodedSize];
  const size_t size = EncodeHeader(header, out);
  EXPECT_EQ(ErrnoFromStatus(Decoded(out, size).status()), EPROTO);
  header.num_segments = 0;  // none at all
  const size_t none = EncodeHeader(header, out);
  EXPECT_EQ(ErrnoFromStatus(Decoded(out, none).status()), EPROTO);
  // Reserved bytes: after the transfer id, and after each segment's key.
  header.num_segments = 1;
  const size_t one = EncodeHeader(header, out);
  ASSERT_TRUE(Decoded(out, one).ok());
  for (size_t reserved : {HeaderSize(1) + 4, HeaderSize(1) + 8 + 12}) {
    uint8_t bad[kMaxEncodedSize];
    std::memcpy(bad, out, one);
    bad[reserved] = 1;
    EXPECT_EQ(ErrnoFromStatus(Decoded(bad, one).status()), EPROTO) << reserved;
  }
}

}  // namespace
}  // namespace demi::rdma::wire
