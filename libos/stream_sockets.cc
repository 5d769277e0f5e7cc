#include "libos/stream_sockets.h"

#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/fifo.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/address.h"

namespace demi::libos {
namespace {

absl::Status NoQueue(int qd) {
  return ErrnoError(EBADF, absl::StrCat("no queue ", qd));
}

}  // namespace

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
    (void)sockets_.ctx_.FinishPush(cookie, status, queue_.closed);
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

absl::StatusOr<StreamSockets::Queue*> StreamSockets::Find(int qd) {
  Queue* queue = queues_.Find(qd);
  if (queue == nullptr) return NoQueue(qd);
  return queue;
}

absl::StatusOr<int> StreamSockets::Open(int protocol) {
  if (protocol != 0 && protocol != IPPROTO_TCP) {
    return ErrnoError(ENOTSUP, absl::StrCat("protocol ", protocol));
  }
  DEMI_ASSIGN_OR_RETURN(const int qd,
                        queues_.Insert(std::make_unique<Queue>()));
  queues_.Find(qd)->qd = qd;
  return qd;
}

absl::StatusOr<demi_qtoken_t> StreamSockets::PushTo(int qd,
                                                    const demi_sgarray_t* sga,
                                                    const sockaddr* address,
                                                    socklen_t size) {
  // A connection-mode socket ignores the address (as POSIX sendto does);
  // it must still be one.
  DEMI_RETURN_IF_ERROR(ParseIpv4(address, size).status());
  return Push(qd, sga);
}

absl::Status StreamSockets::Bind(int qd, const sockaddr* address,
                                 socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  DEMI_ASSIGN_OR_RETURN(sockaddr_in local, ParseIpv4(address, size));
  if (queue->state != Queue::State::kSocket || queue->bound) {
    return ErrnoError(EINVAL, "the socket is already bound or in use");
  }
  DEMI_ASSIGN_OR_RETURN(
      rdma::CmId id, rdma::CmId::Create(channel_, RDMA_PS_TCP, QdContext(qd)));
  DEMI_RETURN_IF_ERROR(id.Bind(local));
  queue->id.emplace(std::move(id));
  queue->bound = true;
  return absl::OkStatus();
}

absl::Status StreamSockets::Listen(int qd, int backlog) {
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  if (backlog <= 0) return ErrnoError(EINVAL, "backlog must be positive");
  if (queue->state != Queue::State::kSocket) {
    return ErrnoError(EINVAL, "the socket is connecting or connected");
  }
  if (!queue->bound) {
    return ErrnoError(EDESTADDRREQ, "listen on an unbound socket");
  }
  DEMI_RETURN_IF_ERROR(queue->id->Listen(backlog));
  queue->state = Queue::State::kListening;
  queue->backlog = backlog;
  return absl::OkStatus();
}

absl::StatusOr<demi_qtoken_t> StreamSockets::Accept(int qd) {
  DEMI_ASSIGN_OR_RETURN(Queue * listener, Find(qd));
  if (listener->state != Queue::State::kListening) {
    return ErrnoError(EINVAL, "accept on a socket that is not listening");
  }
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        ctx_.tokens.Allocate(qd, DEMI_OPC_ACCEPT));
  if (!listener->accepted.empty()) {
    Queue* accepted = queues_.Find(listener->accepted.front());
    listener->accepted.pop_front();
    if (accepted != nullptr) {
      CompleteAccept(qt, *accepted);
      return qt;
    }
  }
  listener->accept_tokens.push_back(qt);
  return qt;
}

absl::StatusOr<demi_qtoken_t> StreamSockets::Connect(int qd,
                                                     const sockaddr* address,
                                                     socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  DEMI_ASSIGN_OR_RETURN(sockaddr_in remote, ParseIpv4(address, size));
  if (queue->state != Queue::State::kSocket) {
    return ErrnoError(EINVAL, "connect on a listening or connected socket");
  }
  if (!queue->id.has_value()) {
    DEMI_ASSIGN_OR_RETURN(
        rdma::CmId id,
        rdma::CmId::Create(channel_, RDMA_PS_TCP, QdContext(qd)));
    queue->id.emplace(std::move(id));
  }
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        ctx_.tokens.Allocate(qd, DEMI_OPC_CONNECT));
  absl::Status started =
      queue->id->ResolveAddress(remote, ctx_.options.resolve_timeout);
  if (!started.ok()) {
    ctx_.tokens.Release(qt);
    return started;
  }
  queue->peer = remote;
  queue->state = Queue::State::kConnecting;
  queue->connect_token = qt;
  return qt;
}

