#include "libos/worker.h"

#include <utility>

#include "common/logging.h"
#include "common/status_macros.h"

namespace demi::libos {

Worker::Worker(uint32_t index, const LibOSOptions& options)
    : index_(index),
      tokens_(options.max_operations, index),
      pushes_(static_cast<uint32_t>(tokens_.capacity())) {}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(
    uint32_t index, const LibOSOptions& options, rdma::DeviceRegistry& devices,
    ReceiveHandleTable& handles, PushMemory::ReturnElsewhere return_elsewhere) {
  std::unique_ptr<Worker> worker(new Worker(index, options));
  DEMI_ASSIGN_OR_RETURN(worker->wake_, WakeChannel::Create());
  DEMI_ASSIGN_OR_RETURN(worker->completions_,
                        rdma::DeviceCompletions::Create(devices));
  demi::MutexLock lock(&worker->mu_);
  worker->memory_.emplace(devices, handles, index, std::move(return_elsewhere));
  worker->context_.emplace(SocketContext{
      index, options, devices, *worker->completions_, worker->tokens_, handles,
      *worker->memory_, worker->pushes_, worker->progress_});
  DEMI_ASSIGN_OR_RETURN(worker->streams_,
                        StreamSockets::Create(*worker->context_));
  worker->datagrams_ = std::make_unique<DatagramSockets>(*worker->context_);
  return worker;
}

Worker::~Worker() {
  demi::MutexLock lock(&mu_);
  // Returns not yet drained go with their queues.
  returns_.store(nullptr, std::memory_order_relaxed);
  // Connections and datagram sockets go before the completion queues and
  // the protection domains.
  streams_.reset();
  datagrams_.reset();
  // Their queue pairs are gone: nothing reads the pushed memory any more.
  if (memory_.has_value()) {
    pushes_.ForEach([this](const PushRecord& record)
                        ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under mu_
                          memory_->Abandon(record);
                        });
  }
  completions_.reset();
}

void Worker::ReturnLater(ReceiveHandle& handle) {
  ReceiveHandle* head = returns_.load(std::memory_order_relaxed);
  do {
    handle.return_next = head;
  } while (!returns_.compare_exchange_weak(
      head, &handle, std::memory_order_seq_cst, std::memory_order_relaxed));
  // Published before the sleepers are counted: a waiter that entered its
  // sleep after this sees the buffer in its last round (wake_channel.h).
  if (wake_->sleepers() != 0 || wake_->loop_armed()) wake_->Wake();
}

void Worker::AppendWakeFds(std::vector<int>* fds) {
  completions_->AppendFds(fds);
  streams_->AppendWakeFds(fds);
  datagrams_->AppendWakeFds(fds);
}

absl::Status Worker::ArmNotify() {
  DEMI_RETURN_IF_ERROR(completions_->ArmNotify());
  return datagrams_->ArmNotify();
}

absl::StatusOr<bool> Worker::ArmForEventLoop(std::vector<int>* fds) {
  AppendWakeFds(fds);
  fds->push_back(wake_->loop_fd());
  // Armed before the last look at returns_ (as a sleeper: Enter, then the
  // round), so a buffer given back after it wakes the loop.
  wake_->set_loop_armed(true);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_->DrainLoopFd();
  completions_->DrainEvents();
  DEMI_RETURN_IF_ERROR(ArmNotify());
  RoundAll();
  const bool busy = tokens_.completed() != armed_at_ ||
                    tokens_.ready_count() > 0 || completions_->AfterPollDue();
  armed_at_ = tokens_.completed();
  // What completed so far is the loop's to take (the EAGAIN says so); the
  // loop's eventfd reports only what completes after this. Sleepers, if
  // any, are still woken for it when the lock is released.
  if (wake_->sleepers() == 0) woken_at_ = tokens_.completed();
  if (busy) wake_->set_loop_armed(false);
  return !busy;
}

bool Worker::PrepareToSleep() {
  wake_fds_.clear();
  AppendWakeFds(&wake_fds_);
  absl::Status ready = wake_->Watch(wake_fds_);
  if (ready.ok()) ready = ArmNotify();
  if (!ready.ok()) {
    if (!arm_failure_logged_) {
      arm_failure_logged_ = true;
      DEMI_LOG(kWarning, "a wait cannot sleep on its queues (", ready.message(),
               "): it sleeps in short slices");
    }
    return false;
  }
  return true;
}

void Worker::AfterSleep(const WakeChannel::Ticket& ticket) {
  wake_->Leave(ticket);
  if (ticket.watcher) completions_->DrainEvents();
}

void Worker::DrainReturns() {
  // Newest first: reversed, so buffers go back in the order they were
  // freed.
  ReceiveHandle* newest = returns_.exchange(nullptr, std::memory_order_acquire);
  ReceiveHandle* oldest = nullptr;
  while (newest != nullptr) {
    ReceiveHandle* next = newest->return_next;
    newest->return_next = oldest;
    oldest = newest;
    newest = next;
  }
  for (ReceiveHandle* handle = oldest; handle != nullptr;) {
    ReceiveHandle* next = handle->return_next;
    handle->return_next = nullptr;
    handle->owner()->ReturnBuffer(handle->buffer_index);
    handle = next;
  }
  // A returned buffer may have been a closed socket's last.
  streams_->Reap();
  datagrams_->Reap();
}

}  // namespace demi::libos
