// StreamSockets: every SOCK_STREAM socket of the LibOS: sockets, listeners
// and connections on reliable-connected queue pairs (rdma::RcConnection),
// set up through one rdma_cm event channel.
//
// A socket becomes a listener (demi_listen) or a connection (demi_connect,
// or accepted from a listener: each CONNECT_REQUEST becomes a queue of its
// own, handed to a demi_accept once ESTABLISHED). A push is one message of
// the connection (eager, or by rendezvous above the threshold); a pop
// returns the oldest message not popped yet, lending its receive buffer
// (zero copy) until demi_sgafree. After the peer's graceful close pops see
// end of stream (zero segments); after a failure ECONNRESET (or the
// failure's errno); after demi_close pending operations fail ECANCELED and
// the connection is kept (retired) until its sends finished and its popped
// arrays came back.
//
// Where it is: stream_sockets.cc (sockets, the data path, progress),
// stream_connections.cc (rdma_cm events: requests, establishment,
// disconnects), stream_close.cc (close, linger, retired queues);
// stream_queue.h holds one queue's state.
//
// Lifetime: created by the LibOS with its context, destroyed with it
// (connections before the channel). Thread-safety: none; the worker's mutex
// guards every call (and the progress sources it registers).

#ifndef DEMI_LIBOS_STREAM_SOCKETS_H_
#define DEMI_LIBOS_STREAM_SOCKETS_H_

#include <demi/types.h>
#include <sys/socket.h>

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libos/qd_table.h"
#include "libos/socket_context.h"
#include "libos/sockets.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/rc_connection.h"

namespace demi::libos {

class StreamSockets final : public Sockets {
 public:
  // Opens the rdma_cm channel and registers the progress sources: every
  // device's shared completion queues (so every connection, open or
  // retired) and the retired queues each round, the channel's events every
  // kCmPollInterval rounds.
  static absl::StatusOr<std::unique_ptr<StreamSockets>> Create(
      SocketContext& context);
  ~StreamSockets() override;

  absl::StatusOr<int> Open(int protocol) override;
  absl::Status Bind(int qd, const sockaddr* address, socklen_t size) override;
  absl::Status Listen(int qd, int backlog) override;
  absl::StatusOr<demi_qtoken_t> Accept(int qd) override;
  absl::StatusOr<demi_qtoken_t> Connect(int qd, const sockaddr* address,
                                        socklen_t size) override;
  absl::StatusOr<demi_qtoken_t> Push(int qd,
                                     const demi_sgarray_t* sga) override;
  absl::StatusOr<demi_qtoken_t> PushTo(int qd, const demi_sgarray_t* sga,
                                       const sockaddr* address,
                                       socklen_t size) override;
  absl::StatusOr<demi_qtoken_t> Pop(int qd) override;
  absl::Status Close(int qd, Linger* linger) override;
  // A lingering close (Linger): true while the retired socket `id` still
  // has pushes or its end of stream unacknowledged.
  bool Lingering(uint64_t id) const;
  // Its time is up: what could not be sent is dropped and the connection
  // reset (the peer's pops fail ECONNRESET); what was sent goes on.
  void EndLinger(uint64_t id);
  absl::Status GetPeerName(int qd, sockaddr* address, socklen_t* size) override;
  absl::Status SetLinger(int qd, const void* value, socklen_t size) override;
  absl::Status GetLinger(int qd, void* value, socklen_t* size) override;
  void AppendWakeFds(std::vector<int>* fds) const override {
    fds->push_back(channel_.fd());
  }
  // Connections complete on the worker's groups, armed by the worker.
  absl::Status ArmNotify() override { return absl::OkStatus(); }
  void Reap() override { ReapIfAny(); }

 private:
  struct Queue;
  class QueueSink;

  StreamSockets(SocketContext& context, rdma::EventChannel channel);

  // The queue of `qd` (EBADF if there is none).
  absl::StatusOr<Queue*> Find(int qd);
  void AddProgress();
  // Polls the completion queue `queue`'s connection shares (and so reports
  // for every connection on it), then pumps the connection's sends.
  void PollConnection(Queue& queue);
  // The options of a connection on `device`: its PD, large-message pool and
  // shared completion queues.
  rdma::RcConnectionOptions ConnectionOptions(const ibv_context* device) const;
  // Gives `queue` its connection and the sink the connection reports to.
  void Adopt(Queue& queue, std::unique_ptr<rdma::RcConnection> connection);
  void HandleEvent(rdma::CmEvent event);
  void HandleConnectRequest(rdma::CmEvent event, Queue& listener);
  // Connections of `listener` built and not yet handed to the application
  // (accepting, or established and waiting for a demi_accept): at most its
  // backlog. O(queues): only connection requests ask.
  uint32_t Unaccepted(const Queue& listener) const;
  // Connections this worker holds: open (any state with a connection) and
  // closed but not yet destroyed. Incoming requests beyond
  // LibOSOptions::max_connections are refused. O(queues), as Unaccepted.
  uint32_t Connections() const;
  void HandleEstablished(const rdma::CmEvent& event, Queue& queue);
  void FailConnection(Queue& queue, int errnum);
  void CompletePop(Queue& queue, demi_qtoken_t qt,
                   const rdma::ReceivedMessage* message);
  void CompleteAccept(demi_qtoken_t qt, const Queue& accepted);
  void CancelPending(Queue& queue, int errnum);
  void Retire(std::unique_ptr<Queue> queue);
  // Destroys the retired queues that are done (inline: usually none).
  void ReapIfAny() {
    if (!retired_.empty()) ReapRetired();
  }
  void ReapRetired();
  // Resets the retired queues still busy LibOSOptions::close_timeout after
  // they were retired (a peer that never reads or answers), then reaps. Checked
  // with the rdma_cm channel, while any queue is retired.
  void ExpireRetired(absl::Time now);
  // The retired queue of a lingering close, or null.
  Queue* LingeringQueue(uint64_t id) const;
  // Every LibOSOptions::keepalive (checked with the rdma_cm channel, every
  // kCmPollInterval rounds and after every sleep), each healthy connection
  // probes its peer (RcConnection::SendKeepalive: only those with nothing
  // in flight post anything).
  void KeepAliveIfDue(absl::Time now);
  // About every second (with the rdma_cm channel), each connected
  // connection checks how long it has waited on its peer
  // (RcConnection::CheckStall, LibOSOptions::stall_timeout).
  void CheckStallsIfDue(absl::Time now);
  // Calls fn(connection) for each connected queue's connection that has
  // not failed (what the keepalive and stall checks visit).
  template <typename Fn>
  void ForEachHealthyConnection(Fn fn);

  SocketContext& ctx_;
  rdma::EventChannel channel_;
  QdTable<Queue, 0> queues_;
  // Closed connections kept until their sends finished and their popped
  // buffers came back.
  std::vector<std::unique_ptr<Queue>> retired_;
  uint64_t last_linger_id_ = 0;  // ids of lingering closes, from 1
  absl::Time next_keepalive_ = absl::InfinitePast();
  absl::Time next_stall_check_ = absl::InfinitePast();
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_STREAM_SOCKETS_H_
