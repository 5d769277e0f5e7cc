// CompletionQueue: owns an ibv_cq and polls it.
//
// Polling is the hot path: Poll() makes no allocation, no system call and no
// status object (an int, as ibv_poll_cq returns; PollError() makes the status
// of a failed poll).
// Thread-safety: none; the caller serializes Poll() on one queue. Move-only;
// the queue must outlive the queue pairs attached to it.

#ifndef DEMI_RDMA_COMPLETION_QUEUE_H_
#define DEMI_RDMA_COMPLETION_QUEUE_H_

#include <infiniband/verbs.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct CompletionQueueTraits {
  using Type = ibv_cq;
  static constexpr char kRelease[] = "ibv_destroy_cq";
  static int Release(ibv_cq* cq) { return ibv_destroy_cq(cq); }
};

class CompletionQueue {
 public:
  // Creates a queue of at least `min_entries` on `context` (not owned),
  // raising its events on `channel` when given (not owned; it outlives the
  // queue; see completion_channel.h).
  static absl::StatusOr<CompletionQueue> Create(
      ibv_context* context, int min_entries,
      ibv_comp_channel* channel = nullptr);

  ibv_cq* get() const { return cq_.get(); }

  // Fills up to completions.size() entries; returns how many were filled
  // (0 if none are ready), or a negative value if polling itself failed
  // (PollError(n) says so as a status: EIO).
  int Poll(absl::Span<ibv_wc> completions) {
    return ibv_poll_cq(cq_.get(), static_cast<int>(completions.size()),
                       completions.data());
  }
  static absl::Status PollError(int rc);

 private:
  explicit CompletionQueue(ibv_cq* cq) : cq_(cq) {}

  Owned<CompletionQueueTraits> cq_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_COMPLETION_QUEUE_H_
