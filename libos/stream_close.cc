// StreamSockets, closing: demi_close with and without linger, the queues
// retired until their sends finish, and their reaping.

#include <cerrno>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "libos/stream_queue.h"
#include "libos/stream_sockets.h"

namespace demi::libos {

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

}  // namespace demi::libos
