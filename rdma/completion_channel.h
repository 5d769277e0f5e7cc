// CompletionChannel: owns an ibv_comp_channel, the file descriptor a thread
// sleeps on while it waits for completions.
//
// How a sleeper uses it: the completion queues are created on the channel
// (CompletionQueue::Create), armed with ArmNotify() before sleeping, and the
// thread then polls them once more (a completion that landed before the
// arming raises no event) and sleeps in poll/epoll on fd(). A completion on
// an armed queue makes fd() readable; Drain() takes (and acknowledges) every
// event so the descriptor stops being readable. An event only says "look":
// the completions themselves are still taken by polling.
//
// The descriptor is non-blocking, so Drain() never waits.
//
// Errors: Create fails with the errno of ibv_create_comp_channel or fcntl.
// Thread-safety: Drain() and ArmNotify() on distinct queues may run
// concurrently (libibverbs serializes them); the owner serializes the rest.
// Lifetime: outlives every queue created on it (destroy the queues first);
// Drain() acknowledges every event at once, so a queue never waits for
// acknowledgements at its destruction.

#ifndef DEMI_RDMA_COMPLETION_CHANNEL_H_
#define DEMI_RDMA_COMPLETION_CHANNEL_H_

#include <infiniband/verbs.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct CompletionChannelTraits {
  using Type = ibv_comp_channel;
  static constexpr char kRelease[] = "ibv_destroy_comp_channel";
  static int Release(ibv_comp_channel* channel) {
    return ibv_destroy_comp_channel(channel);
  }
};

class CompletionChannel {
 public:
  // A non-blocking channel of `context` (not owned). EINVAL without one.
  static absl::StatusOr<CompletionChannel> Create(ibv_context* context);

  ibv_comp_channel* get() const { return channel_.get(); }
  int fd() const { return channel_->fd; }

  // Takes and acknowledges every pending event; returns how many there were.
  int Drain();

 private:
  explicit CompletionChannel(ibv_comp_channel* channel) : channel_(channel) {}

  Owned<CompletionChannelTraits> channel_;
};

// Asks for an event on the channel of `cq` at its next completion (any
// completion, solicited or not). EINVAL for a queue made without a channel.
absl::Status ArmNotify(ibv_cq* cq);

}  // namespace demi::rdma

#endif  // DEMI_RDMA_COMPLETION_CHANNEL_H_
