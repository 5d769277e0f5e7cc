// RcConnectionOptions: how an RcConnection is sized and behaves (see
// rc_connection.h). Plain values, copied by the connection; the pointers
// are not owned and must outlive it.

#ifndef DEMI_RDMA_RC_CONNECTION_OPTIONS_H_
#define DEMI_RDMA_RC_CONNECTION_OPTIONS_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <functional>

#include "rdma/completion_group.h"
#include "rdma/large_buffer_pool.h"

namespace demi::rdma {

struct RcConnectionOptions {
  // Receive buffers kept posted: in [CreditAccount::kMinReceiveBuffers,
  // kMaxReceiveBuffers].
  uint32_t receive_buffers = 64;
  // Largest payload of one message (sum of its segments); a receive buffer
  // holds eager_limit + wire::kMaxHeaderSize bytes.
  uint32_t eager_limit = 8192;
  // Send work requests outstanding at once; also the capacity of the FIFO of
  // sends waiting for credits. >= 2.
  uint32_t send_queue_depth = 64;
  // Inline data asked of the queue pair (the device may give more or less;
  // 0 if it refuses inline sends altogether).
  uint32_t max_inline_data = 256;
  // If not null, the protection domain to create everything in (not owned;
  // must be of the id's device and outlive the connection). Otherwise the
  // connection allocates its own.
  ibv_pd* pd = nullptr;
  // If not null, the completion queues to share (not owned; of the id's
  // device; must outlive the connection). Otherwise the connection makes a
  // group of its own.
  CompletionGroup* completions = nullptr;
  // Messages of more bytes than this go by rendezvous; smaller ones too
  // large for one of the peer's receive buffers go in parts (see Sending).
  uint32_t rendezvous_threshold = 8192;
  // Where incoming rendezvous messages are pulled to (not owned; registered
  // in `pd`; must outlive the connection). Null: a peer's rendezvous fails
  // the connection (ENOTSUP).
  LargeBufferPool* large_pool = nullptr;
  // Called when memory for this connection (its receive buffers and
  // headers, what a rendezvous send exposes, a large buffer to pull into)
  // cannot be registered for the locked-memory limit (ENOMEM,
  // rdma/locked_memory.h): drops memory pinned only for reuse elsewhere
  // (idle cached registrations, kept buffers) and says whether it dropped
  // any; if so the registration is tried once more. Called on the thread
  // using the connection. Empty: no second try.
  std::function<bool()> relieve_pinning;
  // With a pool: the most bytes of rendezvous messages taken from the peer
  // at once (allocated, being read or held by the consumer), advertised in
  // the connection parameters. An announcement that alone exceeds it fails
  // the connection (EPROTO) before anything is allocated; one that exceeds
  // what is left waits, as for the pool's cap.
  uint64_t rendezvous_quota = uint64_t{1} << 30;
  // Largest RDMA READ posted (a segment is pulled in chunks of this size).
  uint32_t read_chunk = 1u << 20;
  // Coalesce bursts: the first Send() after a poll is posted at once (a
  // lone message, e.g. a ping-pong's, pays no delay); further Send()s before
  // the next poll are queued and go chained under one doorbell at that poll
  // (fewer system calls per message: one per burst, not one per message).
  // False: every Send() is posted at once when nothing is queued before it.
  bool coalesce_sends = true;
  // Loss recovery and failure detection (see the README's settings): a
  // packet not acknowledged within 4.096 us * 2^ack_timeout is sent again,
  // up to retry_count times; then the connection fails (ETIMEDOUT). The
  // default, 17, is 0.54 s: what a lost packet with nothing behind it
  // costs; the retry budget, (retry_count + 1) * 0.54 s = 3.8 s, is the
  // longest outage a connection survives and how long a peer that stops
  // answering takes to fail it. Measured on two Soft-RoCE guests: a link
  // down for 0.2 s was survived with 17 and failed the connection with 14
  // and 16 (retransmissions during the outage leave the peer's address
  // unresolved for seconds); rdma_cm's own default on RoCE (18-19) costs
  // twice as much per loss. In [1, 31]; 0 leaves rdma_cm's default.
  uint8_t ack_timeout = 17;
  // In [0, 7]. Not 7: Soft-RoCE (rxe) takes 7 as "retry forever" (as the
  // standard does only for RNR retries), so a vanished peer would never
  // fail the connection there.
  uint8_t retry_count = 6;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_RC_CONNECTION_OPTIONS_H_
