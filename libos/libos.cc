#include "libos/libos.h"

#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/deadline.h"

namespace demi::libos {

namespace {

absl::Status NoSuchQueue(int qd) {
  return ErrnoError(EBADF, absl::StrCat("no queue ", qd));
}

// The calling thread's worker, per LibOS (a new LibOS at the same address
// would only inherit an index, which is valid for any LibOS).
struct ThreadWorker {
  const void* os = nullptr;
  uint32_t index = 0;
};
ABSL_CONST_INIT thread_local ThreadWorker this_thread
    __attribute__((tls_model("initial-exec")));

// Where demi_wait_any starts looking, per thread, so a busy early token
// cannot starve later ones.
ABSL_CONST_INIT thread_local uint32_t wait_any_start
    __attribute__((tls_model("initial-exec"))) = 0;

// Sums the workers' datagram counters: the device's own drop counter is
// the same device's in each, so it is not summed.
void AddDatagramStats(const DatagramStats& from, DatagramStats* to) {
  to->sent += from.sent;
  to->send_failed += from.send_failed;
  to->received += from.received;
  to->malformed += from.malformed;
  to->filtered += from.filtered;
  to->forged += from.forged;
  to->receive_queue_empty += from.receive_queue_empty;
  if (from.device_drops_reported) {
    to->device_drops_reported = true;
    if (from.device_dropped > to->device_dropped) {
      to->device_dropped = from.device_dropped;
    }
  }
  to->ah_hits += from.ah_hits;
  to->ah_misses += from.ah_misses;
  to->ah_entries += from.ah_entries;
  to->ah_stale += from.ah_stale;
  to->resolution_failures += from.resolution_failures;
  to->route_refreshes += from.route_refreshes;
  to->route_changes += from.route_changes;
  to->route_drops += from.route_drops;
  if (from.max_payload != 0 &&
      (to->max_payload == 0 || from.max_payload < to->max_payload)) {
    to->max_payload = from.max_payload;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<LibOS>> LibOS::Create(
    const LibOSOptions& options) {
  std::unique_ptr<LibOS> os(new LibOS(options));
  rdma::BufferPoolOptions pool = options.pool;
  pool.max_buffer_size = options.connection.eager_limit;
  DEMI_ASSIGN_OR_RETURN(
      os->devices_, rdma::DeviceRegistry::Create(pool, options.region_cache,
                                                 options.region_cache_enabled,
                                                 options.large_pool));
  os->stocks_.emplace(os->devices_->pool());
  // The memory of no worker: demi_sgafree's, from any thread; a popped
  // array it frees goes back through its worker's return stack.
  LibOS* self = os.get();
  os->library_memory_.emplace(
      *os->devices_, os->handles_, kMaxQdWorkers,
      [self](ReceiveHandle& handle) { self->ReturnToOwner(handle); });
  // The first worker now, so that what a worker needs (an event channel,
  // completion queues) fails demi_init, not the first demi_socket.
  absl::Status error;
  if (os->ThisThreadsWorker(&error) == nullptr) return error;
  os->stocks_->MakeLive();
  return os;
}

LibOS::~LibOS() {
  closing_.store(true, std::memory_order_release);
  // This thread's stock goes back now; other threads' are dropped.
  stocks_.reset();
  // Each worker destroys its queue pairs before the devices go.
  for (std::unique_ptr<Worker>& worker : owned_workers_) worker.reset();
}

absl::StatusOr<int> LibOS::EventFd() {
  demi::MutexLock lock(&event_mu_);
  if (!event_set_.has_value()) {
    DEMI_ASSIGN_OR_RETURN(EpollSet set, EpollSet::Create());
    event_set_.emplace(std::move(set));
  }
  return event_set_->fd();
}

absl::Status LibOS::EventArm() {
  DEMI_RETURN_IF_ERROR(EventFd().status());
  demi::MutexLock lock(&event_mu_);
  bool quiet = true;
  std::vector<int> fds;
  for (uint32_t i = 0; i < kMaxQdWorkers; ++i) {
    Worker* worker = WorkerAt(i);
    if (worker == nullptr) continue;
    WorkerLock worker_lock(*worker);
    DEMI_ASSIGN_OR_RETURN(const bool armed, worker->ArmForEventLoop(&fds));
    quiet &= armed;
  }
  // Descriptors come and go with sockets (a datagram channel, a device's):
  // new ones join the set here, before the loop sleeps.
  DEMI_RETURN_IF_ERROR(event_set_->Watch(fds));
  if (!quiet) return ErrnoError(EAGAIN, "operations completed: look first");
  return absl::OkStatus();
}

Worker* LibOS::ThisThreadsWorker(absl::Status* error) {
  if (this_thread.os != this) {
    this_thread.os = this;
    this_thread.index =
        next_worker_.fetch_add(1, std::memory_order_relaxed) % kMaxQdWorkers;
  }
  const uint32_t index = this_thread.index;
  if (Worker* worker = WorkerAt(index); worker != nullptr) return worker;
  demi::MutexLock lock(&make_mu_);
  if (Worker* worker = WorkerAt(index); worker != nullptr) return worker;
  absl::StatusOr<std::unique_ptr<Worker>> made =
      Worker::Create(index, options_, *devices_, handles_,
                     [this](ReceiveHandle& handle) { ReturnToOwner(handle); });
  if (!made.ok()) {
    *error = made.status();
    return nullptr;
  }
  owned_workers_[index] = *std::move(made);
  workers_[index].store(owned_workers_[index].get(), std::memory_order_release);
  worker_mask_.fetch_or(uint32_t{1} << index, std::memory_order_release);
  return owned_workers_[index].get();
}

void LibOS::ReturnToOwner(ReceiveHandle& handle) {
  if (closing_.load(std::memory_order_acquire)) return;  // queues going too
  if (Worker* owner = WorkerAt(handle.worker); owner != nullptr) {
    owner->ReturnLater(handle);
  }
}

template <typename Result, typename Call>
Result LibOS::OnQueue(int qd, Call call) {
  Worker* worker = WorkerOfQd(qd);
  if (worker == nullptr) return NoSuchQueue(qd);
  WorkerLock lock(*worker);
  // By the kind bit, to the final class itself: `call` takes `auto&`, so
  // the call is direct (no virtual dispatch on every push and pop).
  if (QdKind(qd) == 1) return call(worker->datagrams());
  return call(worker->streams());
}

absl::StatusOr<int> LibOS::Socket(int domain, int type, int protocol) {
  if (domain != AF_INET) {
    return ErrnoError(ENOTSUP, absl::StrCat("socket domain ", domain));
  }
  if (type != SOCK_STREAM && type != SOCK_DGRAM) {
    return ErrnoError(ENOTSUP,
                      absl::StrCat("socket type ", type,
                                   " (SOCK_STREAM and SOCK_DGRAM only)"));
  }
  absl::Status error;
  Worker* worker = ThisThreadsWorker(&error);
  if (worker == nullptr) return error;
  WorkerLock lock(*worker);
  if (type == SOCK_DGRAM) return worker->datagrams().Open(protocol);
  return worker->streams().Open(protocol);
}

absl::Status LibOS::Bind(int qd, const sockaddr* address, socklen_t size) {
  return OnQueue<absl::Status>(
      qd, [&](auto& s) { return s.Bind(qd, address, size); });
}

absl::Status LibOS::Listen(int qd, int backlog) {
  return OnQueue<absl::Status>(qd,
                               [&](auto& s) { return s.Listen(qd, backlog); });
}

absl::StatusOr<demi_qtoken_t> LibOS::Accept(int qd) {
  return OnQueue<absl::StatusOr<demi_qtoken_t>>(
      qd, [&](auto& s) { return s.Accept(qd); });
}

absl::StatusOr<demi_qtoken_t> LibOS::Connect(int qd, const sockaddr* address,
                                             socklen_t size) {
  return OnQueue<absl::StatusOr<demi_qtoken_t>>(
      qd, [&](auto& s) { return s.Connect(qd, address, size); });
}

absl::Status LibOS::Close(int qd) {
  Linger linger;
  DEMI_RETURN_IF_ERROR(
      OnQueue<absl::Status>(qd, [&](auto& s) { return s.Close(qd, &linger); }));
  if (linger.id == 0) return absl::OkStatus();
  // SO_LINGER: make progress until the peer has acknowledged everything the
  // closed connection sent, or the linger time is up.
  Worker& worker = *WorkerOfQd(qd);
  const TokenState state =
      WaitLoop(OneWorker(worker), worker, absl::InfiniteDuration(), linger.time,
               [&](Worker& w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                 return w.streams().Lingering(linger.id) ? TokenState::kPending
                                                         : TokenState::kDone;
               });
  if (state == TokenState::kPending) {
    WorkerLock lock(worker);
    worker.streams().EndLinger(linger.id);
  }
  return absl::OkStatus();
}

absl::StatusOr<demi_qtoken_t> LibOS::Push(int qd, const demi_sgarray_t* sga) {
  return OnQueue<absl::StatusOr<demi_qtoken_t>>(
      qd, [&](auto& s) { return s.Push(qd, sga); });
}

absl::StatusOr<demi_qtoken_t> LibOS::PushTo(int qd, const demi_sgarray_t* sga,
                                            const sockaddr* address,
                                            socklen_t size) {
  return OnQueue<absl::StatusOr<demi_qtoken_t>>(
      qd, [&](auto& s) { return s.PushTo(qd, sga, address, size); });
}

absl::StatusOr<demi_qtoken_t> LibOS::Pop(int qd) {
  return OnQueue<absl::StatusOr<demi_qtoken_t>>(
      qd, [&](auto& s) { return s.Pop(qd); });
}

absl::Status LibOS::GetPeerName(int qd, sockaddr* address, socklen_t* size) {
  return OnQueue<absl::Status>(
      qd, [&](auto& s) { return s.GetPeerName(qd, address, size); });
}

absl::Status LibOS::SetLinger(int qd, const void* value, socklen_t size) {
  return OnQueue<absl::Status>(
      qd, [&](auto& s) { return s.SetLinger(qd, value, size); });
}

absl::Status LibOS::GetLinger(int qd, void* value, socklen_t* size) {
  return OnQueue<absl::Status>(
      qd, [&](auto& s) { return s.GetLinger(qd, value, size); });
}

demi_sgarray_t LibOS::SgaAlloc(size_t size) {
  // One named result, so it is built in the caller's place (a 300-byte
  // copy otherwise). Only the fields in use are set: a failure has no
  // buffer and no segments; success has one segment (those past it are left
  // unset, as in any array the library hands out).
  demi_sgarray_t sga;
  sga.sga_buf = nullptr;
  sga.sga_numsegs = 0;
  sga.sga_segs[0] = {nullptr, 0};
  sga.sga_addr = sockaddr_in{};
  if (size == 0 || size > UINT32_MAX) return sga;  // 32-bit segment lengths
  if (size <= devices_->pool().max_buffer_size()) {
    rdma::PoolBuffer* kept = stocks_->ThisThreads().Allocate(size);
    if (kept == nullptr) {
      absl::StatusOr<rdma::PoolBuffer*> buffer =
          devices_->pool().Allocate(size);
      if (!buffer.ok()) {
        DEMI_LOG(kDebug, "demi_sgaalloc(", size,
                 "): ", buffer.status().message());
        return sga;
      }
      kept = *buffer;
    }
    sga.sga_buf = kept;
    sga.sga_segs[0].sgaseg_buf = kept->data();
  } else {
    absl::StatusOr<rdma::LargeBuffer*> buffer =
        devices_->large_pool().Allocate(size);
    if (!buffer.ok()) {
      DEMI_LOG(kDebug, "demi_sgaalloc(", size,
               "): ", buffer.status().message());
      return sga;
    }
    sga.sga_buf = *buffer;
    sga.sga_segs[0].sgaseg_buf = (*buffer)->data();
  }
  sga.sga_numsegs = 1;
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
  // Classified once, and freed, without a worker lock: what Classify reads
  // is atomic or fixed while the array is the application's, a racing
  // second free loses at the buffer's PinCount, a small library buffer
  // stays in this thread's stock for its next sgaalloc, and a popped
  // stream array's buffer goes back to its queue through its worker's
  // lock-free return stack, drained by that worker's next round (which
  // re-posted it only then anyway; the peer's credits wait for that).
  PushMemory::Buffer buffer;
  if (!library_memory_->Classify(sga->sga_buf, &buffer)) {
    return ErrnoError(EINVAL, "not an array the library owns (or freed)");
  }
  if (buffer.kind == PushMemory::Buffer::Kind::kReceived &&
      buffer.received->return_at_once) {
    // A datagram buffer: back to its socket now, under its worker's lock.
    Worker* owner = WorkerAt(buffer.received->worker);
    if (owner == nullptr) return ErrnoError(EINVAL, "a handle of no worker");
    WorkerLock lock(*owner);
    DEMI_RETURN_IF_ERROR(owner->memory().Free(sga->sga_buf, buffer));
    owner->datagrams().Reap();  // it may have been a closed socket's last
    return absl::OkStatus();
  }
  return library_memory_->Free(sga->sga_buf, buffer, &stocks_->ThisThreads());
}

rdma::RegionCacheStats LibOS::CacheStats() const {
  return devices_->CacheStats();
}

DatagramStats LibOS::DatagramStatistics() const {
  DatagramStats sum;
  for (uint32_t i = 0; i < kMaxQdWorkers; ++i) {
    Worker* worker = WorkerAt(i);
    if (worker == nullptr) continue;
    WorkerLock lock(*worker);
    AddDatagramStats(worker->DatagramStatistics(), &sum);
  }
  return sum;
}

template <typename EachWorker, typename Look>
TokenState LibOS::WaitLoop(EachWorker each_worker, Worker& sleep_on,
                           absl::Duration sleep_cap, absl::Duration timeout,
                           Look look) {
  Deadline deadline(timeout);
  TokenState state = TokenState::kPending;
  each_worker([&](Worker& worker) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    WorkerLock lock(worker);
    state = look(worker);
    return state == TokenState::kPending;
  });
  if (state != TokenState::kPending) return state;
  // Spin: one look per round, after it: a result another thread's round
  // delivered while the lock was dropped is seen after this thread's next
  // round. The first round of each wait catches up on periodic sources a
  // program that waits seldom has left idle (ProgressEngine).
  Deadline spin(options_.spin);
  for (bool first = true;; first = false) {
    each_worker([&](Worker& worker) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      WorkerLock lock(worker);
      worker.Round(/*catch_up=*/first);
      state = look(worker);
      return state == TokenState::kPending;
    });
    if (state != TokenState::kPending) return state;
    // The locks are dropped here, so other threads get in between rounds.
    if (deadline.Passed()) return TokenState::kPending;
    if (!spin.Passed()) continue;
    // The spin budget is spent: sleep until the worker has news or the
    // wait is over (the other workers of a wait over several are looked at
    // after the sleep, which sleep_cap keeps short).
    {
      WorkerLock lock(sleep_on);
      state = sleep_on.SleepUnlessDone(
          std::min(deadline.Remaining(), sleep_cap),
          [&](Worker& worker)
              ABSL_NO_THREAD_SAFETY_ANALYSIS { return look(worker); });
    }
    if (state != TokenState::kPending) return state;
  }
}

absl::Status LibOS::Wait(demi_qtoken_t qt, absl::Duration timeout,
                         demi_qresult_t* result) {
  if (result == nullptr) return ErrnoError(EINVAL, "null result");
  Worker* owner = WorkerOfToken(qt);
  TokenState state = TokenState::kInvalid;
  if (owner != nullptr) {
    state =
        WaitLoop(OneWorker(*owner), *owner, absl::InfiniteDuration(), timeout,
                 [&](Worker& worker) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                   return worker.tokens().TakeIfDone(qt, result);
                 });
  }
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
  uint32_t workers = 0;
  for (size_t i = 0; i < qts.size(); ++i) {
    Worker* owner = WorkerOfToken(qts[i]);
    if (owner == nullptr) {
      return ErrnoError(EINVAL,
                        absl::StrCat("queue token at ", i, " is invalid"));
    }
    workers |= uint32_t{1} << owner->index();
  }
  size_t index = 0;  // of the token taken, or of the invalid one
  const TokenState state = WaitLoop(
      WorkersIn(workers), *SleepWorker(workers), SleepCap(workers), timeout,
      [&](Worker& worker) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        // Start after the index returned last time, so a busy early token
        // cannot starve later ones; only this worker's tokens.
        const size_t start = wait_any_start % qts.size();
        for (size_t k = 0; k < qts.size(); ++k) {
          index = (start + k) % qts.size();
          if (TokenTable::TagOf(qts[index]) != worker.index()) continue;
          const TokenState one = worker.tokens().TakeIfDone(qts[index], result);
          if (one == TokenState::kDone) {
            wait_any_start = static_cast<uint32_t>(index + 1);
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
  uint32_t workers = worker_mask_.load(std::memory_order_acquire);
  if (workers == 0) {  // no queue yet: this thread's worker (made now)
    absl::Status error;
    Worker* mine = ThisThreadsWorker(&error);
    if (mine == nullptr) return error;
    workers = uint32_t{1} << mine->index();
  }
  size_t taken = 0;
  const TokenState state =
      WaitLoop(WorkersIn(workers), *SleepWorker(workers), SleepCap(workers),
               timeout, [&](Worker& worker) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                 taken = worker.tokens().TakeReady(results);
                 return taken > 0 ? TokenState::kDone : TokenState::kPending;
               });
  if (state == TokenState::kDone) return static_cast<int>(taken);
  return ErrnoError(ETIMEDOUT, "no operation completed in time");
}

}  // namespace demi::libos
