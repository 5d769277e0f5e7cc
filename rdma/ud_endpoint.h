// UdEndpoint: one unreliable-datagram queue pair carrying demi datagrams.
//
// It owns an rdma_cm id in RDMA_PS_UDP bound to a local address, the UD queue
// pair created on it (rdma_create_qp takes it straight to RTS with Q_Key
// RDMA_UDP_QKEY), one completion queue for both, the receive buffers
// (one registered slab: `receive_buffers` buffers of kGrhSize + MTU bytes, all
// kept posted) and one registered header slot per send-queue entry. The id
// also listens, so peers can resolve this endpoint (rdma_connect on their
// side, AcceptResolution here): that is how they learn its queue pair number.
//
// It knows nothing of queue tokens: each Send carries an opaque uint64
// cookie reported, exactly once, through DatagramSink::OnSendComplete.
//
// Datagrams. One Send is one UD SEND: sge[0] is a header slot (a
// datagram_wire::DatagramHeader naming this endpoint's address, and the
// segment lengths), sge[i + 1] is segment i, read in place from the caller's
// registered memory (inline when it fits max_inline_data). Every send is
// signaled (until the device sent it, even one done at post, the endpoint is
// not idle: a closing socket waits for its datagrams to leave). A datagram
// carries at most max_payload() bytes: the port's MTU
// less datagram_wire::kMaxHeaderSize, whatever the segment count.
//
// Honest datagram semantics: there are no credits. A datagram that arrives
// when every receive buffer is held by the consumer is dropped by the device
// (the sender's send still succeeds); receive_queue_empty() counts the times
// the receive queue ran dry, and DeviceDroppedDatagrams() reads the device's
// own drop counter where it has one. A malformed datagram, or one whose
// header names another sender than its network header (GRH), is dropped and
// counted; it never fails the endpoint.
//
// Receiving. Poll() reports each datagram as a ReceivedDatagram pointing into
// a receive buffer (zero copy), held by the consumer until Release(); released
// buffers are posted again in batches, each one ibv_post_recv (RepostRule: at
// once when the receive queue runs low).
//
// Failure. An error completion (other than the flush of a failed endpoint) or
// a failed post of a receive marks the endpoint failed and moves the queue
// pair to the error state; posted sends then complete with an error
// (flushed: ECONNRESET; otherwise EIO) and later Sends fail with it.
//
// Thread-safety: none; the caller serializes all calls. The hot path (Send,
// Poll, Release) makes no allocation and no system call other than
// ibv_post_send / ibv_post_recv. Sink callbacks may call Release() and Send()
// but must not destroy the endpoint.
//
// Lifetime: the EventChannel of the id and the protection domain
// (options.pd) must outlive the endpoint, and so must the address handles of
// sends still posted. Destroying it destroys the queue pair first (the device
// then no longer reads posted sends' memory), then memory, queues and the id.

#ifndef DEMI_RDMA_UD_ENDPOINT_H_
#define DEMI_RDMA_UD_ENDPOINT_H_

#include <infiniband/verbs.h>
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/fixed_ring.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/completion_queue.h"
#include "rdma/datagram_wire.h"
#include "rdma/memory_region.h"
#include "rdma/queue_pair.h"
#include "rdma/queue_pair_resources.h"
#include "rdma/repost_rule.h"
#include "rdma/segment.h"

