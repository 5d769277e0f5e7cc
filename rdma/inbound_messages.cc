#include "rdma/inbound_messages.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace demi::rdma {
namespace {

// The bytes a message's segments add up to (a large message: what the
// receiver allocates and the quota counts).
uint64_t MessageBytes(const wire::MessageHeader& header) {
  uint64_t total = 0;
  for (uint8_t i = 0; i < header.num_segments; ++i) {
    total += header.segment_lengths[i];
  }
  return total;
}

}  // namespace

InboundMessages::InboundMessages(const InboundOptions& options)
    : options_(options),
      held_(options.receive_buffers, 0),
      inbound_(options.receive_buffers),
      arrival_(options.receive_buffers),
      dones_(options.receive_buffers),
      batch_(wire::kMaxBatchMessages) {
  releases_.reserve(options.receive_buffers);
}

InboundMessages::~InboundMessages() {
  for (Inbound& inbound : inbound_) FreeMemory(inbound);
}

void InboundMessages::FreeMemory(Inbound& inbound) {
  if (inbound.memory == nullptr) return;
  absl::Status freed = options_.large_pool->Free(inbound.memory);
  if (!freed.ok()) DEMI_LOG(kError, "large message memory: ", freed.message());
  inbound.memory = nullptr;
  bytes_held_ -= inbound.bytes;
  inbound.bytes = 0;
}

absl::Status InboundMessages::OnBatch(uint32_t index, uint32_t length,
                                      uint32_t count, Report report) {
  DEMI_RETURN_IF_ERROR(DecodeBatch(index, length, count));
  held_[index] = static_cast<uint8_t>(count);  // one Release() each
  if (arrival_.empty()) {
    for (uint32_t k = 0; k < count; ++k) report(batch_[k]);
    return absl::OkStatus();
  }
  Inbound& inbound = inbound_[index];
  inbound.state = Inbound::State::kEager;
  inbound.batch_messages = static_cast<uint8_t>(count);
  inbound.batch_bytes = length;
  return Arrive(index);
}

absl::Status InboundMessages::OnRendezvous(uint32_t index,
                                           const wire::MessageHeader& header) {
  DEMI_RETURN_IF_ERROR(CheckLarge(header));
  Inbound& inbound = inbound_[index];
  inbound.header = header;
  inbound.state = Inbound::State::kWaitingForMemory;
  inbound.reads_in_flight = 0;
  held_[index] = 1;      // until the message is released
  return Arrive(index);  // Advance takes its memory
}

absl::Status InboundMessages::OnFirstPart(uint32_t index,
                                          const wire::MessageHeader& header,
                                          uint32_t length) {
  DEMI_RETURN_IF_ERROR(CheckLarge(header));
  Inbound& inbound = inbound_[index];
  inbound.header = header;
  // The decoder checked that the part is smaller than the message.
  inbound.first_part =
      static_cast<uint32_t>(length - wire::HeaderSize(header.num_segments));
  inbound.copied = 0;
  inbound.held_parts_head = inbound.held_parts_tail = -1;
  inbound.state = Inbound::State::kWaitingForMemory;
  held_[index] = 1;  // until the message is released
  assembling_ = index;
  assembly_arrived_ = inbound.first_part;
  return Arrive(index);  // Advance takes its memory
}

absl::Status InboundMessages::OnPart(uint32_t index, uint32_t length) {
  if (assembling_ < 0) return ErrnoError(EPROTO, "a part of no message");
  const uint32_t first = static_cast<uint32_t>(assembling_);
  Inbound& message = inbound_[first];
  const uint64_t total = MessageBytes(message.header);
  const uint32_t bytes = length - wire::kHeaderFixedSize;
  if (assembly_arrived_ + bytes > total) {
    return ErrnoError(EPROTO,
                      absl::StrCat("parts of ", assembly_arrived_ + bytes,
                                   " bytes for a message of ", total));
  }
  assembly_arrived_ += bytes;
  if (assembly_arrived_ == total) assembling_ = -1;  // every part is in
  if (message.state != Inbound::State::kAssembling) {
    // No memory yet: the buffer waits with its message (the peer's credits
    // run down meanwhile: backpressure).
    held_[index] = 1;
    Inbound& part = inbound_[index];
    part.part_length = bytes;
    part.next_part = -1;
    if (message.held_parts_tail < 0) {
      message.held_parts_head = static_cast<int32_t>(index);
    } else {
      inbound_[message.held_parts_tail].next_part = static_cast<int32_t>(index);
    }
    message.held_parts_tail = static_cast<int32_t>(index);
    return absl::OkStatus();
  }
  CopyPart(message, ReceiveBuffer(index) + wire::kHeaderFixedSize, bytes);
  releases_.push_back(index);  // back to the peer (with the next batch)
  return absl::OkStatus();
}

