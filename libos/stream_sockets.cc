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
#include "libos/stream_queue.h"

namespace demi::libos {
namespace {

absl::Status NoQueue(int qd) {
  return ErrnoError(EBADF, absl::StrCat("no queue ", qd));
}

}  // namespace

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
  // The common small push: its bytes are copied now (inline by
  // ibv_post_send, or into a stage of the connection's), so no keys are
  // needed (no mapping, no lease) and the push is done now: its token is
  // made done once the send is posted or staged.
  if (total <= connection.copied_send_limit() && ctx_.tokens.has_free_slot() &&
      ctx_.memory.InlineReadable(*sga, buffer, connection.pd())) {
    UnmappedSegments(*sga, segments);
    if (connection.TrySendCopied(absl::MakeConstSpan(segments, num_segments))) {
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