namespace demi::rdma {

struct UdEndpointOptions {
  // Receive buffers kept posted (1..65536).
  uint32_t receive_buffers = 256;
  // Sends outstanding at once (1..65536); Send says EAGAIN past it.
  uint32_t send_queue_depth = 128;
  // Inline data asked of the queue pair (0 if the device refuses any).
  uint32_t max_inline_data = 256;
  // The protection domain of the id's device (not owned; required).
  ibv_pd* pd = nullptr;
  // Where the endpoint's completion queue raises its events once armed
  // (ArmNotify); not owned, outlives the endpoint. Null: polled only.
  ibv_comp_channel* channel = nullptr;
};

// Where a datagram goes: what resolving the peer gave (UdResolver).
struct UdDestination {
  ibv_ah* ah = nullptr;
  uint32_t qp_num = 0;
  uint32_t qkey = 0;
};

// A datagram received into buffer `buffer_index`; the pointers stay valid,
// and the bytes unchanged, until Release(buffer_index).
struct ReceivedDatagram {
  uint32_t buffer_index = 0;
  // The sender's bound address: its IPv4 address is the one the packet's
  // network header gives (a datagram whose header claims another is
  // dropped: forged()), its port the one the header gives (the wire has no
  // ports; see datagram_wire.md).
  sockaddr_in source{};
  uint32_t source_qp = 0;  // the sender's queue pair (from the completion)
  uint32_t num_segments = 0;
  const uint8_t* segment_data[datagram_wire::kMaxSegments] = {};
  uint32_t segment_lengths[datagram_wire::kMaxSegments] = {};
};

class DatagramSink {
 public:
  virtual ~DatagramSink() = default;
  // The send of `cookie` finished: OK once the device sent it (not that
  // anyone received it), otherwise an error carrying an errno.
  virtual void OnSendComplete(uint64_t cookie, const absl::Status& status) = 0;
  // A datagram arrived; give its buffer back with Release().
  virtual void OnDatagram(const ReceivedDatagram& datagram) = 0;
};

class UdEndpoint {
 public:
  // Takes `id` (RDMA_PS_UDP, bound to a local address of a device: verbs()
  // not null, else EADDRNOTAVAIL), creates the queue pair and buffers, posts
  // the receives and listens for resolution requests.
  static absl::StatusOr<std::unique_ptr<UdEndpoint>> Create(
      CmId id, const UdEndpointOptions& options);

  UdEndpoint(const UdEndpoint&) = delete;
  UdEndpoint& operator=(const UdEndpoint&) = delete;
  ~UdEndpoint();

  // Answers a CONNECT_REQUEST that arrived on id() (a peer resolving this
  // endpoint) with this queue pair's number and Q_Key; the request's id is
  // acknowledged and destroyed here.
  absl::Status AcceptResolution(CmEvent request);

  // Sends one datagram of `segments` (1..16, else EINVAL) totalling at most
  // max_payload() bytes (EMSGSIZE) to `destination`. On OK it was posted and
  // `cookie` will be reported exactly once; on error it never will. EAGAIN:
  // send_queue_depth sends are outstanding (poll and retry). A failed
  // endpoint returns its error.
  // `done_at_post` (optional): set to true when the datagram went inline
  // (its bytes copied by ibv_post_send): the memory is free as Send returns
  // and the cookie is not reported later. Null: always report it.
  absl::Status Send(const UdDestination& destination,
                    absl::Span<const Segment> segments, uint64_t cookie,
                    bool* done_at_post = nullptr);

  // Posts the released receive buffers again, then polls the completion
  // queue and reports to `sink`. Returns OK while the
  // endpoint is healthy, its error once it failed (after reporting what it
  // could; keep polling until idle() to collect flushed sends).
  absl::Status Poll(DatagramSink& sink);
  // Arms the endpoint's completion queue: its next completion raises an
  // event on options.channel (completion_channel.h). EINVAL without one.
  absl::Status ArmNotify();

  // The consumer is done with the datagram in `buffer_index`: it goes back
  // to the device with a batch of others (RepostRule: this call or a later
  // Poll() posts them in one chain; at once when few are posted). EINVAL if
  // the buffer is not held; the endpoint's error if that post failed.
  absl::Status Release(uint32_t buffer_index);

  // The receive buffer `buffer_index` while the consumer holds it (every
  // segment of its datagram lies in it); empty (data null) if not held.
  // Valid until Release(buffer_index) or the endpoint's destruction.
  RegisteredSpan HeldBuffer(uint32_t buffer_index) const;