absl::StatusOr<demi_qtoken_t> StreamSockets::Push(int qd,
                                                  const demi_sgarray_t* sga) {
  uint64_t total = 0;
  const char* why = nullptr;
  if (int e = CheckPushArray(sga, &total, &why); e != 0) {
    return ErrnoError(e, why);
  }
  Queue* queue = queues_.Find(qd);
  if (queue == nullptr) return NoQueue(qd);
  PushMemory::Buffer buffer;
  if (int e = ctx_.memory.Describe(sga->sga_buf, &buffer, &why); e != 0) {
    return ErrnoError(e, why);
  }
  // Pushes done at post leave their send slots to be reclaimed by a poll; a
  // pusher whose waits find every push done never polls, so the push does
  // it once half the send queue is in use.
  if (queue->connection != nullptr &&
      queue->connection->posted_sends() >=
          queue->connection->send_queue_depth() / 2) {
    PollConnection(*queue);
  }
  if (queue->state == Queue::State::kFailed ||
      (queue->state == Queue::State::kConnected && queue->error != 0)) {
    DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                          ctx_.tokens.Allocate(qd, DEMI_OPC_PUSH));
    ctx_.tokens.Fail(qt, queue->error != 0 ? queue->error : ECONNRESET);
    return qt;
  }
  if (queue->state != Queue::State::kConnected) {
    return ErrnoError(ENOTCONN, "push on a queue that is not connected");
  }
  rdma::RcConnection& connection = *queue->connection;
  const uint32_t num_segments = sga->sga_numsegs;
  rdma::Segment segments[DEMI_SGARRAY_MAXSIZE];
  // The common small push: its bytes go inline, copied by ibv_post_send,
  // so no keys are needed (no mapping, no lease) and the push is done now:
  // its token is made done once the send is posted.
  if (total <= connection.max_inline_data() && ctx_.tokens.has_free_slot() &&
      ctx_.memory.InlineReadable(*sga, buffer, connection.pd())) {
    UnmappedSegments(*sga, segments);
    if (connection.TrySendInline(absl::MakeConstSpan(segments, num_segments))) {
      return ctx_.PushDoneInline(qd, *sga);
    }
  }
  const demi_qtoken_t qt = ctx_.tokens.TryAllocate(qd, DEMI_OPC_PUSH);
  if (qt == 0) return ErrnoError(EAGAIN, "too many operations in flight");
  PushRecord record;
  absl::Status mapped =
      ctx_.memory.Map(*sga, buffer, connection.pd(), segments, &record);
  if (!mapped.ok()) {
    ctx_.tokens.Release(qt);
    return mapped;
  }
  bool done_at_post = false;
  absl::Status sent = connection.Send(
      absl::MakeConstSpan(segments, num_segments), qt, &done_at_post);
  if (!sent.ok()) {
    ctx_.memory.Unmap(record);
    ctx_.tokens.Release(qt);
    return sent;
  }
  if (done_at_post) {
    ctx_.CompletePushAtPost(qt, record);
    return qt;
  }
  ctx_.Track(qt, record);
  return qt;
}

absl::StatusOr<demi_qtoken_t> StreamSockets::Pop(int qd) {
  Queue* queue = queues_.Find(qd);
  if (queue == nullptr) return NoQueue(qd);
  if (queue->state != Queue::State::kConnected &&
      queue->state != Queue::State::kFailed) {
    return ErrnoError(ENOTCONN, "pop on a queue that is not connected");
  }
  const demi_qtoken_t qt = ctx_.tokens.TryAllocate(qd, DEMI_OPC_POP);
  if (qt == 0) return ErrnoError(EAGAIN, "too many operations in flight");
  if (!queue->messages.empty()) {
    rdma::ReceivedMessage message = queue->messages.front();
    queue->messages.pop_front();
    CompletePop(*queue, qt, &message);
  } else if (queue->end_of_stream) {
    CompletePop(*queue, qt, nullptr);
  } else if (queue->error != 0 || queue->state == Queue::State::kFailed) {
    ctx_.tokens.Fail(qt, queue->error != 0 ? queue->error : ECONNRESET);
  } else {
    queue->pop_tokens.push_back(qt);
  }
  return qt;
}

