#include "rdma/send_fifo.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/wire.h"

namespace demi::rdma {
namespace {

constexpr uint32_t kDepth = 8;
constexpr uint32_t kStageKey = 77;

class SendFifoTest : public ::testing::Test {
 protected:
  SendFifoTest() { fifo_.set_stages(stages_.data(), kStageKey); }

  Segment Of(std::string& bytes) {
    return {bytes.data(), static_cast<uint32_t>(bytes.size()), 5, 0};
  }
  // Queues a data send of `bytes`, staged if allowed and it fits.
  bool PushData(std::string& bytes, uint64_t cookie, bool stage = true) {
    const Segment segment = Of(bytes);
    bool staged = false;
    EXPECT_TRUE(
        fifo_.Push(SendKind::kData, {&segment, 1}, cookie, stage, &staged)
            .ok());
    return staged;
  }

  std::vector<uint8_t> stages_ =
      std::vector<uint8_t>(kDepth * SendFifo::kStageSize);
  SendFifo fifo_{kDepth};
};

TEST_F(SendFifoTest, SmallDataIsStagedAndTheCallersMemoryIsFree) {
  std::string bytes = "caller's bytes";
  ASSERT_TRUE(PushData(bytes, 1));
  bytes.assign(bytes.size(), 'X');  // the caller reuses its memory at once
  const QueuedSend& entry = fifo_.front();
  EXPECT_TRUE(entry.reported);
  EXPECT_EQ(entry.segments[0].lkey, kStageKey);
  EXPECT_EQ(std::string(static_cast<const char*>(entry.segments[0].data),
                        entry.segments[0].length),
            "caller's bytes");
}

TEST_F(SendFifoTest, LargeOrUnstageableSendsKeepTheCallersMemory) {
  std::string big(SendFifo::kStageSize + 1, 'b');
  std::string small = "small";
  EXPECT_FALSE(PushData(big, 1));
  EXPECT_FALSE(PushData(small, 2, /*stage=*/false));
  EXPECT_EQ(fifo_[0].segments[0].data, big.data());
  EXPECT_EQ(fifo_[1].segments[0].data, small.data());
  EXPECT_FALSE(fifo_[1].reported);
}

TEST_F(SendFifoTest, LastPlaceIsKeptForTheEndOfStream) {
  std::string bytes = "x";
  for (uint32_t i = 0; i + 1 < kDepth; ++i) PushData(bytes, i);
  EXPECT_TRUE(fifo_.DataFull());
  const Segment segment = Of(bytes);
  bool staged = false;
  absl::Status refused =
      fifo_.Push(SendKind::kData, {&segment, 1}, 99, true, &staged);
  EXPECT_EQ(ErrnoFromStatus(refused), EAGAIN) << refused;
  EXPECT_TRUE(fifo_.Push(SendKind::kEndOfStream, {}, 0, false, &staged).ok());
  refused = fifo_.Push(SendKind::kEndOfStream, {}, 0, false, &staged);
  EXPECT_EQ(ErrnoFromStatus(refused), EAGAIN);
}

TEST_F(SendFifoTest, BatchRunTakesConsecutiveStagedDataWithinTheLimit) {
  std::string a = "aaaa", b = "bbbbbbbb", big(300, 'c'), d = "d";
  PushData(a, 1);
  PushData(b, 2);
  PushData(big, 3);  // not staged: ends the run
  PushData(d, 4);
  EXPECT_EQ(fifo_.BatchRun(0, 4, 1024), 2u);
  EXPECT_EQ(fifo_.BatchRun(2, 2, 1024), 1u);
  EXPECT_EQ(fifo_.BatchRun(3, 1, 1024), 1u) << "one alone is no batch";
  // The limit counts the batch header and each message's header.
  const size_t two = wire::kHeaderFixedSize + wire::HeaderSize(1) + 4 +
                     wire::HeaderSize(1) + 8;
  EXPECT_EQ(fifo_.BatchRun(0, 2, two), 2u);
  EXPECT_EQ(fifo_.BatchRun(0, 2, two - 1), 1u);
}

TEST_F(SendFifoTest, EncodedBatchDecodesToItsMessages) {
  std::string a = "first", b = "second message";
  PushData(a, 1);
  PushData(b, 2);
  uint8_t out[1024];
  const size_t length = fifo_.EncodeBatch(0, 2, /*credits_returned=*/3, out);
  wire::MessageHeader header;
  ASSERT_TRUE(wire::DecodeHeader(out, length, &header).ok());
  EXPECT_EQ(header.type, wire::MessageType::kBatch);
  EXPECT_EQ(header.num_segments, 2);
  EXPECT_EQ(header.credits_returned, 3);
  size_t at = wire::kHeaderFixedSize;
  std::vector<std::string> messages;
  for (int k = 0; k < 2; ++k) {
    wire::MessageHeader entry;
    size_t size = 0;
    ASSERT_TRUE(
        wire::DecodeBatchEntry(out + at, length - at, &entry, &size).ok());
    messages.emplace_back(
        reinterpret_cast<const char*>(out + at + wire::HeaderSize(1)),
        entry.segment_lengths[0]);
    at += size;
  }
  EXPECT_EQ(at, length);
  EXPECT_EQ(messages, (std::vector<std::string>{"first", "second message"}));
}

TEST_F(SendFifoTest, PartsReportOnlyTheLastAndDrainOwesTheRest) {
  std::string message(1000, 'm');
  const Segment segment = Of(message);
  fifo_.PushPart(SendKind::kFirstPart, {&segment, 1}, 7, 0, 400, false);
  fifo_.PushPart(SendKind::kNextPart, {&segment, 1}, 7, 400, 600, true);
  EXPECT_EQ(fifo_[1].part_offset, 400u);
  EXPECT_EQ(fifo_[1].part_bytes, 600u);
  std::string staged = "staged", unstaged = "unstaged";
  PushData(staged, 8);
  PushData(unstaged, 9, /*stage=*/false);
  std::vector<uint64_t> owed;
  fifo_.Drain([&](uint64_t cookie) { owed.push_back(cookie); });
  EXPECT_EQ(owed, (std::vector<uint64_t>{7, 9}))
      << "the last part and the unstaged send; the staged one was done";
  EXPECT_TRUE(fifo_.empty());
}

TEST(PartSendBytesTest, PartsFillWholePacketsWhenTheBufferAllows) {
  // An 8 KiB eager limit and its header, 1024-byte packets: 8 whole ones.
  EXPECT_EQ(PartSendBytes(8192 + wire::kMaxHeaderSize, 1024), 8192u);
  EXPECT_EQ(PartSendBytes(8192 + wire::kMaxHeaderSize, 4096), 8192u);
  // Already whole packets.
  EXPECT_EQ(PartSendBytes(4096, 1024), 4096u);
  // Path MTU unknown: the whole buffer.
  EXPECT_EQ(PartSendBytes(8264, 0), 8264u);
  // A buffer smaller than a packet: the whole buffer.
  EXPECT_EQ(PartSendBytes(300, 1024), 300u);
  EXPECT_EQ(PartSendBytes(300, 256), 256u);
  EXPECT_EQ(PartSendBytes(600, 256), 512u);
}

}  // namespace
}  // namespace demi::rdma
