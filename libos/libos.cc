#include "libos/libos.h"

#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/deadline.h"

namespace demi::libos {

// One demi queue: a socket, then a listener or a connection. A connection's
// receive buffers are lent out by pops (ReceiveBufferOwner).
struct LibOS::Queue final : ReceiveBufferOwner {
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
  int listener_qd = 0;                      // kAccepting: who accepted
  std::deque<demi_qtoken_t> accept_tokens;  // listener: waiting accepts
  std::deque<int> accepted;                 // listener: ready, not handed out
  std::deque<demi_qtoken_t> pop_tokens;     // waiting pops
  std::deque<rdma::ReceivedMessage> messages;  // arrived, not popped
  bool end_of_stream = false;
  bool closed = false;  // demi_close was called; kept only to finish sends
  int error = 0;        // errno once failed
  ReceiveHandle* handles = nullptr;  // one per receive buffer (handles_)
  uint32_t held = 0;  // buffers lent out by pops, not yet returned
};

// Routes one connection's completions to its queue.
class LibOS::QueueSink final : public rdma::CompletionSink {
 public:
  QueueSink(LibOS& os, Queue& queue) : os_(os), queue_(queue) {}

  void OnSendComplete(uint64_t cookie, const absl::Status& status) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {  // called under os_.mu_
    demi_qresult_t result{};
    result.qr_opcode = status.ok() ? DEMI_OPC_PUSH : DEMI_OPC_FAILED;
    // A push that demi_close stopped reports ECANCELED, whatever the flush
    // said.
    result.qr_ret = status.ok()     ? 0
                    : queue_.closed ? ECANCELED
                                    : ErrnoFromStatus(status);
    os_.FinishPush(cookie, result);
  }

  void OnMessage(const rdma::ReceivedMessage& message) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!queue_.pop_tokens.empty()) {
      demi_qtoken_t qt = queue_.pop_tokens.front();
      queue_.pop_tokens.pop_front();
      os_.CompletePop(queue_, qt, &message);
    } else {
      queue_.messages.push_back(message);
    }
  }

  void OnEndOfStream() override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    queue_.end_of_stream = true;
    while (!queue_.pop_tokens.empty()) {
      os_.CompletePop(queue_, queue_.pop_tokens.front(), nullptr);
      queue_.pop_tokens.pop_front();
    }
  }

  void OnFailed(const absl::Status& status) override
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (queue_.error == 0) os_.FailConnection(queue_, ErrnoFromStatus(status));
  }

 private:
  LibOS& os_;
  Queue& queue_;
};

namespace {

void* QdContext(int qd) {
  return reinterpret_cast<void*>(static_cast<intptr_t>(qd));
}

int QdOf(const rdma_cm_id* id) {
  return id == nullptr
             ? 0
             : static_cast<int>(reinterpret_cast<intptr_t>(id->context));
}

absl::StatusOr<sockaddr_in> Ipv4Address(const sockaddr* address,
                                        socklen_t size) {
  if (address == nullptr) return ErrnoError(EINVAL, "null address");
  if (size < static_cast<socklen_t>(sizeof(sockaddr_in))) {
    return ErrnoError(EINVAL, absl::StrCat("address size ", size));
  }
  if (address->sa_family != AF_INET) {
    return ErrnoError(EINVAL, "only AF_INET addresses are supported");
  }
  sockaddr_in ipv4;
  std::memcpy(&ipv4, address, sizeof(ipv4));
  return ipv4;
}

}  // namespace

LibOS::LibOS(const LibOSOptions& options)
    : options_(options),
      tokens_(options.max_operations),
      pushes_(static_cast<uint32_t>(tokens_.capacity())) {}

absl::StatusOr<std::unique_ptr<LibOS>> LibOS::Create(
    const LibOSOptions& options) {
  std::unique_ptr<LibOS> os(new LibOS(options));
  rdma::BufferPoolOptions pool = options.pool;
  pool.max_buffer_size = options.connection.eager_limit;
  DEMI_ASSIGN_OR_RETURN(
      os->devices_, rdma::DeviceRegistry::Create(pool, options.region_cache,
                                                 options.region_cache_enabled,
                                                 options.large_pool));
  DEMI_ASSIGN_OR_RETURN(rdma::EventChannel channel,
                        rdma::EventChannel::Create());
  os->channel_.emplace(std::move(channel));
  demi::MutexLock lock(&os->mu_);
  os->memory_.emplace(*os->devices_, os->handles_, options.max_operations);
  os->AddStreamProgress();
  return os;
}