void StreamSockets::CompletePop(Queue& queue, demi_qtoken_t qt,
                                const rdma::ReceivedMessage* message) {
  demi_qresult_t* result = ctx_.tokens.CompleteInPlace(qt, DEMI_OPC_POP);
  if (result == nullptr) return;
  demi_sgarray_t& sga = result->qr_value.sga;
  sga.sga_addr = queue.peer;
  if (message == nullptr) {  // end of stream: zero segments
    sga.sga_buf = nullptr;
    sga.sga_numsegs = 0;
    return;
  }
  LendPopped(queue.handles[message->buffer_index *
                               rdma::RcConnection::kMessagesPerBuffer +
                           message->part],
             message->segment_data, message->segment_lengths,
             message->num_segments, &sga);
  ++queue.held;
}

void StreamSockets::CompleteAccept(demi_qtoken_t qt, const Queue& accepted) {
  demi_qresult_t result{};
  result.qr_opcode = DEMI_OPC_ACCEPT;
  result.qr_value.ares.qd = accepted.qd;
  result.qr_value.ares.addr = accepted.peer;
  ctx_.tokens.Complete(qt, result);
}

absl::Status StreamSockets::GetPeerName(int qd, sockaddr* address,
                                        socklen_t* size) {
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  if (address == nullptr || size == nullptr) {
    return ErrnoError(EINVAL, "null address or size");
  }
  if (*size < static_cast<socklen_t>(sizeof(sockaddr_in))) {
    return ErrnoError(EINVAL, absl::StrCat("address size ", *size));
  }
  if (queue->state != Queue::State::kConnected) {
    return ErrnoError(ENOTCONN, "the queue is not connected");
  }
  std::memcpy(address, &queue->peer, sizeof(sockaddr_in));
  *size = sizeof(sockaddr_in);
  return absl::OkStatus();
}

absl::Status StreamSockets::SetLinger(int qd, const void* value,
                                      socklen_t size) {
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  if (value == nullptr) return ErrnoError(EINVAL, "null option value");
  if (size != static_cast<socklen_t>(sizeof(linger))) {
    return ErrnoError(EINVAL, "SO_LINGER takes a struct linger");
  }
  std::memcpy(&queue->linger_option, value, sizeof(linger));
  return absl::OkStatus();
}

absl::Status StreamSockets::GetLinger(int qd, void* value, socklen_t* size) {
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  if (value == nullptr || size == nullptr) {
    return ErrnoError(EINVAL, "null option value or size");
  }
  if (*size < static_cast<socklen_t>(sizeof(linger))) {
    return ErrnoError(EINVAL, "SO_LINGER needs room for a struct linger");
  }
  std::memcpy(value, &queue->linger_option, sizeof(linger));
  *size = sizeof(linger);
  return absl::OkStatus();
}

