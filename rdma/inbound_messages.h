// InboundMessages: the receiving side of one connection, above the wire
// decode and below the consumer. It knows which receive buffers the consumer
// holds, keeps the messages that must wait their turn in arrival order, and
// carries the large ones (rendezvous and in parts, wire.md) from arrival to
// report: their memory, their RDMA READs, their assembly.
//
// The connection decodes each receive and hands it over by type (OnData,
// OnBatch, OnRendezvous, OnFirstPart, OnPart). An eager message is reported
// at once when nothing waits before it; otherwise it waits behind the large
// message ahead of it. A large message takes a LargeBuffer, in arrival order
// and within the quota (Advance, called after each poll); a rendezvous one is
// then read with RDMA READs the connection posts (PrepareReads, then
// OnReadComplete for each), and owes the peer a done message (dones()); one
// in parts is copied together as its parts arrive (a part that comes before
// the message has memory is held until it has). Advance reports, in order,
// every message at the head that is complete.
//
// Buffers. A receive buffer is held from its arrival until the consumer
// releases every message it carried (Release; a batch carries several), or,
// for a part, until its bytes are copied. Buffers done with are listed in
// releases() for the connection to re-post (and so return credits).
//
// Errors: an absl::Status carrying an errno: EPROTO for what the peer got
// wrong, ENOTSUP for a large message with no pool here, EIO when this side's
// books disagree; the connection fails on any. Advance fails the same way
// for memory the pool will never give (EAGAIN only waits).
//
// Thread-safety: none (the connection's caller serializes). Lifetime: the
// receive buffers' memory (set_receive_buffers) and the large pool outlive
// it; the
// destructor gives large messages' memory back, so destroy it only once the
// device can no longer write there (the queue pair is gone).

#ifndef DEMI_RDMA_INBOUND_MESSAGES_H_
#define DEMI_RDMA_INBOUND_MESSAGES_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "common/fixed_ring.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/wire.h"

namespace demi::rdma {

// A data message received into receive buffer `buffer_index` (or, for a
// large message, into a LargeBuffer tied to that receive buffer). The
// pointers stay valid, and the bytes unchanged, until the consumer releases
// it (RcConnection::Release(buffer_index)).
struct ReceivedMessage {
  uint32_t buffer_index = 0;
  // Which message of its buffer (0 .. wire::kMaxBatchMessages - 1): several
  // small ones may share one (a batch). Each is released once.
  uint32_t part = 0;
  uint32_t num_segments = 0;
  const uint8_t* segment_data[wire::kMaxSegments] = {};
  uint32_t segment_lengths[wire::kMaxSegments] = {};
};

struct InboundOptions {
  uint32_t receive_buffers = 0;
  // Where large messages go (not owned). Null: a large message is refused
  // (ENOTSUP).
  LargeBufferPool* large_pool = nullptr;
  // The most bytes of large messages held at once.
  uint64_t quota = 0;
  // Largest RDMA READ (a segment is read in chunks of this size).
  uint32_t read_chunk = 1u << 20;
  // Drops memory pinned only for reuse and says whether it dropped any
  // (RcConnectionOptions::relieve_pinning); empty: none.
  std::function<bool()> relieve_pinning;
};

// One RDMA READ to post for a rendezvous message: `length` bytes from the
// peer's (remote_address, rkey) to local memory (local_address, lkey).
struct ReadChunk {
  uint32_t buffer_index = 0;  // the message's (OnReadComplete's argument)
  uintptr_t local_address = 0;
  uint32_t lkey = 0;
  uint32_t length = 0;
  uint64_t remote_address = 0;
  uint32_t rkey = 0;
};

class InboundMessages {
 public:
  using Report = absl::FunctionRef<void(const ReceivedMessage&)>;

  explicit InboundMessages(const InboundOptions& options);
  InboundMessages(const InboundMessages&) = delete;
  InboundMessages& operator=(const InboundMessages&) = delete;
  ~InboundMessages();