LibOS::~LibOS() {
  demi::MutexLock lock(&mu_);
  // Connections go before the protection domains and the channel.
  queues_.Clear();
  retired_.clear();
  datagram_queues_.Clear();
  datagram_retired_.clear();
  // Their queue pairs are gone: nothing reads the pushed memory any more.
  // Popped arrays went with their queues.
  pushes_.ForEach([this](const PushRecord& record)
                      ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under mu_
                        memory_->Abandon(record);
                      });
}

absl::StatusOr<LibOS::Queue*> LibOS::Find(int qd) {
  Queue* queue = queues_.Find(qd);
  if (queue == nullptr) {
    return ErrnoError(EBADF, absl::StrCat("no queue ", qd));
  }
  return queue;
}

absl::StatusOr<DatagramQueue*> LibOS::FindDatagram(int qd) {
  DatagramQueue* queue = datagram_queues_.Find(qd);
  if (queue == nullptr) {
    return ErrnoError(EBADF, absl::StrCat("no datagram socket ", qd));
  }
  return queue;
}

absl::StatusOr<int> LibOS::Socket(int domain, int type, int protocol) {
  if (domain != AF_INET) {
    return ErrnoError(ENOTSUP, absl::StrCat("socket domain ", domain));
  }
  if (type == SOCK_DGRAM) return DatagramSocket(protocol);
  if (type != SOCK_STREAM) {
    return ErrnoError(ENOTSUP, absl::StrCat("socket type ", type,
                                            " (only SOCK_STREAM so far)"));
  }
  if (protocol != 0 && protocol != IPPROTO_TCP) {
    return ErrnoError(ENOTSUP, absl::StrCat("protocol ", protocol));
  }
  demi::MutexLock lock(&mu_);
  DEMI_ASSIGN_OR_RETURN(const int qd,
                        queues_.Insert(std::make_unique<Queue>()));
  queues_.Find(qd)->qd = qd;
  return qd;
}

absl::Status LibOS::Bind(int qd, const sockaddr* address, socklen_t size) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, FindDatagram(qd));
    return DatagramBind(*queue, address, size);
  }
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  DEMI_ASSIGN_OR_RETURN(sockaddr_in local, Ipv4Address(address, size));
  if (queue->state != Queue::State::kSocket || queue->bound) {
    return ErrnoError(EINVAL, "the socket is already bound or in use");
  }
  DEMI_ASSIGN_OR_RETURN(
      rdma::CmId id, rdma::CmId::Create(*channel_, RDMA_PS_TCP, QdContext(qd)));
  DEMI_RETURN_IF_ERROR(id.Bind(local));
  queue->id.emplace(std::move(id));
  queue->bound = true;
  return absl::OkStatus();
}

absl::Status LibOS::Listen(int qd, int backlog) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_RETURN_IF_ERROR(FindDatagram(qd).status());
    return ErrnoError(EOPNOTSUPP, "datagram socket");
  }
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
  return absl::OkStatus();
}

absl::StatusOr<demi_qtoken_t> LibOS::Accept(int qd) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_RETURN_IF_ERROR(FindDatagram(qd).status());
    return ErrnoError(EOPNOTSUPP, "datagram socket");
  }
  DEMI_ASSIGN_OR_RETURN(Queue * listener, Find(qd));
  if (listener->state != Queue::State::kListening) {
    return ErrnoError(EINVAL, "accept on a socket that is not listening");
  }
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        tokens_.Allocate(qd, DEMI_OPC_ACCEPT));
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

absl::StatusOr<demi_qtoken_t> LibOS::Connect(int qd, const sockaddr* address,
                                             socklen_t size) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, FindDatagram(qd));
    return DatagramConnect(*queue, address, size);
  }
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  DEMI_ASSIGN_OR_RETURN(sockaddr_in remote, Ipv4Address(address, size));
  if (queue->state != Queue::State::kSocket) {
    return ErrnoError(EINVAL, "connect on a listening or connected socket");
  }
  if (!queue->id.has_value()) {
    DEMI_ASSIGN_OR_RETURN(
        rdma::CmId id,
        rdma::CmId::Create(*channel_, RDMA_PS_TCP, QdContext(qd)));
    queue->id.emplace(std::move(id));
  }
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt,
                        tokens_.Allocate(qd, DEMI_OPC_CONNECT));
  absl::Status started =
      queue->id->ResolveAddress(remote, options_.resolve_timeout);
  if (!started.ok()) {
    (void)tokens_.Release(qt);
    return started;
  }
  queue->peer = remote;
  queue->state = Queue::State::kConnecting;
  queue->connect_token = qt;
  return qt;
}