  // Reads the device's counter of datagrams dropped for lack of a posted
  // receive (device-wide, all queue pairs of the port) where the device has
  // one (mlx5: out_of_buffer); ENOENT where it has none (rxe).
  absl::StatusOr<uint64_t> DeviceDroppedDatagrams() const;

  CmId& id() { return *id_; }
  const sockaddr_in& local_address() const { return local_; }
  ibv_pd* pd() const { return options_.pd; }
  // The device the endpoint is on (its protection domain's).
  const ibv_context* device() const { return options_.pd->context; }
  uint32_t qp_num() const { return resources_.qp().qp_num(); }
  uint32_t max_payload() const { return max_payload_; }
  // Whether a datagram of `num_segments` segments and `total` bytes goes
  // inline: Send then copies its bytes at post (segment keys unused) and,
  // given done_at_post, always reports it done at post.
  bool FitsInline(uint32_t num_segments, uint64_t total) const {
    return datagram_wire::HeaderSize(static_cast<int>(num_segments)) + total <=
           resources_.max_inline_data();
  }
  const absl::Status& status() const { return status_; }
  // Every send posted has completed (the device sent it).
  bool idle() const { return posted_sends() == 0; }
  uint32_t posted_sends() const {
    return static_cast<uint32_t>(sends_posted_ - sends_completed_);
  }
  // Sends posted, and sends completed (successfully or not), since the
  // endpoint was made (posted_sends() is their difference): every send
  // posted before a moment when sends_posted() was N has completed once
  // sends_completed() >= N (a queue pair completes its sends in order).
  uint64_t sends_posted() const { return sends_posted_; }
  uint64_t sends_completed() const { return sends_completed_; }
  uint32_t send_queue_depth() const { return options_.send_queue_depth; }
  uint64_t malformed() const { return malformed_; }
  // Datagrams dropped because their header named another source address
  // than the packet's network header.
  uint64_t forged() const { return forged_; }
  uint64_t receive_queue_empty() const { return receive_queue_empty_; }
  // ibv_post_recv calls since the endpoint was made (the first posting of
  // every buffer: one each).
  uint64_t receive_posts() const { return receive_posts_; }

 private:
  UdEndpoint(CmId id, const UdEndpointOptions& options);

  absl::Status CreateResources();
  // Posts the buffers Release() gave back, chained in one ibv_post_recv.
  void PostReleased();
  void HandleSendCompletion(const ibv_wc& wc, DatagramSink& sink);
  void HandleReceiveCompletion(const ibv_wc& wc, DatagramSink& sink);
  // Marks the endpoint failed (first error wins) and flushes the queue pair.
  void Fail(absl::Status status);

  // Destruction order: the queue pair first, then memory regions, memory,
  // queues, id.
  std::optional<CmId> id_;
  std::optional<CompletionQueue> cq_;  // sends and receives
  // Receive buffers, header slots and the queue pair (which goes first).
  QueuePairResources resources_;

  const UdEndpointOptions options_;
  sockaddr_in local_{};
  uint8_t port_num_ = 0;
  uint32_t receive_buffer_size_ = 0;  // kGrhSize + MTU
  uint32_t max_payload_ = 0;
  absl::Status status_;

  std::vector<uint8_t> held_;  // by buffer index
  uint32_t posted_receives_ = 0;
  // Released buffers go back in batches, at once when few are posted.
  const RepostRule repost_;
  // Posted sends, oldest first, by send-queue slot (they complete in
  // order): the cookie, and whether to report it when done.
  struct PostedDatagram {
    uint64_t cookie = 0;
    bool report = false;
  };
  FixedRing<PostedDatagram> posted_;
  // Buffers released and not yet re-posted (capacity for every buffer:
  // Release never allocates), re-posted in one chain (repost_).
  std::vector<uint32_t> releases_;
  uint64_t receive_posts_ = 0;
  uint64_t malformed_ = 0;
  uint64_t forged_ = 0;
  uint64_t sends_posted_ = 0;
  uint64_t sends_completed_ = 0;
  uint64_t receive_queue_empty_ = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_UD_ENDPOINT_H_