  // Where the receive buffers lie: buffer i is the `size` bytes at base + i *
  // size. Set once their memory exists, before the first arrival.
  void set_receive_buffers(const uint8_t* base, uint32_t size) {
    base_ = base;
    buffer_size_ = size;
  }

  // Whether the consumer (or an assembly) holds receive buffer `index`.
  bool held(uint32_t index) const { return held_[index] != 0; }
  // The memory a large message in buffer `index` was put in (null: the
  // receive buffer itself).
  const LargeBuffer* memory(uint32_t index) const {
    return inbound_[index].memory;
  }
  // A message in parts is still arriving: only its parts (and messages
  // that are no data: credit updates, dones) may come now.
  bool assembling() const { return assembling_ >= 0; }
  // Some message waits its turn (a large one, or one behind it).
  bool waiting() const { return !arrival_.empty(); }

  // Arrivals, by header type; `length` is the bytes received. Each holds
  // buffer `index` until released.
  // kData: reported through `report` now, or queued behind earlier ones.
  // (A template, inline: the common arrival of a ping-pong.)
  template <typename Fn>
  absl::Status OnData(uint32_t index, const wire::MessageHeader& header,
                      Fn&& report) {
    Inbound& inbound = inbound_[index];
    Describe(header,
             ReceiveBuffer(index) + wire::HeaderSize(header.num_segments),
             index, 0, &inbound.message);
    held_[index] = 1;
    if (arrival_.empty()) {
      report(inbound.message);  // nothing before it: report at once
      return absl::OkStatus();
    }
    inbound.state = Inbound::State::kEager;
    return Arrive(index);
  }
  // kBatch of `count` messages: likewise, each released on its own.
  absl::Status OnBatch(uint32_t index, uint32_t length, uint32_t count,
                       Report report);
  // kRendezvous: waits for memory, then for its reads.
  absl::Status OnRendezvous(uint32_t index, const wire::MessageHeader& header);
  // kFragmented (the first part): waits for memory; its parts follow.
  absl::Status OnFirstPart(uint32_t index, const wire::MessageHeader& header,
                           uint32_t length);
  // kFragment (a later part).
  absl::Status OnPart(uint32_t index, uint32_t length);

  // After a poll: takes memory for the large messages waiting for it (in
  // order; EAGAIN from the pool waits), then reports the complete messages
  // at the head of the arrival order. A done is owed (dones()) for each
  // rendezvous message reported.
  absl::Status Advance(Report report);
  // Some large message waits for memory (another connection's release may
  // free some: look again at the next poll).
  bool WaitingForMemory() const;

  // Calls `post` for each READ of rendezvous messages not yet posted, at
  // most `room` of them, in order; returns how many. Each counts as in
  // flight until OnReadComplete.
  uint32_t PrepareReads(uint32_t room,
                        absl::FunctionRef<void(const ReadChunk&)> post);
  // A READ of the message in buffer `index` completed (`ok`: successfully).
  void OnReadComplete(uint32_t index, bool ok);
  // Transfer ids of rendezvous messages read, to answer with done messages
  // (a ring of receive_buffers; the connection pops what it posted).
  FixedRing<uint32_t>& dones() { return dones_; }

  // The consumer is done with a message in buffer `index` (EINVAL if the
  // buffer is not held). Once every message there is released, its memory
  // goes back and, with `repost`, the buffer joins releases().
  absl::Status Release(uint32_t index, bool repost);
  // Buffers done with since the connection last re-posted (it clears it).
  std::vector<uint32_t>& releases() { return releases_; }
  const std::vector<uint32_t>& releases() const { return releases_; }

  // After a failure: once no READ is in flight, frees the memory of every
  // message never reported and forgets them (nobody will release them).
  void DropUnreported();