absl::StatusOr<demi_qtoken_t> LibOS::Push(int qd, const demi_sgarray_t* sga) {
  DEMI_ASSIGN_OR_RETURN(const uint64_t total, CheckPushArray(sga));
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, FindDatagram(qd));
    return DatagramPush(*queue, sga, nullptr);
  }
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  DEMI_ASSIGN_OR_RETURN(const PushMemory::Buffer buffer,
                        memory_->Identify(sga->sga_buf));
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
                          tokens_.Allocate(qd, DEMI_OPC_PUSH));
    (void)tokens_.Fail(qt, queue->error != 0 ? queue->error : ECONNRESET);
    return qt;
  }
  if (queue->state != Queue::State::kConnected) {
    return ErrnoError(ENOTCONN, "push on a queue that is not connected");
  }
  rdma::RcConnection& connection = *queue->connection;
  PushRecord record;
  rdma::Segment segments[DEMI_SGARRAY_MAXSIZE];
  DEMI_RETURN_IF_ERROR(
      memory_->Map(*sga, buffer, connection.pd(),
                   /*remote_read=*/total > connection.rendezvous_threshold(),
                   segments, &record));
  absl::StatusOr<demi_qtoken_t> qt = tokens_.Allocate(qd, DEMI_OPC_PUSH);
  if (!qt.ok()) {
    memory_->Unmap(record);
    return qt.status();
  }
  bool done_at_post = false;
  absl::Status sent = connection.Send(
      absl::MakeConstSpan(segments, sga->sga_numsegs), *qt, &done_at_post);
  if (!sent.ok()) {
    memory_->Unmap(record);
    (void)tokens_.Release(*qt);
    return sent;
  }
  if (done_at_post) {
    CompletePushAtPost(*qt, record);
    return *qt;
  }
  memory_->Started(record);
  pushes_.Insert(*qt, record);
  return *qt;
}

void LibOS::CompletePushAtPost(demi_qtoken_t qt, const PushRecord& record) {
  memory_->Unmap(record);
  demi_qresult_t* result = tokens_.CompleteInPlace(qt, DEMI_OPC_PUSH);
  if (result != nullptr) CopyArray(record.sga, &result->qr_value.sga);
}

void LibOS::FinishPush(demi_qtoken_t qt, demi_qresult_t result) {
  PushRecord* push = pushes_.Find(qt);
  if (push == nullptr) return;  // cancelled by close
  result.qr_value.sga = push->sga;
  memory_->Finished(*push);
  pushes_.Erase(qt);
  (void)tokens_.Complete(qt, result);
}

absl::StatusOr<demi_qtoken_t> LibOS::Pop(int qd) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, FindDatagram(qd));
    return DatagramPop(*queue);
  }
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  if (queue->state != Queue::State::kConnected &&
      queue->state != Queue::State::kFailed) {
    return ErrnoError(ENOTCONN, "pop on a queue that is not connected");
  }
  DEMI_ASSIGN_OR_RETURN(demi_qtoken_t qt, tokens_.Allocate(qd, DEMI_OPC_POP));
  if (!queue->messages.empty()) {
    rdma::ReceivedMessage message = queue->messages.front();
    queue->messages.pop_front();
    CompletePop(*queue, qt, &message);
  } else if (queue->end_of_stream) {
    CompletePop(*queue, qt, nullptr);
  } else if (queue->error != 0 || queue->state == Queue::State::kFailed) {
    (void)tokens_.Fail(qt, queue->error != 0 ? queue->error : ECONNRESET);
  } else {
    queue->pop_tokens.push_back(qt);
  }
  return qt;
}

void LibOS::CompletePop(Queue& queue, demi_qtoken_t qt,
                        const rdma::ReceivedMessage* message) {
  demi_qresult_t* result = tokens_.CompleteInPlace(qt, DEMI_OPC_POP);
  if (result == nullptr) return;
  demi_sgarray_t& sga = result->qr_value.sga;
  sga.sga_addr = queue.peer;
  if (message == nullptr) {  // end of stream: zero segments
    sga.sga_buf = nullptr;
    sga.sga_numsegs = 0;
    return;
  }
  LendPopped(queue.handles[message->buffer_index], message->segment_data,
             message->segment_lengths, message->num_segments, &sga);
  ++queue.held;
}

