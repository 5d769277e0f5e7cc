#include "rdma/queue_pair.h"

#include <cerrno>

#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<QueuePair> QueuePair::Create(CmId& id, ibv_pd* pd,
                                            ibv_qp_init_attr& attr) {
  if (id.verbs() == nullptr) {
    return ErrnoError(EINVAL, "the rdma_cm id is not bound to a device yet");
  }
  if (id.qp() != nullptr) {
    return ErrnoError(EEXIST, "the rdma_cm id already has a queue pair");
  }
  if (rdma_create_qp(id.get(), pd, &attr) != 0) {
    return ErrnoStatus(errno, "rdma_create_qp");
  }
  return QueuePair(id.get());
}

absl::Status QueuePair::PostError(int rc, const char* what) {
  // ibv_post_* return a positive errno (some providers: -1 with errno).
  return ErrnoStatus(rc > 0 ? rc : errno, what);
}

}  // namespace demi::rdma
