#include "rdma/completion_channel.h"

#include <fcntl.h>

#include <cerrno>

#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<CompletionChannel> CompletionChannel::Create(
    ibv_context* context) {
  if (context == nullptr) return ErrnoError(EINVAL, "no device context");
  ibv_comp_channel* channel = ibv_create_comp_channel(context);
  if (channel == nullptr) {
    return ErrnoStatus(errno, "ibv_create_comp_channel");
  }
  CompletionChannel owned(channel);
  const int flags = fcntl(channel->fd, F_GETFL);
  if (flags < 0 || fcntl(channel->fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(errno, "making the completion channel non-blocking");
  }
  return owned;
}

int CompletionChannel::Drain() {
  int events = 0;
  ibv_cq* cq = nullptr;
  void* context = nullptr;
  // Non-blocking: -1 with EAGAIN once the channel is empty.
  while (ibv_get_cq_event(channel_.get(), &cq, &context) == 0) {
    ibv_ack_cq_events(cq, 1);
    ++events;
  }
  return events;
}

absl::Status ArmNotify(ibv_cq* cq) {
  if (cq == nullptr || cq->channel == nullptr) {
    return ErrnoError(EINVAL, "a completion queue without a channel");
  }
  if (int rc = ibv_req_notify_cq(cq, /*solicited_only=*/0); rc != 0) {
    return ErrnoStatus(rc, "ibv_req_notify_cq");
  }
  return absl::OkStatus();
}

}  // namespace demi::rdma