void LibOS::CompleteAccept(demi_qtoken_t qt, const Queue& accepted) {
  demi_qresult_t result{};
  result.qr_opcode = DEMI_OPC_ACCEPT;
  result.qr_value.ares.qd = accepted.qd;
  result.qr_value.ares.addr = accepted.peer;
  (void)tokens_.Complete(qt, result);
}

absl::Status LibOS::GetPeerName(int qd, sockaddr* address, socklen_t* size) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_ASSIGN_OR_RETURN(DatagramQueue * queue, FindDatagram(qd));
    return DatagramGetPeerName(*queue, address, size);
  }
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

absl::Status LibOS::SetLinger(int qd, const void* value, socklen_t size) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_RETURN_IF_ERROR(FindDatagram(qd).status());
    return ErrnoError(ENOPROTOOPT, "SO_LINGER on datagrams");
  }
  DEMI_ASSIGN_OR_RETURN(Queue * queue, Find(qd));
  if (value == nullptr) return ErrnoError(EINVAL, "null option value");
  if (size != static_cast<socklen_t>(sizeof(linger))) {
    return ErrnoError(EINVAL, "SO_LINGER takes a struct linger");
  }
  std::memcpy(&queue->linger_option, value, sizeof(linger));
  return absl::OkStatus();
}

absl::Status LibOS::GetLinger(int qd, void* value, socklen_t* size) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) {
    DEMI_RETURN_IF_ERROR(FindDatagram(qd).status());
    return ErrnoError(ENOPROTOOPT, "SO_LINGER on datagrams");
  }
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

demi_sgarray_t LibOS::SgaAlloc(size_t size) {
  demi_sgarray_t sga{};
  if (size > UINT32_MAX) return sga;  // one segment's length is 32 bits
  void* handle = nullptr;
  void* data = nullptr;
  if (size <= devices_->pool().max_buffer_size()) {
    absl::StatusOr<rdma::PoolBuffer*> buffer = devices_->pool().Allocate(size);
    if (!buffer.ok()) {
      DEMI_LOG(kDebug, "demi_sgaalloc(", size,
               "): ", buffer.status().message());
      return sga;
    }
    handle = *buffer;
    data = (*buffer)->data();
  } else {
    absl::StatusOr<rdma::LargeBuffer*> buffer =
        devices_->large_pool().Allocate(size);
    if (!buffer.ok()) {
      DEMI_LOG(kDebug, "demi_sgaalloc(", size,
               "): ", buffer.status().message());
      return sga;
    }
    handle = *buffer;
    data = (*buffer)->data();
  }
  sga.sga_buf = handle;
  sga.sga_numsegs = 1;
  sga.sga_segs[0].sgaseg_buf = data;
  sga.sga_segs[0].sgaseg_len = static_cast<uint32_t>(size);
  return sga;
}

absl::Status LibOS::SgaFree(demi_sgarray_t* sga) {
  if (sga == nullptr || sga->sga_buf == nullptr) {
    return ErrnoError(EINVAL, "not an array the library owns");
  }
  if (sga->sga_numsegs > DEMI_SGARRAY_MAXSIZE) {
    return ErrnoError(EINVAL, "bad segment count");
  }
  demi::MutexLock lock(&mu_);
  DEMI_RETURN_IF_ERROR(memory_->Free(sga->sga_buf));
  ReapRetired();
  ReapDatagramQueues();
  return absl::OkStatus();
}

rdma::RegionCacheStats LibOS::CacheStats() const {
  return devices_->CacheStats();
}

absl::Status LibOS::Close(int qd) {
  demi::MutexLock lock(&mu_);
  if (IsDatagram(qd)) return DatagramClose(qd);
  std::unique_ptr<Queue> queue = queues_.Take(qd);
  if (queue == nullptr) return ErrnoError(EBADF, absl::StrCat("no queue ", qd));
  CancelPending(*queue, ECANCELED);
  if (queue->state == Queue::State::kListening) {
    // Connections accepted but never handed out go with their listener.
    for (int accepted_qd : queue->accepted) {
      std::unique_ptr<Queue> orphan = queues_.Take(accepted_qd);
      if (orphan != nullptr) Retire(std::move(orphan));
    }
  }
  queue->closed = true;
  if (queue->connection != nullptr) {
    queue->connection->Flush();  // pushes that credits allow go out now
    if (queue->error == 0 && queue->connection->queued_sends() == 0) {
      // Graceful: the peer pops what was sent, then end of stream.
      (void)queue->connection->SendEndOfStream();
    } else {
      // Pushes still waiting for credits are dropped (ECANCELED) and the
      // connection is reset; the peer's pops fail with ECONNRESET.
      queue->connection->FailAll(ECANCELED, *queue->sink);
    }
  }
  Retire(std::move(queue));
  return absl::OkStatus();
}

