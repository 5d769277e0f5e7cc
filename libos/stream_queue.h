// StreamSockets' private types: one stream queue's state (Queue) and the
// sink through which its connection reports (QueueSink). Included only by
// the files that implement StreamSockets.

#ifndef DEMI_LIBOS_STREAM_QUEUE_H_
#define DEMI_LIBOS_STREAM_QUEUE_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/errno_status.h"
#include "common/fifo.h"
#include "common/logging.h"
#include "libos/stream_sockets.h"
#include "rdma/cm_id.h"
#include "rdma/rc_connection.h"

namespace demi::libos {

// One demi queue: a socket, then a listener or a connection. A connection's
// receive buffers are lent out by pops (ReceiveBufferOwner).
struct StreamSockets::Queue final : ReceiveBufferOwner {
  rdma::RegisteredSpan HeldBuffer(uint32_t index) const override {
    return connection == nullptr ? rdma::RegisteredSpan{}
                                 : connection->HeldBuffer(index);
  }
  void ReturnBuffer(uint32_t index) override {
    --held;
    if (connection == nullptr) return;
    absl::Status released = connection->Release(index);
    if (!released.ok()) {
      DEMI_LOG(kWarning, "re-posting a receive buffer: ", released.message());
    }
  }

  enum class State {
    kSocket,      // created, maybe bound
    kListening,   // listener
    kConnecting,  // demi_connect in progress
    kAccepting,   // accepted request, waiting for ESTABLISHED
    kConnected,
    kFailed,  // connect failed or peer vanished; error holds why
  };
  int qd = 0;
  State state = State::kSocket;
  bool bound = false;
  sockaddr_in peer{};
  linger linger_option{};
  std::optional<rdma::CmId> id;  // socket, listener, or connecting (pre-route)
  // Where the connection reports (declared first: outlives it).
  std::unique_ptr<QueueSink> sink;
  std::unique_ptr<rdma::RcConnection> connection;
  demi_qtoken_t connect_token = 0;
  int listener_qd = 0;                   // kAccepting: who accepted
  int backlog = 0;                       // listener: demi_listen's
  Fifo<demi_qtoken_t> accept_tokens;     // listener: waiting accepts
  Fifo<int> accepted;                    // listener: ready, not handed out
  Fifo<demi_qtoken_t> pop_tokens;        // waiting pops
  Fifo<rdma::ReceivedMessage> messages;  // arrived, not popped
  bool end_of_stream = false;
  bool closed = false;     // demi_close was called; kept only to finish sends
  uint64_t linger_id = 0;  // a lingering close waits for this queue
  absl::Time retired_at;   // when it was closed (or refused) and retired
  int error = 0;           // errno once failed
  ReceiveHandle* handles = nullptr;  // one per receive buffer (handles_)
  uint32_t held = 0;  // messages lent out by pops, not yet returned
};

// Routes one connection's completions to its queue.
class StreamSockets::QueueSink final : public rdma::CompletionSink {
 public:
  QueueSink(StreamSockets& sockets, Queue& queue)
      : sockets_(sockets), queue_(queue) {}

  void OnSendComplete(uint64_t cookie, const absl::Status& status) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {  // called under the worker's mutex
    // False only after a close (or a bug, which FinishPush counts).
    sockets_.ctx_.FinishPush(cookie, status, queue_.closed);
  }

  void OnMessage(const rdma::ReceivedMessage& message) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!queue_.pop_tokens.empty()) {
      demi_qtoken_t qt = queue_.pop_tokens.front();
      queue_.pop_tokens.pop_front();
      sockets_.CompletePop(queue_, qt, &message);
    } else {
      queue_.messages.push_back(message);
    }
  }

  void OnEndOfStream() override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    queue_.end_of_stream = true;
    while (!queue_.pop_tokens.empty()) {
      sockets_.CompletePop(queue_, queue_.pop_tokens.front(), nullptr);
      queue_.pop_tokens.pop_front();
    }
  }

  void OnFailed(const absl::Status& status) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (queue_.error == 0)
      sockets_.FailConnection(queue_, ErrnoFromStatus(status));
  }

 private:
  StreamSockets& sockets_;
  Queue& queue_;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_STREAM_QUEUE_H_
