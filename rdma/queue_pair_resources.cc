#include "rdma/queue_pair_resources.h"

#include <utility>

#include "common/logging.h"
#include "common/status_macros.h"

namespace demi::rdma {

absl::Status QueuePairResources::CreateMemory(const MemoryOptions& options,
                                              Registrar registrar) {
  receive_buffer_size_ = options.receive_buffer_size;
  const size_t receive_bytes =
      static_cast<size_t>(options.receive_buffers) * receive_buffer_size_;
  receive_memory_.reset(new uint8_t[receive_bytes]);
  DEMI_ASSIGN_OR_RETURN(
      MemoryRegion receive_mr,
      registrar(receive_memory_.get(), receive_bytes, IBV_ACCESS_LOCAL_WRITE));
  receive_mr_.emplace(std::move(receive_mr));
  receive_wrs_.resize(options.receive_buffers);
  receive_sges_.resize(options.receive_buffers);
  header_memory_.reset(new uint8_t[options.header_bytes]);
  DEMI_ASSIGN_OR_RETURN(
      MemoryRegion header_mr,
      registrar(header_memory_.get(), options.header_bytes, 0));
  header_mr_.emplace(std::move(header_mr));
  return absl::OkStatus();
}

absl::Status QueuePairResources::CreateQueuePair(CmId& id, ibv_pd* pd,
                                                 ibv_qp_init_attr attr) {
  absl::StatusOr<QueuePair> qp = QueuePair::Create(id, pd, attr);
  if (!qp.ok() && attr.cap.max_inline_data > 0) {
    // Some devices refuse inline data altogether; do without.
    attr.cap.max_inline_data = 0;
    qp = QueuePair::Create(id, pd, attr);
  }
  if (!qp.ok()) return qp.status();
  qp_.emplace(std::move(*qp));
  // QueuePair::Create leaves in attr what the device granted.
  max_inline_data_ = attr.cap.max_inline_data;
  return absl::OkStatus();
}

absl::Status QueuePairResources::PostReceive(uint32_t index, uint64_t wr_id) {
  return PostReceives({&index, 1}, [wr_id](uint32_t) { return wr_id; });
}

void QueuePairResources::Flush() {
  if (flushed_ || !qp_) return;
  flushed_ = true;
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  if (int rc = ibv_modify_qp(qp_->get(), &attr, IBV_QP_STATE); rc != 0) {
    DEMI_LOG(kWarning, "ibv_modify_qp(ERR): ", rc);
  }
}

}  // namespace demi::rdma