void LibOS::CancelPending(Queue& queue, int errnum) {
  std::vector<demi_qtoken_t> pending;
  tokens_.PendingOf(queue.qd, &pending);
  for (demi_qtoken_t qt : pending) {
    // A push the device may still be reading completes when its connection
    // reports it (free protection): never before the device is done.
    if (PushRecord* push = pushes_.Find(qt)) {
      if (queue.connection != nullptr) continue;
      memory_->Finished(*push);
      pushes_.Erase(qt);
    }
    (void)tokens_.Fail(qt, errnum);
  }
  queue.pop_tokens.clear();
  queue.accept_tokens.clear();
}

void LibOS::Retire(std::unique_ptr<Queue> queue) {
  retired_.push_back(std::move(queue));
  ReapRetired();
}

void LibOS::ReapRetiredQueues() {
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
    handles_.Remove(queue.handles);
    retired_[i] = std::move(retired_.back());
    retired_.pop_back();
  }
}

void LibOS::FailConnection(Queue& queue, int errnum) {
  if (queue.error == 0) queue.error = errnum;
  if (queue.state == Queue::State::kConnecting) {
    (void)tokens_.Fail(queue.connect_token, errnum);
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
      (void)tokens_.Fail(qt, errnum);
    }
  }
}

void LibOS::PollConnection(Queue& queue) {
  // A failure is reported to the sink (QueueSink::OnFailed).
  if (queue.connection != nullptr) (void)queue.connection->Poll(*queue.sink);
}

void LibOS::AddStreamProgress() {
  // Every connection, open or retired, in a few shared completion queues:
  // idle ones cost nothing.
  progress_.Add(1, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under mu_
    devices_->PollCompletions();
    ReapRetired();
  });
  // rdma_cm events (connection setup and teardown) cost a system call to
  // look for (a few microseconds under emulation, against well under one for
  // a round without completions), so only every kCmPollInterval rounds:
  // connection events wait some tens of microseconds, messages do not wait
  // behind the system call.
  progress_.Add(kCmPollInterval, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    while (std::optional<rdma::CmEvent> event = channel_->TryNext()) {
      HandleEvent(std::move(*event));
    }
    ReapRetired();
  });
}

