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

absl::StatusOr<uint32_t> QueuePair::PathMtuBytes() const {
  ibv_qp_attr attr{};
  ibv_qp_init_attr init{};
  if (int rc = ibv_query_qp(id_->qp, &attr, IBV_QP_PATH_MTU, &init); rc != 0) {
    return ErrnoStatus(rc > 0 ? rc : errno, "ibv_query_qp");
  }
  if (attr.path_mtu < IBV_MTU_256 || attr.path_mtu > IBV_MTU_4096) {
    return ErrnoError(EPROTO, "the queue pair reports no path MTU");
  }
  return MtuBytes(attr.path_mtu);
}

absl::Status QueuePair::PostError(int rc, const char* what) {
  // ibv_post_* return a positive errno (some providers: -1 with errno).
  return ErrnoStatus(rc > 0 ? rc : errno, what);
}

}  // namespace demi::rdma
