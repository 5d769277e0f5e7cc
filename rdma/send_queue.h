// SendQueue: the send queue of one RC queue pair, as RcConnection fills it.
//
// Per send-queue slot it keeps the work request and scatter-gather list
// being built (kept until posted: a chain of requests is built first, then
// posted with one ibv_post_send) and, once posted, the request's record
// (PostedSend) in a ring in completion order.
//
//   const uint32_t slot = sends.SlotAfterPosted(0);
//   ibv_send_wr& wr = sends.Start(slot, wr_id, sge, 1, IBV_WR_SEND);
//   sends.record(slot) = PostedSend{.cookie = cookie};
//   sends.Post(&wr, &wr, 1, /*signal=*/true, post, &error);
//   ... on its completion: PlacesAfterFront(slot), then TakeFront() each.
//
// Building: SlotAfterPosted(i) names the slot i places after the newest
// posted request; Start fills the fields every request sets; the caller
// adds the rest and writes the slot's record. Post makes the posted
// requests part of the ring (size()); completions retire them from the
// front.
//
// Signaling: RC completes in order, so one signaled completion retires
// every request posted before it. Post signals a chain's last request
// unless told not to (a request whose memory is free at post needs no
// completion); SignalDue() says when enough unsignaled ones are in a row
// that the next must be signaled, so at most signal_interval() slots wait
// for a completion to retire them.
//
// It knows nothing of the wire, credits or cookies' meaning. Thread-safety:
// none. Only the constructor allocates.

#ifndef DEMI_RDMA_SEND_QUEUE_H_
#define DEMI_RDMA_SEND_QUEUE_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/fixed_ring.h"
#include "rdma/send_records.h"

namespace demi::rdma {

class SendQueue {
 public:
  // `depth` slots, each with `sges_per_request` scatter-gather entries; one
  // request in `signal_interval` (at least 1) of those done at post is
  // signaled.
  SendQueue(uint32_t depth, uint32_t sges_per_request, uint32_t signal_interval)
      : posted_(depth),
        requests_(depth),
        sges_(static_cast<size_t>(depth) * sges_per_request),
        sges_per_request_(sges_per_request),
        signal_interval_(signal_interval > 0 ? signal_interval : 1) {}
  SendQueue(const SendQueue&) = delete;
  SendQueue& operator=(const SendQueue&) = delete;

  uint32_t depth() const { return posted_.capacity(); }
  // Requests posted and not yet retired by a completion.
  uint32_t size() const { return posted_.size(); }
  bool empty() const { return posted_.empty(); }
  bool full() const { return posted_.full(); }
  // Free slots.
  uint32_t room() const { return depth() - size(); }
  uint32_t signal_interval() const { return signal_interval_; }
  // Unsignaled requests posted since the last signaled one.
  uint32_t unsignaled() const { return unsignaled_; }
  // Whether the next request done at post must be signaled.
  bool SignalDue() const { return unsignaled_ + 1 >= signal_interval_; }
  // ibv_post_send calls made (one per chain).
  uint64_t doorbells() const { return doorbells_; }

  // The slot `position` places after the newest posted request.
  uint32_t SlotAfterPosted(uint32_t position) const {
    return posted_.SlotAfterBack(position);
  }
  ibv_send_wr& request(uint32_t slot) { return requests_[slot]; }
  ibv_sge* sges(uint32_t slot) {
    return &sges_[static_cast<size_t>(slot) * sges_per_request_];
  }
  // The slot of a request of this queue.
  uint32_t SlotOf(const ibv_send_wr* wr) const {
    return static_cast<uint32_t>(wr - requests_.data());
  }
  // The record of `slot`: written while building, read on completion.
  PostedSend& record(uint32_t slot) { return posted_.slot(slot); }

  // Fills the fields every request of `slot` sets (id, gather list,
  // opcode; not signaled, no immediate, not chained) and returns it. Field
  // by field rather than zeroing it: the union of opcode-specific fields
  // is read only for the opcodes that use it (the caller sets those).
  ibv_send_wr& Start(uint32_t slot, uint64_t wr_id, ibv_sge* sge, int num_sge,
                     ibv_wr_opcode opcode) {
    ibv_send_wr& wr = requests_[slot];
    wr.next = nullptr;
    wr.wr_id = wr_id;
    wr.sg_list = sge;
    wr.num_sge = num_sge;
    wr.opcode = opcode;
    wr.send_flags = 0;
    wr.imm_data = 0;
    return wr;
  }

  // Posts the chain first..last of `count` built requests with one call of
  // `post` (absl::Status(ibv_send_wr* first, ibv_send_wr** bad), the queue
  // pair's ibv_post_send), signaling only the last (none if !signal).
  // Returns how many were posted, which join the ring: all, or on failure
  // those before the one the device rejected (then *error says why; else
  // it is left alone).
  template <typename PostFn>
  uint32_t Post(ibv_send_wr* first, ibv_send_wr* last, uint32_t count,
                bool signal, PostFn&& post, absl::Status* error) {
    last->next = nullptr;
    if (signal) {
      last->send_flags |= IBV_SEND_SIGNALED;
      unsignaled_ = 0;
    } else {
      unsignaled_ += count;
    }
    ibv_send_wr* rejected = nullptr;
    absl::Status status = post(first, &rejected);
    uint32_t posted = count;
    if (!status.ok()) {
      posted = 0;
      for (ibv_send_wr* wr = first; wr != rejected && wr != nullptr;
           wr = wr->next) {
        ++posted;
      }
      *error = std::move(status);
    }
    posted_.Extend(posted);
    ++doorbells_;
    return posted;
  }

  // Completions. The posted requests, oldest first.
  const FixedRing<PostedSend>& posted() const { return posted_; }
  // How far `slot` is from the oldest posted request (size() or more: not
  // a posted one).
  uint32_t PlacesAfterFront(uint32_t slot) const {
    return posted_.PlacesAfterFront(slot);
  }
  uint32_t front_slot() const { return posted_.front_slot(); }
  // Retires the oldest posted request and returns its record (not empty).
  PostedSend TakeFront() {
    const PostedSend record = posted_.front();
    posted_.pop_front();
    return record;
  }

 private:
  FixedRing<PostedSend> posted_;
  std::vector<ibv_send_wr> requests_;
  std::vector<ibv_sge> sges_;
  const uint32_t sges_per_request_;
  const uint32_t signal_interval_;
  uint32_t unsignaled_ = 0;
  uint64_t doorbells_ = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_SEND_QUEUE_H_