absl::Status StreamSockets::Close(int qd, Linger* linger) {
  std::unique_ptr<Queue> queue = queues_.Take(qd);
  if (queue == nullptr) return ErrnoError(EBADF, absl::StrCat("no queue ", qd));
  CancelPending(*queue, ECANCELED);
  if (queue->state == Queue::State::kListening) {
    // Connections never handed out go with their listener: those accepted
    // and those still being accepted (else, established later, they would
    // find no listener and stay open with a qd nobody knows).
    std::vector<int> orphans(queue->accepted.begin(), queue->accepted.end());
    queues_.ForEach([&orphans, listener_qd = queue->qd](int qd,
                                                        const Queue& q) {
      if (q.state == Queue::State::kAccepting && q.listener_qd == listener_qd) {
        orphans.push_back(qd);
      }
    });
    for (int orphan_qd : orphans) {
      std::unique_ptr<Queue> orphan = queues_.Take(orphan_qd);
      if (orphan != nullptr) Retire(std::move(orphan));
    }
  }
  queue->closed = true;
  const bool lingers = queue->linger_option.l_onoff != 0;
  if (queue->connection != nullptr && queue->error == 0) {
    rdma::RcConnection& connection = *queue->connection;
    connection.Flush();  // pushes that credits allow go out now
    if (lingers && queue->linger_option.l_linger <= 0) {
      // SO_LINGER with time 0: an abortive close. Pushes not yet sent are
      // dropped (ECANCELED) and the peer's pops fail with ECONNRESET.
      connection.FailAll(ECANCELED, *queue->sink);
    } else if (lingers || connection.queued_sends() == 0) {
      // Graceful: the peer pops what was sent, then end of stream. A push
      // still waiting for credits goes first; without SO_LINGER nothing
      // may wait for a peer that never pops, so such a close resets.
      absl::Status ended = connection.SendEndOfStream();
      if (ended.ok() && lingers) {
        queue->linger_id = ++last_linger_id_;
        linger->id = queue->linger_id;
        linger->time = absl::Seconds(queue->linger_option.l_linger);
      }
    } else {
      // Pushes still waiting for credits are dropped (ECANCELED) and the
      // connection is reset; the peer's pops fail with ECONNRESET.
      connection.FailAll(ECANCELED, *queue->sink);
    }
  }
  Retire(std::move(queue));
  return absl::OkStatus();
}

void StreamSockets::ExpireRetired(absl::Time now) {
  for (const std::unique_ptr<Queue>& queue : retired_) {
    if (queue->connection == nullptr || queue->error != 0 ||
        queue->connection->idle() ||
        now - queue->retired_at < ctx_.options.close_timeout) {
      continue;
    }
    DEMI_LOG(kInfo, "closed connection still busy after ",
             absl::FormatDuration(ctx_.options.close_timeout), ": reset");
    FailConnection(*queue, ECANCELED);
  }
  ReapIfAny();
}

StreamSockets::Queue* StreamSockets::LingeringQueue(uint64_t id) const {
  for (const std::unique_ptr<Queue>& queue : retired_) {
    if (queue->linger_id == id) return queue.get();
  }
  return nullptr;
}

bool StreamSockets::Lingering(uint64_t id) const {
  const Queue* queue = LingeringQueue(id);
  return queue != nullptr && queue->connection != nullptr &&
         queue->error == 0 && !queue->connection->idle();
}

void StreamSockets::EndLinger(uint64_t id) {
  Queue* queue = LingeringQueue(id);
  if (queue == nullptr) return;
  queue->linger_id = 0;
  if (queue->connection != nullptr && queue->error == 0 &&
      queue->connection->queued_sends() > 0) {
    // Some of it never got credits in time: reset, as a close that does
    // not linger would have at once.
    queue->connection->FailAll(ECANCELED, *queue->sink);
  }
}

void StreamSockets::CancelPending(Queue& queue, int errnum) {
  std::vector<demi_qtoken_t> pending;
  ctx_.tokens.PendingOf(queue.qd, &pending);
  for (demi_qtoken_t qt : pending) {
    // A push the device may still be reading completes when its connection
    // reports it (free protection): never before the device is done.
    if (PushRecord* push = ctx_.pushes.Find(qt)) {
      if (queue.connection != nullptr) continue;
      ctx_.memory.Finished(*push);
      ctx_.pushes.Erase(qt);
    }
    ctx_.tokens.Fail(qt, errnum);
  }
  queue.pop_tokens.clear();
  queue.accept_tokens.clear();
}

void StreamSockets::Retire(std::unique_ptr<Queue> queue) {
  queue->retired_at = absl::Now();
  retired_.push_back(std::move(queue));
  ReapIfAny();
}

void StreamSockets::ReapRetired() {
  for (size_t i = 0; i < retired_.size();) {
    Queue& queue = *retired_[i];
    bool busy =
        queue.held > 0 || (queue.connection != nullptr && queue.error == 0 &&
                           !queue.connection->idle());
    if (busy) {
      ++i;
      continue;
    }
    if (queue.connection != nullptr && queue.error == 0) {
      (void)queue.connection->id().Disconnect();
    }
    ctx_.handles.Remove(queue.handles);
    retired_[i] = std::move(retired_.back());
    retired_.pop_back();
  }
}