absl::Status InboundMessages::CheckLarge(
    const wire::MessageHeader& header) const {
  const char* what = header.type == wire::MessageType::kRendezvous
                         ? "a rendezvous message"
                         : "a message in parts";
  if (options_.large_pool == nullptr) {
    return ErrnoError(ENOTSUP, absl::StrCat("peer sent ", what, "; no pool"));
  }
  const uint64_t total = MessageBytes(header);
  if (total > options_.quota) {
    return ErrnoError(
        EPROTO, absl::StrCat("peer sent ", what, " of ", total,
                             " bytes, above its quota of ", options_.quota));
  }
  return absl::OkStatus();
}

absl::Status InboundMessages::Arrive(uint32_t index) {
  // A receive buffer arrives once until released, so the ring (one place
  // per buffer) always has room; if not, this side's books are wrong.
  if (!arrival_.push_back(index)) {
    return ErrnoError(EIO, "more arrivals than receive buffers");
  }
  return absl::OkStatus();
}

absl::Status InboundMessages::DecodeBatch(uint32_t index, uint32_t length,
                                          uint32_t count) {
  const uint8_t* buffer = ReceiveBuffer(index);
  size_t at = wire::kHeaderFixedSize;
  wire::MessageHeader entry;
  for (uint32_t k = 0; k < count; ++k) {
    size_t size = 0;
    DEMI_RETURN_IF_ERROR(
        wire::DecodeBatchEntry(buffer + at, length - at, &entry, &size));
    Describe(entry, buffer + at + wire::HeaderSize(entry.num_segments), index,
             k, &batch_[k]);
    at += size;
  }
  if (at != length) {
    return ErrnoError(EPROTO, absl::StrCat("batch of ", length, " bytes has ",
                                           length - at, " left over"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LargeBuffer*> InboundMessages::AllocateLarge(size_t bytes) {
  absl::StatusOr<LargeBuffer*> memory = options_.large_pool->Allocate(bytes);
  if (!memory.ok() && ErrnoFromStatus(memory.status()) == ENOMEM &&
      options_.relieve_pinning && options_.relieve_pinning()) {
    memory = options_.large_pool->Allocate(bytes);
  }
  return memory;
}

absl::Status InboundMessages::Advance(Report report) {
  // Memory, in arrival order: a message the pool cannot serve yet waits,
  // and so do the ones behind it.
  for (uint32_t a = 0; a < arrival_.size(); ++a) {
    const uint32_t arrived = arrival_[a];
    Inbound& inbound = inbound_[arrived];
    if (inbound.state != Inbound::State::kWaitingForMemory) continue;
    const uint64_t total = MessageBytes(inbound.header);
    // Within the quota: the arrival checked the message alone; here the
    // messages of this connection holding memory too.
    if (bytes_held_ + total > options_.quota) break;
    absl::StatusOr<LargeBuffer*> memory = AllocateLarge(total);
    if (!memory.ok()) {
      if (ErrnoFromStatus(memory.status()) == EAGAIN) break;
      return memory.status();  // larger than the receiver will ever take
    }
    inbound.memory = *memory;
    inbound.bytes = total;
    bytes_held_ += total;
    if (inbound.header.type == wire::MessageType::kFragmented) {
      StartAssembly(arrived);
      continue;
    }
    inbound.state = Inbound::State::kReading;
    inbound.next_segment = 0;
    inbound.next_offset = 0;
  }
  // Report complete messages at the head, in order.
  while (!arrival_.empty()) {
    const uint32_t index = arrival_.front();
    Inbound& inbound = inbound_[index];
    if (inbound.state == Inbound::State::kWaitingForMemory ||
        inbound.state == Inbound::State::kReading ||
        inbound.state == Inbound::State::kAssembling) {
      break;
    }
    arrival_.pop_front();
    if (inbound.state == Inbound::State::kRead) {
      // A rendezvous message: the sender may reuse its memory now. A done
      // is owed per transfer read, and the peer announces at most one per
      // receive buffer before it hears back, so the ring holds them all
      // unless the peer broke the credit rules.
      if (inbound.header.type == wire::MessageType::kRendezvous &&
          !dones_.push_back(inbound.header.transfer_id)) {
        return ErrnoError(EPROTO,
                          "more rendezvous dones owed than the peer could "
                          "announce");
      }
      inbound.message = ReceivedMessage{};
      Describe(inbound.header,
               static_cast<const uint8_t*>(inbound.memory->data()), index, 0,
               &inbound.message);
    }
    inbound.state = Inbound::State::kEager;  // reported: nothing left
    if (inbound.batch_messages == 0) {
      report(inbound.message);
      continue;
    }
    const uint32_t count = inbound.batch_messages;
    inbound.batch_messages = 0;
    // Decoded fine on arrival: an error here is this side's.
    if (absl::Status status = DecodeBatch(index, inbound.batch_bytes, count);
        !status.ok()) {
      return ErrnoError(EIO, status.message());
    }
    for (uint32_t k = 0; k < count; ++k) report(batch_[k]);
  }
  return absl::OkStatus();
}

bool InboundMessages::WaitingForMemory() const {
  for (uint32_t a = 0; a < arrival_.size(); ++a) {
    if (inbound_[arrival_[a]].state == Inbound::State::kWaitingForMemory) {
      return true;
    }
  }
  return false;
}

void InboundMessages::StartAssembly(uint32_t first) {
  Inbound& message = inbound_[first];
  message.state = Inbound::State::kAssembling;
  message.copied = 0;
  CopyPart(message,
           ReceiveBuffer(first) + wire::HeaderSize(message.header.num_segments),
           message.first_part);
  for (int32_t p = message.held_parts_head; p >= 0;) {
    Inbound& part = inbound_[p];
    CopyPart(message, ReceiveBuffer(p) + wire::kHeaderFixedSize,
             part.part_length);
    held_[p] = 0;
    releases_.push_back(static_cast<uint32_t>(p));
    p = part.next_part;
  }
  message.held_parts_head = message.held_parts_tail = -1;
}

void InboundMessages::CopyPart(Inbound& message, const uint8_t* data,
                               uint32_t length) {
  std::memcpy(static_cast<uint8_t*>(message.memory->data()) + message.copied,
              data, length);
  message.copied += length;
  if (message.copied == message.bytes) {
    message.state = Inbound::State::kRead;
  }
}

uint32_t InboundMessages::PrepareReads(
    uint32_t room, absl::FunctionRef<void(const ReadChunk&)> post) {
  uint32_t count = 0;
  for (uint32_t a = 0; a < arrival_.size() && count < room; ++a) {
    const uint32_t index = arrival_[a];
    Inbound& inbound = inbound_[index];
    const wire::MessageHeader& header = inbound.header;
    while (inbound.state == Inbound::State::kReading &&
           inbound.next_segment < header.num_segments && count < room) {
      const uint8_t segment = inbound.next_segment;
      uint64_t local_offset = inbound.next_offset;
      for (uint8_t i = 0; i < segment; ++i) {
        local_offset += header.segment_lengths[i];
      }
      ReadChunk chunk;
      chunk.buffer_index = index;
      chunk.length =
          std::min(options_.read_chunk,
                   header.segment_lengths[segment] - inbound.next_offset);
      chunk.local_address =
          reinterpret_cast<uintptr_t>(inbound.memory->data()) + local_offset;
      chunk.lkey = inbound.memory->keys().lkey;
      chunk.remote_address =
          header.remote[segment].address + inbound.next_offset;
      chunk.rkey = header.remote[segment].rkey;
      post(chunk);
      ++count;
      ++inbound.reads_in_flight;
      inbound.next_offset += chunk.length;
      if (inbound.next_offset == header.segment_lengths[segment]) {
        ++inbound.next_segment;
        inbound.next_offset = 0;
      }
    }
  }
  return count;
}

void InboundMessages::OnReadComplete(uint32_t index, bool ok) {
  Inbound& inbound = inbound_[index];
  --inbound.reads_in_flight;
  if (ok && inbound.reads_in_flight == 0 &&
      inbound.next_segment == inbound.header.num_segments) {
    inbound.state = Inbound::State::kRead;
  }
}

absl::Status InboundMessages::Release(uint32_t index, bool repost) {
  if (index >= held_.size() || !held_[index]) {
    return ErrnoError(EINVAL,
                      absl::StrCat("receive buffer ", index, " is not held"));
  }
  // A batch's buffer goes back with the release of its last message.
  if (--held_[index] > 0) return absl::OkStatus();
  FreeMemory(inbound_[index]);
  if (repost) releases_.push_back(index);  // within capacity: each once
  return absl::OkStatus();
}

void InboundMessages::DropUnreported() {
  for (uint32_t a = 0; a < arrival_.size(); ++a) {
    if (inbound_[arrival_[a]].reads_in_flight > 0) {
      return;  // flushes still to come
    }
  }
  for (uint32_t a = 0; a < arrival_.size(); ++a) {
    const uint32_t index = arrival_[a];
    Inbound& inbound = inbound_[index];
    FreeMemory(inbound);
    inbound.state = Inbound::State::kEager;
    held_[index] = 0;  // never reported: nobody will release it
  }
  arrival_.clear();
}

}  // namespace demi::rdma
