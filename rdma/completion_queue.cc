#include "rdma/completion_queue.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<CompletionQueue> CompletionQueue::Create(
    ibv_context* context, int min_entries, ibv_comp_channel* channel) {
  if (context == nullptr) return ErrnoError(EINVAL, "no device context");
  if (min_entries <= 0) {
    return ErrnoError(EINVAL, absl::StrCat("bad CQ size ", min_entries));
  }
  ibv_cq* cq = ibv_create_cq(context, min_entries, /*cq_context=*/nullptr,
                             channel, /*comp_vector=*/0);
  if (cq == nullptr) return ErrnoStatus(errno, "ibv_create_cq");
  return CompletionQueue(cq);
}

absl::Status CompletionQueue::PollError(int rc) {
  return ErrnoError(EIO, absl::StrCat("ibv_poll_cq failed (", rc, ")"));
}

}  // namespace demi::rdma
