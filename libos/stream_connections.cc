// StreamSockets, connection setup: the rdma_cm events of its listeners and
// connections (requests, establishment, errors, disconnects) and the
// connections they make.

#include <netinet/in.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/address.h"
#include "libos/stream_queue.h"
#include "libos/stream_sockets.h"

namespace demi::libos {

void StreamSockets::HandleEvent(rdma::CmEvent event) {
  if (event.type() == RDMA_CM_EVENT_CONNECT_REQUEST) {
    Queue* listener = queues_.Find(QdOf(event.listen_context()));
    if (listener == nullptr || listener->state != Queue::State::kListening) {
      rdma::CmId::RejectRequest(std::move(event));
      return;
    }
    HandleConnectRequest(std::move(event), *listener);
    return;
  }
  Queue* queue = queues_.Find(QdOf(event.context()));
  if (queue == nullptr) {
    // A closed queue's event (its connection is gone or going): nothing
    // waits for it, and nothing is left to answer.
    return;
  }
  const rdma_cm_event_type type = event.type();
  const int status = event.status();
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: {
      absl::Status routed =
          queue->id->ResolveRoute(ctx_.options.resolve_timeout);
      if (!routed.ok()) FailConnection(*queue, ErrnoFromStatus(routed));
      return;
    }
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      {
        rdma::CmEvent acknowledged = std::move(event);
      }
      const rdma::RcConnectionOptions options =
          ConnectionOptions(queue->id->verbs());
      absl::StatusOr<std::unique_ptr<rdma::RcConnection>> connection =
          rdma::RcConnection::Connect(std::move(*queue->id), options);
      queue->id.reset();
      if (!connection.ok()) {
        FailConnection(*queue, ErrnoFromStatus(connection.status()));
        return;
      }
      Adopt(*queue, *std::move(connection));
      return;
    }
    case RDMA_CM_EVENT_ESTABLISHED:
      HandleEstablished(event, *queue);
      return;
    case RDMA_CM_EVENT_DISCONNECTED: {
      {
        rdma::CmEvent acknowledged = std::move(event);
      }
      if (queue->connection != nullptr) {
        (void)queue->connection->id().Disconnect();  // answer the peer
      }
      FailConnection(*queue, ECONNRESET);
      return;
    }
    case RDMA_CM_EVENT_TIMEWAIT_EXIT:
      return;
    default: {
      {
        rdma::CmEvent acknowledged = std::move(event);
      }
      int errnum = rdma::ErrnoForCmEvent(type, status);
      if (queue->state == Queue::State::kAccepting) {
        Retire(queues_.Take(queue->qd));
        return;
      }
      FailConnection(*queue, errnum);
      return;
    }
  }
}

rdma::RcConnectionOptions StreamSockets::ConnectionOptions(
    const ibv_context* device) const {
  rdma::RcConnectionOptions options = ctx_.options.connection;
  options.pd = ctx_.devices.PdFor(device);
  options.large_pool = ctx_.devices.LargePoolFor(options.pd);
  options.completions = ctx_.completions.For(options.pd);
  // At the locked-memory limit a connection's registration first drops
  // what the caches keep pinned for reuse (rdma/locked_memory.h).
  options.relieve_pinning = [memory = &ctx_.memory, pd = options.pd] {
    return memory->DropIdleRegistrations(pd);
  };
  return options;
}

void StreamSockets::Adopt(Queue& queue,
                          std::unique_ptr<rdma::RcConnection> connection) {
  queue.sink = std::make_unique<QueueSink>(*this, queue);
  connection->set_sink(queue.sink.get());
  queue.connection = std::move(connection);
}

uint32_t StreamSockets::Unaccepted(const Queue& listener) const {
  uint32_t count = 0;
  queues_.ForEach([&count, &listener](int, const Queue& queue) {
    count += queue.state == Queue::State::kAccepting &&
             queue.listener_qd == listener.qd;
  });
  for (size_t i = 0; i < listener.accepted.size(); ++i) {
    count += queues_.Find(listener.accepted[i]) != nullptr;
  }
  return count;
}

