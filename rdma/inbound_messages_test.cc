// InboundMessages without a device: wire messages written into plain
// receive buffers, large messages into a pool with a fake registrar. The
// same paths on the wire are rc_connection_test's and large_message_test's.

#include "rdma/inbound_messages.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/fake_registrar.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/wire.h"

namespace demi::rdma {
namespace {

constexpr uint32_t kBuffers = 8;
constexpr uint32_t kBufferSize = 4096;

// A reported message's bytes, segments joined.
std::string Bytes(const ReceivedMessage& message) {
  std::string bytes;
  for (uint32_t i = 0; i < message.num_segments; ++i) {
    bytes.append(reinterpret_cast<const char*>(message.segment_data[i]),
                 message.segment_lengths[i]);
  }
  return bytes;
}

std::string Pattern(size_t length, char seed) {
  std::string bytes(length, '\0');
  for (size_t i = 0; i < length; ++i) {
    bytes[i] = static_cast<char>(seed + i * 7);
  }
  return bytes;
}

InboundOptions Options(LargeBufferPool* pool, uint64_t quota) {
  InboundOptions options;
  options.receive_buffers = kBuffers;
  options.large_pool = pool;
  options.quota = quota;
  options.read_chunk = 1000;
  return options;
}

class InboundMessagesTest : public ::testing::Test {
 protected:
  explicit InboundMessagesTest(size_t pool_bytes = size_t{64} << 20,
                               uint64_t quota = uint64_t{1} << 30) {
    pool_ = *LargeBufferPool::Create(&registrar_, {.max_bytes = pool_bytes});
    inbound_ = std::make_unique<InboundMessages>(Options(pool_.get(), quota));
    inbound_->set_receive_buffers(memory_.data(), kBufferSize);
  }

  uint8_t* Buffer(uint32_t index) { return &memory_[index * kBufferSize]; }

  // Decodes what buffer `index` holds, as the connection does.
  wire::MessageHeader Decode(uint32_t index, uint32_t length) {
    wire::MessageHeader header;
    absl::Status decoded = wire::DecodeHeader(Buffer(index), length, &header);
    EXPECT_TRUE(decoded.ok()) << decoded;
    return header;
  }

  auto Reporter() {
    return [this](const ReceivedMessage& message) {
      reported_.push_back(Bytes(message));
      reported_buffers_.push_back(message.buffer_index);
    };
  }

  absl::Status Data(uint32_t index, const std::vector<std::string>& segments) {
    const size_t header = wire::EncodeDataHeader(
        0, static_cast<uint8_t>(segments.size()),
        [&](int i) { return static_cast<uint32_t>(segments[i].size()); },
        Buffer(index));
    size_t at = header;
    for (const std::string& s : segments) {
      std::memcpy(Buffer(index) + at, s.data(), s.size());
      at += s.size();
    }
    return inbound_->OnData(index, Decode(index, static_cast<uint32_t>(at)),
                            Reporter());
  }

  absl::Status Batch(uint32_t index, const std::vector<std::string>& messages) {
    wire::EncodeFixedPart(wire::MessageType::kBatch, 0,
                          static_cast<uint8_t>(messages.size()), Buffer(index));
    size_t at = wire::kHeaderFixedSize;
    for (const std::string& m : messages) {
      at += wire::EncodeDataHeader(
          0, 1, [&](int) { return static_cast<uint32_t>(m.size()); },
          Buffer(index) + at);
      std::memcpy(Buffer(index) + at, m.data(), m.size());
      at += m.size();
    }
    return inbound_->OnBatch(index, static_cast<uint32_t>(at),
                             static_cast<uint32_t>(messages.size()),
                             Reporter());
  }

  absl::Status Rendezvous(uint32_t index, const std::vector<uint32_t>& lengths,
                          uint32_t transfer_id) {
    wire::MessageHeader header;
    header.type = wire::MessageType::kRendezvous;
    header.num_segments = static_cast<uint8_t>(lengths.size());
    header.transfer_id = transfer_id;
    for (size_t i = 0; i < lengths.size(); ++i) {
      header.segment_lengths[i] = lengths[i];
      header.remote[i] = {0x100000 * (i + 1), static_cast<uint32_t>(50 + i)};
    }
    const size_t length = wire::EncodeHeader(header, Buffer(index));
    return inbound_->OnRendezvous(index,
                                  Decode(index, static_cast<uint32_t>(length)));
  }

