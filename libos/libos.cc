#include "libos/libos.h"

#include <netinet/in.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/deadline.h"

namespace demi::libos {

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
  demi::MutexLock lock(&os->mu_);
  os->memory_.emplace(*os->devices_, os->handles_, options.max_operations);
  os->context_.emplace(SocketContext{os->options_, *os->devices_, os->tokens_,
                                     os->handles_, *os->memory_, os->pushes_,
                                     os->progress_});
  DEMI_ASSIGN_OR_RETURN(os->streams_, StreamSockets::Create(*os->context_));
  os->datagrams_ = std::make_unique<DatagramSockets>(*os->context_);
  return os;
}

LibOS::~LibOS() {
  demi::MutexLock lock(&mu_);
  // Connections and datagram sockets go before the protection domains.
  streams_.reset();
  datagrams_.reset();
  // Their queue pairs are gone: nothing reads the pushed memory any more.
  // Popped arrays went with their queues.
  if (memory_.has_value()) {
    pushes_.ForEach([this](const PushRecord& record)
                        ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under mu_
                          memory_->Abandon(record);
                        });
  }
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
  demi::MutexLock lock(&mu_);
  if (type == SOCK_DGRAM) return datagrams_->Open(protocol);
  return streams_->Open(protocol);
}

absl::Status LibOS::Bind(int qd, const sockaddr* address, socklen_t size) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Bind(qd, address, size);
}

absl::Status LibOS::Listen(int qd, int backlog) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Listen(qd, backlog);
}

absl::StatusOr<demi_qtoken_t> LibOS::Accept(int qd) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Accept(qd);
}

absl::StatusOr<demi_qtoken_t> LibOS::Connect(int qd, const sockaddr* address,
                                             socklen_t size) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Connect(qd, address, size);
}

absl::Status LibOS::Close(int qd) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Close(qd);
}

absl::StatusOr<demi_qtoken_t> LibOS::Push(int qd, const demi_sgarray_t* sga) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Push(qd, sga);
}

absl::StatusOr<demi_qtoken_t> LibOS::PushTo(int qd, const demi_sgarray_t* sga,
                                            const sockaddr* address,
                                            socklen_t size) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).PushTo(qd, sga, address, size);
}

absl::StatusOr<demi_qtoken_t> LibOS::Pop(int qd) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).Pop(qd);
}

absl::Status LibOS::GetPeerName(int qd, sockaddr* address, socklen_t* size) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).GetPeerName(qd, address, size);
}

absl::Status LibOS::SetLinger(int qd, const void* value, socklen_t size) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).SetLinger(qd, value, size);
}

absl::Status LibOS::GetLinger(int qd, void* value, socklen_t* size) {
  demi::MutexLock lock(&mu_);
  return KindOf(qd).GetLinger(qd, value, size);
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
    absl::StatusOr<rdma::PoolBuffer*> buffer = devices_->pool().Allocate(size);
    if (!buffer.ok()) {
      DEMI_LOG(kDebug, "demi_sgaalloc(", size,
               "): ", buffer.status().message());
      return sga;
    }
    sga.sga_buf = *buffer;
    sga.sga_segs[0].sgaseg_buf = (*buffer)->data();
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
  demi::MutexLock lock(&mu_);
  DEMI_RETURN_IF_ERROR(memory_->Free(sga->sga_buf));
  // The array may have been a closed socket's last.
  streams_->Reap();
  datagrams_->Reap();
  return absl::OkStatus();
}

rdma::RegionCacheStats LibOS::CacheStats() const {
  return devices_->CacheStats();
}

DatagramStats LibOS::DatagramStatistics() const {
  demi::MutexLock lock(&mu_);
  return datagrams_->Statistics();
}

template <typename Look>
TokenState LibOS::WaitLoop(absl::Duration timeout, Look look) {
  Deadline deadline(timeout);
  {
    demi::MutexLock lock(&mu_);
    const TokenState state = look();
    if (state != TokenState::kPending) return state;
  }
  // One look per round, after it: a result another thread's round
  // delivered while the lock was dropped is seen after this thread's next
  // round. The first round of each wait catches up on periodic sources a
  // program that waits seldom has left idle (ProgressEngine).
  for (bool first = true;; first = false) {
    {
      demi::MutexLock lock(&mu_);
      progress_.Round(/*catch_up=*/first);
      const TokenState state = look();
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
