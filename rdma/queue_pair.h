// QueuePair: owns the queue pair rdma_cm created on a CmId, and posts to it.
//
// rdma_cm moves the queue pair through its states as the connection is set
// up, so the only operations here are posting work requests. Posting is the
// hot path: no allocation; the only system call is rdma-core's doorbell.
// Lifetime: the CmId, protection domain and completion queues must outlive
// the QueuePair. Move-only; one thread at a time.

#ifndef DEMI_RDMA_QUEUE_PAIR_H_
#define DEMI_RDMA_QUEUE_PAIR_H_

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rdma/cm_id.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct QueuePairTraits {
  using Type = rdma_cm_id;  // rdma_destroy_qp() clears id->qp as well.
  static constexpr char kRelease[] = "rdma_destroy_qp";
  static int Release(rdma_cm_id* id) {
    rdma_destroy_qp(id);
    return 0;
  }
};

// The bytes of an MTU as the verbs enumerate it (IBV_MTU_256 .. 4096).
inline uint32_t MtuBytes(ibv_mtu mtu) { return 128u << static_cast<int>(mtu); }

class QueuePair {
 public:
  // Creates the queue pair of `id` (which must be bound to a device) in `pd`
  // with the capacities and completion queues of `attr`. The actual
  // capacities (which may exceed the request) are in attr after the call.
  static absl::StatusOr<QueuePair> Create(CmId& id, ibv_pd* pd,
                                          ibv_qp_init_attr& attr);

  ibv_qp* get() const { return id_->qp; }
  uint32_t qp_num() const { return id_->qp->qp_num; }

  // The path MTU in bytes (a payload this long is one packet on the wire),
  // once rdma_cm has moved the queue pair to RTR. Asks the device (a system
  // call): for setup, not the data path.
  absl::StatusOr<uint32_t> PathMtuBytes() const;

  // Posts a chain of send work requests. On failure nothing from the first
  // rejected request on was posted; *bad (if given) points at it.
  absl::Status PostSend(ibv_send_wr* first, ibv_send_wr** bad = nullptr) {
    ibv_send_wr* rejected = nullptr;
    int rc = ibv_post_send(id_->qp, first, &rejected);
    if (bad != nullptr) *bad = rejected;
    return rc == 0 ? absl::OkStatus() : PostError(rc, "ibv_post_send");
  }

  // Posts a chain of receive work requests; as PostSend.
  absl::Status PostRecv(ibv_recv_wr* first, ibv_recv_wr** bad = nullptr) {
    ibv_recv_wr* rejected = nullptr;
    int rc = ibv_post_recv(id_->qp, first, &rejected);
    if (bad != nullptr) *bad = rejected;
    return rc == 0 ? absl::OkStatus() : PostError(rc, "ibv_post_recv");
  }

 private:
  explicit QueuePair(rdma_cm_id* id) : id_(id) {}
  static absl::Status PostError(int rc, const char* what);

  Owned<QueuePairTraits> id_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_QUEUE_PAIR_H_