void LibOS::HandleEvent(rdma::CmEvent event) {
  if (event.type() == RDMA_CM_EVENT_CONNECT_REQUEST) {
    Queue* listener = queues_.Find(QdOf(event.listen_id()));
    if (listener == nullptr || listener->state != Queue::State::kListening) {
      rdma::CmId::RejectRequest(std::move(event));
      return;
    }
    HandleConnectRequest(std::move(event), *listener);
    return;
  }
  Queue* queue = queues_.Find(QdOf(event.id()));
  if (queue == nullptr) {
    // A closed queue's event: nothing waits for it; answer a disconnect.
    return;
  }
  const rdma_cm_event_type type = event.type();
  const int status = event.status();
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: {
      absl::Status routed = queue->id->ResolveRoute(options_.resolve_timeout);
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

rdma::RcConnectionOptions LibOS::ConnectionOptions(
    const ibv_context* device) const {
  rdma::RcConnectionOptions options = options_.connection;
  options.pd = devices_->PdFor(device);
  options.large_pool = devices_->LargePoolFor(options.pd);
  options.completions = devices_->CompletionsFor(options.pd);
  return options;
}

void LibOS::Adopt(Queue& queue,
                  std::unique_ptr<rdma::RcConnection> connection) {
  queue.sink = std::make_unique<QueueSink>(*this, queue);
  connection->set_sink(queue.sink.get());
  queue.connection = std::move(connection);
}

void LibOS::HandleConnectRequest(rdma::CmEvent event, Queue& listener) {
  const rdma::RcConnectionOptions options =
      ConnectionOptions(event.id()->verbs);
  rdma_cm_id* id = event.id();
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
  id->context = QdContext(queue.qd);
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

void LibOS::HandleEstablished(const rdma::CmEvent& event, Queue& queue) {
  if (queue.connection == nullptr) return;
  absl::Status established = queue.connection->OnEstablished(event);
  if (!established.ok()) {
    FailConnection(queue, ErrnoFromStatus(established));
    return;
  }
  queue.handles = handles_.Add(queue, options_.connection.receive_buffers);
  if (queue.handles == nullptr) {
    FailConnection(queue, ENOMEM);  // no room for its popped arrays' handles
    return;
  }

  const Queue::State was = queue.state;
  queue.state = Queue::State::kConnected;
  if (was == Queue::State::kConnecting) {
    demi_qresult_t result{};
    result.qr_opcode = DEMI_OPC_CONNECT;
    (void)tokens_.Complete(queue.connect_token, result);
    return;
  }
  Queue* listener = queues_.Find(queue.listener_qd);
  if (listener == nullptr) return;
  Queue& accepting = *listener;
  if (!accepting.accept_tokens.empty()) {
    demi_qtoken_t qt = accepting.accept_tokens.front();
    accepting.accept_tokens.pop_front();
    CompleteAccept(qt, queue);
  } else {
    accepting.accepted.push_back(queue.qd);
  }
}

template <typename Look>
TokenState LibOS::WaitLoop(absl::Duration timeout, Look look) {
  Deadline deadline(timeout);
  for (;;) {
    {
      demi::MutexLock lock(&mu_);
      TokenState state = look();
      if (state != TokenState::kPending) return state;
      progress_.Round();
      state = look();
      if (state != TokenState::kPending) return state;
    }
    // The lock is dropped here, so other threads get in between rounds.
    if (deadline.Passed()) return TokenState::kPending;
  }
}

absl::Status LibOS::Wait(demi_qtoken_t qt, absl::Duration timeout,
                         demi_qresult_t* result) {
  if (result == nullptr) return ErrnoError(EINVAL, "null result");
  const TokenState state =
      WaitLoop(timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return tokens_.TakeIfDone(qt, result);
      });
  switch (state) {
    case TokenState::kDone:
      return absl::OkStatus();
    case TokenState::kInvalid:
      return ErrnoError(EINVAL, "unknown or consumed queue token");
    case TokenState::kPending:
      break;
  }
  return ErrnoError(ETIMEDOUT, "the operation did not complete in time");
}

absl::StatusOr<int> LibOS::WaitAny(absl::Span<const demi_qtoken_t> qts,
                                   absl::Duration timeout,
                                   demi_qresult_t* result) {
  if (result == nullptr || qts.empty() || qts.data() == nullptr) {
    return ErrnoError(EINVAL, "bad result or token array");
  }
  size_t index = 0;  // of the token taken, or of the invalid one
  const TokenState state =
      WaitLoop(timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        // Start after the index returned last time, so a busy early token
        // cannot starve later ones.
        const size_t start = wait_any_start_ % qts.size();
        for (size_t k = 0; k < qts.size(); ++k) {
          index = (start + k) % qts.size();
          const TokenState one = tokens_.TakeIfDone(qts[index], result);
          if (one == TokenState::kDone) {
            wait_any_start_ = static_cast<uint32_t>(index + 1);
          }
          if (one != TokenState::kPending) return one;
        }
        return TokenState::kPending;
      });
  switch (state) {
    case TokenState::kDone:
      return static_cast<int>(index);
    case TokenState::kInvalid:
      return ErrnoError(EINVAL,
                        absl::StrCat("queue token at ", index, " is invalid"));
    case TokenState::kPending:
      break;
  }
  return ErrnoError(ETIMEDOUT, "no operation completed in time");
}

absl::StatusOr<int> LibOS::WaitNextN(absl::Span<demi_qresult_t> results,
                                     absl::Duration timeout) {
  if (results.empty() || results.data() == nullptr) {
    return ErrnoError(EINVAL, "bad result array");
  }
  size_t taken = 0;
  const TokenState state =
      WaitLoop(timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        taken = tokens_.TakeReady(results);
        return taken > 0 ? TokenState::kDone : TokenState::kPending;
      });
  if (state == TokenState::kDone) return static_cast<int>(taken);
  return ErrnoError(ETIMEDOUT, "no operation completed in time");
}

}  // namespace demi::libos