void StreamSockets::FailConnection(Queue& queue, int errnum) {
  if (queue.error == 0) queue.error = errnum;
  if (queue.state == Queue::State::kConnecting) {
    ctx_.tokens.Fail(queue.connect_token, errnum);
  }
  if (queue.state != Queue::State::kConnected) {
    queue.state = Queue::State::kFailed;
  }
  if (queue.connection != nullptr) {
    queue.connection->FailAll(errnum, *queue.sink);
  }
  while (!queue.pop_tokens.empty()) {
    demi_qtoken_t qt = queue.pop_tokens.front();
    queue.pop_tokens.pop_front();
    if (queue.end_of_stream) {
      CompletePop(queue, qt, nullptr);
    } else {
      ctx_.tokens.Fail(qt, errnum);
    }
  }
}

void StreamSockets::PollConnection(Queue& queue) {
  // A failure is reported to the sink (QueueSink::OnFailed).
  if (queue.connection != nullptr) (void)queue.connection->Poll(*queue.sink);
}

void StreamSockets::AddProgress() {
  // Every connection, open or retired, in a few shared completion queues:
  // idle ones cost nothing.
  ctx_.progress.Add(
      1, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under the worker's mutex
        ctx_.completions.Poll();
        ReapIfAny();
      });
  // rdma_cm events (connection setup and teardown) cost a system call to
  // look for (a few microseconds under emulation, against well under one for
  // a round without completions), so only every kCmPollInterval rounds:
  // connection events wait some tens of microseconds, messages do not wait
  // behind the system call.
  ctx_.progress.Add(kCmPollInterval, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    while (std::optional<rdma::CmEvent> event = channel_.TryNext()) {
      HandleEvent(std::move(*event));
    }
    // One clock read for the timed checks (none ever reaches the rounds
    // that poll completions).
    const absl::Time now = absl::Now();
    if (!retired_.empty()) ExpireRetired(now);
    KeepAliveIfDue(now);
    CheckStallsIfDue(now);
  });
}

template <typename Fn>
void StreamSockets::ForEachHealthyConnection(Fn fn) {
  queues_.ForEach([&fn](int, Queue& queue) {
    if (queue.state == Queue::State::kConnected && queue.error == 0 &&
        queue.connection != nullptr) {
      fn(*queue.connection);
    }
  });
}

void StreamSockets::CheckStallsIfDue(absl::Time now) {
  if (ctx_.options.stall_timeout <= absl::ZeroDuration()) return;
  if (now < next_stall_check_) return;
  next_stall_check_ =
      now + std::min(absl::Seconds(1), ctx_.options.stall_timeout / 4);
  ForEachHealthyConnection([this, now](rdma::RcConnection& connection) {
    connection.CheckStall(now, ctx_.options.stall_timeout);
  });
}

void StreamSockets::KeepAliveIfDue(absl::Time now) {
  if (ctx_.options.keepalive <= absl::ZeroDuration()) return;
  if (now < next_keepalive_) return;
  next_keepalive_ = now + ctx_.options.keepalive;
  uint64_t probes = 0;
  ForEachHealthyConnection([&probes, now](rdma::RcConnection& connection) {
    const uint64_t before = connection.keepalives();
    connection.SendKeepalive(now);
    probes += connection.keepalives() - before;
  });
  DEMI_LOG(kDebug, "keepalive: ", probes, " probes posted");
}

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

absl::StatusOr<std::unique_ptr<StreamSockets>> StreamSockets::Create(
    SocketContext& context) {
  DEMI_ASSIGN_OR_RETURN(rdma::EventChannel channel,
                        rdma::EventChannel::Create());
  auto sockets = std::unique_ptr<StreamSockets>(
      new StreamSockets(context, std::move(channel)));
  sockets->AddProgress();
  return sockets;
}

StreamSockets::StreamSockets(SocketContext& context, rdma::EventChannel channel)
    : ctx_(context), channel_(std::move(channel)), queues_(context.worker) {}

StreamSockets::~StreamSockets() {
  // Connections go before the channel.
  queues_.Clear();
  retired_.clear();
}

}  // namespace demi::libos