  // The first part of a message of `total` bytes (one segment): `first`.
  absl::Status FirstPart(uint32_t index, uint32_t total,
                         const std::string& first) {
    const size_t header = wire::EncodeDataHeader(
        0, 1, [&](int) { return total; }, Buffer(index),
        wire::MessageType::kFragmented);
    std::memcpy(Buffer(index) + header, first.data(), first.size());
    const uint32_t length = static_cast<uint32_t>(header + first.size());
    return inbound_->OnFirstPart(index, Decode(index, length), length);
  }

  absl::Status Part(uint32_t index, const std::string& bytes) {
    wire::EncodeFixedPart(wire::MessageType::kFragment, 0, 0, Buffer(index));
    std::memcpy(Buffer(index) + wire::kHeaderFixedSize, bytes.data(),
                bytes.size());
    return inbound_->OnPart(
        index, static_cast<uint32_t>(wire::kHeaderFixedSize + bytes.size()));
  }

  absl::Status Advance() { return inbound_->Advance(Reporter()); }

  std::vector<ReadChunk> Reads(uint32_t room = 100) {
    std::vector<ReadChunk> chunks;
    inbound_->PrepareReads(room,
                           [&](const ReadChunk& c) { chunks.push_back(c); });
    return chunks;
  }

  FakeRegistrar registrar_;
  std::unique_ptr<LargeBufferPool> pool_;
  std::vector<uint8_t> memory_ = std::vector<uint8_t>(kBuffers * kBufferSize);
  std::unique_ptr<InboundMessages> inbound_;
  std::vector<std::string> reported_;
  std::vector<uint32_t> reported_buffers_;
};

TEST_F(InboundMessagesTest, DataIsReportedAtOnceAndHeldUntilReleased) {
  ASSERT_TRUE(Data(3, {"hello", "world"}).ok());
  EXPECT_EQ(reported_, std::vector<std::string>{"helloworld"});
  EXPECT_TRUE(inbound_->held(3));
  EXPECT_FALSE(inbound_->waiting());
  ASSERT_TRUE(inbound_->Release(3, /*repost=*/true).ok());
  EXPECT_FALSE(inbound_->held(3));
  EXPECT_EQ(inbound_->releases(), std::vector<uint32_t>{3});
  absl::Status again = inbound_->Release(3, true);
  EXPECT_EQ(ErrnoFromStatus(again), EINVAL) << again;
  EXPECT_EQ(ErrnoFromStatus(inbound_->Release(kBuffers, true)), EINVAL);
}

TEST_F(InboundMessagesTest, BatchBufferGoesBackWithItsLastMessage) {
  ASSERT_TRUE(Batch(1, {"a", "bb", "ccc"}).ok());
  EXPECT_EQ(reported_, (std::vector<std::string>{"a", "bb", "ccc"}));
  for (int k = 0; k < 2; ++k) {
    ASSERT_TRUE(inbound_->Release(1, true).ok());
    EXPECT_TRUE(inbound_->held(1));
    EXPECT_TRUE(inbound_->releases().empty());
  }
  ASSERT_TRUE(inbound_->Release(1, true).ok());
  EXPECT_EQ(inbound_->releases(), std::vector<uint32_t>{1});
}

TEST_F(InboundMessagesTest, ReleaseAfterFailureDoesNotRepost) {
  ASSERT_TRUE(Data(0, {"x"}).ok());
  ASSERT_TRUE(inbound_->Release(0, /*repost=*/false).ok());
  EXPECT_TRUE(inbound_->releases().empty());
  EXPECT_FALSE(inbound_->held(0));
}

TEST_F(InboundMessagesTest, RendezvousIsReadInChunksAndKeepsArrivalOrder) {
  ASSERT_TRUE(Rendezvous(0, {2500, 700}, 0x10005).ok());
  ASSERT_TRUE(Data(1, {"behind"}).ok());
  EXPECT_TRUE(reported_.empty()) << "data waits behind the large message";
  EXPECT_TRUE(inbound_->WaitingForMemory());
  EXPECT_TRUE(Reads().empty()) << "no reads before memory";

  ASSERT_TRUE(Advance().ok());
  EXPECT_FALSE(inbound_->WaitingForMemory());
  ASSERT_NE(inbound_->memory(0), nullptr);
  const std::vector<ReadChunk> chunks = Reads(3);
  ASSERT_EQ(chunks.size(), 3u) << "room for three";
  const std::vector<ReadChunk> rest = Reads();
  ASSERT_EQ(rest.size(), 1u);
  // 2500 in chunks of 1000, then 700: remote addresses and keys per segment,
  // local memory back to back.
  const uintptr_t base =
      reinterpret_cast<uintptr_t>(inbound_->memory(0)->data());
  EXPECT_EQ(chunks[0].length, 1000u);
  EXPECT_EQ(chunks[0].remote_address, 0x100000u);
  EXPECT_EQ(chunks[0].local_address, base);
  EXPECT_EQ(chunks[2].length, 500u);
  EXPECT_EQ(chunks[2].remote_address, 0x100000u + 2000);
  EXPECT_EQ(chunks[2].local_address, base + 2000);
  EXPECT_EQ(rest[0].length, 700u);
  EXPECT_EQ(rest[0].remote_address, 0x200000u);
  EXPECT_EQ(rest[0].rkey, 51u);
  EXPECT_EQ(rest[0].local_address, base + 2500);
  EXPECT_EQ(rest[0].buffer_index, 0u);

  // Complete only when every read is back.
  for (int i = 0; i < 3; ++i) inbound_->OnReadComplete(0, true);
  ASSERT_TRUE(Advance().ok());
  EXPECT_TRUE(reported_.empty());
  EXPECT_TRUE(inbound_->dones().empty());
  inbound_->OnReadComplete(0, true);
  ASSERT_TRUE(Advance().ok());
  ASSERT_EQ(reported_.size(), 2u);
  EXPECT_EQ(reported_[0].size(), 3200u);
  EXPECT_EQ(reported_[1], "behind");
  EXPECT_EQ(reported_buffers_, (std::vector<uint32_t>{0, 1}));
  ASSERT_EQ(inbound_->dones().size(), 1u);
  EXPECT_EQ(inbound_->dones().front(), 0x10005u);
  EXPECT_FALSE(inbound_->waiting());

  EXPECT_EQ(pool_->Stats().in_use, 1u);
  ASSERT_TRUE(inbound_->Release(0, true).ok());
  EXPECT_EQ(pool_->Stats().in_use, 0u) << "memory back at release";
}

TEST_F(InboundMessagesTest, PartsArrivingBeforeMemoryAreHeldThenCopied) {
  const std::string message = Pattern(9000, 'a');
  ASSERT_TRUE(FirstPart(2, 9000, message.substr(0, 4000)).ok());
  EXPECT_TRUE(inbound_->assembling());
  ASSERT_TRUE(Part(5, message.substr(4000, 3000)).ok());
  EXPECT_TRUE(inbound_->held(5)) << "no memory yet: the part waits";
  ASSERT_TRUE(Advance().ok());  // memory: copies the first two parts
  EXPECT_FALSE(inbound_->held(5));
  EXPECT_EQ(inbound_->releases(), std::vector<uint32_t>{5});
  EXPECT_TRUE(reported_.empty());
  ASSERT_TRUE(Part(6, message.substr(7000)).ok());  // copied at once
  EXPECT_FALSE(inbound_->assembling());
  EXPECT_EQ(inbound_->releases(), (std::vector<uint32_t>{5, 6}));
  ASSERT_TRUE(Advance().ok());
  ASSERT_EQ(reported_.size(), 1u);
  EXPECT_EQ(reported_[0], message);
  EXPECT_TRUE(inbound_->dones().empty()) << "no done for a message in parts";
}

TEST_F(InboundMessagesTest, PeerMistakesAboutPartsAreProtocolErrors) {
  EXPECT_EQ(ErrnoFromStatus(Part(1, "stray")), EPROTO);
  ASSERT_TRUE(FirstPart(2, 5000, Pattern(3000, 'q')).ok());
  EXPECT_EQ(ErrnoFromStatus(Part(3, Pattern(2001, 'r'))), EPROTO)
      << "more bytes than the message has";
}

TEST_F(InboundMessagesTest, LargeMessageAboveTheQuotaOrWithoutPoolIsRefused) {
  InboundMessages no_pool(Options(nullptr, 1000));
  no_pool.set_receive_buffers(memory_.data(), kBufferSize);
  ASSERT_TRUE(Rendezvous(0, {100}, 1).ok());  // writes buffer 0
  absl::Status refused =
      no_pool.OnRendezvous(0, Decode(0, wire::RendezvousSize(1)));
  EXPECT_EQ(ErrnoFromStatus(refused), ENOTSUP) << refused;

  InboundMessages small(Options(pool_.get(), 1000));
  small.set_receive_buffers(memory_.data(), kBufferSize);
  ASSERT_TRUE(Rendezvous(1, {1001}, 2).ok());
  refused = small.OnRendezvous(1, Decode(1, wire::RendezvousSize(1)));
  EXPECT_EQ(ErrnoFromStatus(refused), EPROTO) << refused;
  EXPECT_FALSE(small.held(1));
}

class TightPoolTest : public InboundMessagesTest {
 protected:
  TightPoolTest() : InboundMessagesTest(LargeBufferPool::kMinCapacity) {}
};

TEST_F(TightPoolTest, MessageWaitsForMemoryInOrder) {
  const uint32_t size = LargeBufferPool::kMinCapacity;
  ASSERT_TRUE(Rendezvous(0, {size}, 1).ok());
  ASSERT_TRUE(Rendezvous(1, {size}, 2).ok());
  ASSERT_TRUE(Advance().ok());
  EXPECT_NE(inbound_->memory(0), nullptr);
  EXPECT_EQ(inbound_->memory(1), nullptr) << "the pool is at its cap";
  EXPECT_TRUE(inbound_->WaitingForMemory());
  EXPECT_EQ(Reads().size(), static_cast<size_t>((size + 999) / 1000));
  while (inbound_->memory(0) != nullptr && reported_.empty()) {
    inbound_->OnReadComplete(0, true);
    ASSERT_TRUE(Advance().ok());
  }
  ASSERT_EQ(reported_.size(), 1u);
  ASSERT_TRUE(inbound_->Release(0, true).ok());  // memory back to the pool
  ASSERT_TRUE(Advance().ok());
  EXPECT_NE(inbound_->memory(1), nullptr);
  EXPECT_FALSE(inbound_->WaitingForMemory());
}

TEST_F(InboundMessagesTest, DropUnreportedWaitsForReadsInFlight) {
  ASSERT_TRUE(Rendezvous(0, {1500}, 1).ok());
  ASSERT_TRUE(Data(1, {"queued"}).ok());
  ASSERT_TRUE(Advance().ok());
  ASSERT_EQ(Reads().size(), 2u);
  inbound_->OnReadComplete(0, false);
  inbound_->DropUnreported();
  EXPECT_TRUE(inbound_->held(0)) << "a read is still in flight";
  EXPECT_EQ(pool_->Stats().in_use, 1u);
  inbound_->OnReadComplete(0, false);
  inbound_->DropUnreported();
  EXPECT_FALSE(inbound_->held(0));
  EXPECT_FALSE(inbound_->held(1));
  EXPECT_FALSE(inbound_->waiting());
  EXPECT_EQ(pool_->Stats().in_use, 0u);
  ASSERT_TRUE(Advance().ok());
  EXPECT_TRUE(reported_.empty()) << "nothing after a failure";
}

}  // namespace
}  // namespace demi::rdma