uint32_t StreamSockets::Connections() const {
  uint32_t count = static_cast<uint32_t>(retired_.size());
  queues_.ForEach([&count](int, const Queue& queue) {
    count += queue.connection != nullptr;
  });
  return count;
}

void StreamSockets::HandleConnectRequest(rdma::CmEvent event, Queue& listener) {
  // The backlog bounds what requests cost before the application accepts
  // them (each connection built is a queue pair, completion queue entries
  // and pinned receive buffers): beyond it, refused with nothing built.
  if (Unaccepted(listener) >= static_cast<uint32_t>(listener.backlog)) {
    DEMI_LOG(kInfo, "refused a connection: backlog of ", listener.backlog,
             " full");
    rdma::CmId::RejectRequest(std::move(event));
    return;
  }
  // So do all the connections together, whatever their listeners.
  if (Connections() >= ctx_.options.max_connections) {
    DEMI_LOG(kWarning, "refused a connection: ", ctx_.options.max_connections,
             " connections open (DEMI_MAX_CONNECTIONS)");
    rdma::CmId::RejectRequest(std::move(event));
    return;
  }
  const rdma::RcConnectionOptions options = ConnectionOptions(event.device());
  absl::StatusOr<int> qd = queues_.Insert(std::make_unique<Queue>());
  if (!qd.ok()) {
    DEMI_LOG(kWarning, "refused a connection: ", qd.status().message());
    rdma::CmId::RejectRequest(std::move(event));
    return;
  }
  Queue& queue = *queues_.Find(*qd);
  queue.qd = *qd;
  queue.state = Queue::State::kAccepting;
  queue.listener_qd = listener.qd;
  event.set_context(QdContext(queue.qd));
  absl::StatusOr<std::unique_ptr<rdma::RcConnection>> connection =
      rdma::RcConnection::Accept(std::move(event), options);
  if (!connection.ok()) {
    DEMI_LOG(kWarning, "refused a connection: ", connection.status().message());
    queues_.Take(*qd);
    return;
  }
  Adopt(queue, *std::move(connection));
  queue.peer = queue.connection->id().PeerAddress();
}

void StreamSockets::HandleEstablished(const rdma::CmEvent& event,
                                      Queue& queue) {
  if (queue.connection == nullptr) return;
  absl::Status established = queue.connection->OnEstablished(event);
  if (!established.ok()) {
    FailConnection(queue, ErrnoFromStatus(established));
    return;
  }
  // One handle per message a receive buffer may hold (batches).
  constexpr uint32_t kPerBuffer = rdma::RcConnection::kMessagesPerBuffer;
  queue.handles = ctx_.handles.Add(
      queue, ctx_.options.connection.receive_buffers * kPerBuffer, kPerBuffer,
      ctx_.worker);
  if (queue.handles == nullptr) {
    FailConnection(queue, ENOMEM);  // no room for its popped arrays' handles
    return;
  }

  const Queue::State was = queue.state;
  queue.state = Queue::State::kConnected;
  if (was == Queue::State::kConnecting) {
    demi_qresult_t result{};
    result.qr_opcode = DEMI_OPC_CONNECT;
    ctx_.tokens.Complete(queue.connect_token, result);
    return;
  }
  Queue* listener = queues_.Find(queue.listener_qd);
  if (listener == nullptr) return;  // never: Close takes its accepting queues
  Queue& accepting = *listener;
  if (!accepting.accept_tokens.empty()) {
    demi_qtoken_t qt = accepting.accept_tokens.front();
    accepting.accept_tokens.pop_front();
    CompleteAccept(qt, queue);
  } else {
    accepting.accepted.push_back(queue.qd);
  }
}

}  // namespace demi::libos
