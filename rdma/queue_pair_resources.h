// QueuePairResources: what a reliable connection (RcConnection) and a
// datagram endpoint (UdEndpoint) each build around their queue pair, built
// in one place:
//   - receive buffers: `receive_buffers` buffers of `receive_buffer_size`
//     bytes in one allocation, registered for the device to write into;
//   - header memory: bytes the device reads from (message headers, staged
//     sends), registered with no remote access;
//   - the queue pair, with the inline data asked for, or none if the device
//     refuses inline data altogether;
//   - Flush(): the queue pair to the error state, once, so that everything
//     posted completes (flushed) and the owner can account for it.
//
//   QueuePairResources resources;
//   DEMI_RETURN_IF_ERROR(resources.CreateMemory({64, 8264, 4096}, reg));
//   DEMI_RETURN_IF_ERROR(resources.CreateQueuePair(id, pd, attr));
//   DEMI_RETURN_IF_ERROR(resources.PostAllReceives(wr_id_of));
//
// Lifetime: destroying it destroys the queue pair first, then the
// registrations, then the memory. The id, protection domain and completion
// queues it was created on must outlive it. Thread-safety: none (its owner
// serializes). Errors: Create* return the verbs error (ibv_reg_mr,
// ibv_create_qp) with what was asked; on error nothing is left half-built
// that the destructor cannot release.

#ifndef DEMI_RDMA_QUEUE_PAIR_RESOURCES_H_
#define DEMI_RDMA_QUEUE_PAIR_RESOURCES_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "rdma/cm_id.h"
#include "rdma/memory_region.h"
#include "rdma/queue_pair.h"

namespace demi::rdma {

class QueuePairResources {
 public:
  struct MemoryOptions {
    uint32_t receive_buffers = 0;
    uint32_t receive_buffer_size = 0;
    size_t header_bytes = 0;
  };
  // How the owner registers memory (its own retry policy, e.g. after
  // relieving the locked-memory limit): MemoryRegion::Register's contract.
  using Registrar = absl::FunctionRef<absl::StatusOr<MemoryRegion>(
      void* address, size_t length, int access)>;

  QueuePairResources() = default;
  QueuePairResources(const QueuePairResources&) = delete;
  QueuePairResources& operator=(const QueuePairResources&) = delete;

  // Allocates and registers the receive buffers (IBV_ACCESS_LOCAL_WRITE) and
  // the header memory (no access flags).
  absl::Status CreateMemory(const MemoryOptions& options, Registrar registrar);

  // Creates the queue pair of `id` in `pd` with `attr`; if the device
  // refuses and inline data was asked for, again without. max_inline_data()
  // then says what the queue pair has.
  absl::Status CreateQueuePair(CmId& id, ibv_pd* pd, ibv_qp_init_attr attr);

  bool has_queue_pair() const { return qp_.has_value(); }
  QueuePair& qp() { return *qp_; }
  const QueuePair& qp() const { return *qp_; }
  uint32_t max_inline_data() const { return max_inline_data_; }

  uint32_t receive_buffer_size() const { return receive_buffer_size_; }
  uint8_t* receive_buffer(uint32_t index) const {
    return receive_memory_.get() +
           static_cast<size_t>(index) * receive_buffer_size_;
  }
  uint32_t receive_lkey() const { return receive_mr_->lkey(); }
  uint32_t receive_rkey() const { return receive_mr_->get()->rkey; }
  uint8_t* header_memory() const { return header_memory_.get(); }
  uint32_t header_lkey() const { return header_mr_->lkey(); }

  // A receive request for buffer `index` (the whole buffer), as
  // ibv_post_recv wants it: *sge describes the buffer, *wr points to it.
  void PrepareReceive(uint32_t index, uint64_t wr_id, ibv_recv_wr* wr,
                      ibv_sge* sge) const {
    sge->addr = reinterpret_cast<uintptr_t>(receive_buffer(index));
    sge->length = receive_buffer_size_;
    sge->lkey = receive_mr_->lkey();
    wr->wr_id = wr_id;
    wr->sg_list = sge;
    wr->num_sge = 1;
    wr->next = nullptr;
  }
  // Posts one receive for buffer `index`.
  absl::Status PostReceive(uint32_t index, uint64_t wr_id);
  // Posts receives for the buffers `indexes` (at most receive_buffers of
  // them) as one chain, one ibv_post_recv; `wr_id(index)` names each.
  template <typename WrId>
  absl::Status PostReceives(absl::Span<const uint32_t> indexes, WrId wr_id) {
    return PostReceiveChain(
        indexes.size(), [indexes](size_t i) { return indexes[i]; }, wr_id);
  }
  // Posts a receive for every buffer as one chain (at creation).
  template <typename WrId>
  absl::Status PostAllReceives(WrId wr_id) {
    return PostReceiveChain(
        receive_wrs_.size(), [](size_t i) { return static_cast<uint32_t>(i); },
        wr_id);
  }

  // Moves the queue pair to the error state, once (later calls, and calls
  // before the queue pair exists, do nothing): every posted request then
  // completes with a flush error. A failure is logged.
  void Flush();
  // Destroys the queue pair now (before the memory an owner lends out goes
  // back: the device writes no more once it is gone).
  void DestroyQueuePair() { qp_.reset(); }

 private:
  // Posts `count` receives, the i-th for buffer index_of(i), as one chain.
  template <typename IndexOf, typename WrId>
  absl::Status PostReceiveChain(size_t count, IndexOf index_of, WrId wr_id) {
    if (count == 0) return absl::OkStatus();
    for (size_t i = 0; i < count; ++i) {
      const uint32_t index = index_of(i);
      PrepareReceive(index, wr_id(index), &receive_wrs_[i], &receive_sges_[i]);
      if (i > 0) receive_wrs_[i - 1].next = &receive_wrs_[i];
    }
    return qp_->PostRecv(receive_wrs_.data());
  }

  // Destruction order: the queue pair, then the registrations, then memory.
  std::unique_ptr<uint8_t[]> receive_memory_;
  std::unique_ptr<uint8_t[]> header_memory_;
  std::optional<MemoryRegion> receive_mr_;
  std::optional<MemoryRegion> header_mr_;
  std::optional<QueuePair> qp_;
  // PostReceives' chain: a request and a gather entry per receive buffer.
  std::vector<ibv_recv_wr> receive_wrs_;
  std::vector<ibv_sge> receive_sges_;
  uint32_t receive_buffer_size_ = 0;
  uint32_t max_inline_data_ = 0;
  bool flushed_ = false;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_QUEUE_PAIR_RESOURCES_H_