 private:
  struct Inbound {
    // kWaitingForMemory, then kReading (rendezvous) or kAssembling (parts),
    // then kRead: complete, to be reported.
    enum class State : uint8_t {
      kEager,
      kWaitingForMemory,
      kReading,
      kAssembling,
      kRead
    };
    State state = State::kEager;
    ReceivedMessage message;     // kEager: complete; else filled when read
    wire::MessageHeader header;  // large: what it holds (rendezvous: where)
    LargeBuffer* memory = nullptr;
    uint64_t bytes = 0;        // large: the message's, while `memory`
    uint8_t next_segment = 0;  // the next READ to post
    uint32_t next_offset = 0;
    uint32_t reads_in_flight = 0;
    // kEager: a batch of this many messages (0: `message` alone), to be
    // decoded again from its buffer when its turn comes.
    uint8_t batch_messages = 0;
    uint32_t batch_bytes = 0;
    // A message in parts: the bytes its first part (this buffer) carries,
    // the bytes copied to its memory so far, and the buffers of the parts
    // that arrived before it had memory (held; a list through next_part).
    uint32_t first_part = 0;
    uint64_t copied = 0;
    int32_t held_parts_head = -1;
    int32_t held_parts_tail = -1;
    // This buffer as such a held part: its bytes and the next held part.
    uint32_t part_length = 0;
    int32_t next_part = -1;
  };

  // Points `message` (part `part` of receive buffer `index`) at the
  // segments `header` lists, laid out back to back from `data`.
  static void Describe(const wire::MessageHeader& header, const uint8_t* data,
                       uint32_t index, uint32_t part,
                       ReceivedMessage* message) {
    message->buffer_index = index;
    message->part = part;
    message->num_segments = header.num_segments;
    for (uint32_t i = 0; i < header.num_segments; ++i) {
      message->segment_data[i] = data;
      message->segment_lengths[i] = header.segment_lengths[i];
      data += header.segment_lengths[i];
    }
  }
  // OK if this side takes a large message of `header` (a pool: ENOTSUP;
  // within the quota: EPROTO).
  absl::Status CheckLarge(const wire::MessageHeader& header) const;
  // Queues buffer `index` last in arrival order.
  absl::Status Arrive(uint32_t index);
  // Decodes the batch of `count` messages in buffer `index` (`length`
  // bytes) into batch_[0, count). EPROTO if malformed.
  absl::Status DecodeBatch(uint32_t index, uint32_t length, uint32_t count);
  // The pool's Allocate, tried once more after relieve_pinning drops some.
  absl::StatusOr<LargeBuffer*> AllocateLarge(size_t bytes);
  // The message in parts at buffer `first` has memory: copies its first
  // part and the parts held meanwhile, and releases their buffers.
  void StartAssembly(uint32_t first);
  // Copies `length` bytes to the end of what `message` holds; complete
  // (kRead) once it holds them all.
  static void CopyPart(Inbound& message, const uint8_t* data, uint32_t length);
  // Gives a large message's memory back (nothing if it holds none).
  void FreeMemory(Inbound& inbound);

  const uint8_t* ReceiveBuffer(uint32_t index) const {
    return base_ + static_cast<size_t>(index) * buffer_size_;
  }

  const InboundOptions options_;
  const uint8_t* base_ = nullptr;
  uint32_t buffer_size_ = 0;
  // Messages not yet released, by receive buffer (a batch: several).
  std::vector<uint8_t> held_;
  std::vector<Inbound> inbound_;
  // Receive buffers of messages not yet reported, in arrival order.
  FixedRing<uint32_t> arrival_;
  FixedRing<uint32_t> dones_;
  std::vector<uint32_t> releases_;
  // Scratch: a batch's messages as reported.
  std::vector<ReceivedMessage> batch_;
  // Bytes of the large messages holding memory (within options_.quota).
  uint64_t bytes_held_ = 0;
  // The message in parts still arriving: the buffer of its first part (-1:
  // none) and its bytes arrived so far. The peer sends one message's parts
  // back to back, so there is at most one.
  int64_t assembling_ = -1;
  uint64_t assembly_arrived_ = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_INBOUND_MESSAGES_H_
