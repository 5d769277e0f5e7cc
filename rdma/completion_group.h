// CompletionGroup: a few completion queues shared by every endpoint of one
// device, and the routing of each work completion to the endpoint that
// posted its request.
//
// Why: a progress round that polls two completion queues per connection costs
// more with every idle connection open. With a group, a round polls the
// group's few queues (each holds the completions of many endpoints), however
// many connections are open, and only endpoints that had completions (or
// asked for it) run their after-poll step.
//
// Routing. An attached endpoint makes every wr_id it posts with
// Attachment::WrId(local): the high 32 bits name the endpoint (its slot in
// the group and that slot's generation), the low 32 bits are the endpoint's
// own (`local`, handed back to it). A completion whose slot was detached, or
// re-attached since (the generation differs), belongs to an endpoint that is
// gone: it is counted (stale_completions()) and dropped.
//
// Capacity. A queue never overflows: each endpoint reserves the completions
// it can have outstanding (its send plus receive queue depth) on one queue,
// and keeps the reservation after it detaches until a poll has emptied the
// queue (its queue pair is destroyed by then, so whatever it left there is
// drained). Reservations stay within three quarters of a queue's size. A
// queue whose last endpoint detached is destroyed, except the first.
//
// After-poll step. Poll() first calls AfterPoll() once for each endpoint
// that received a completion in the previous Poll() or called
// RequestAfterPoll() since: there an endpoint posts what the completions made
// possible (queued sends, credit updates, re-posted receives) with one
// doorbell. Then it delivers every completion it finds
// (CompletionHandler::OnWorkCompletion). The work a poll's deliveries make
// possible thus waits for the next Poll(): a waiter learns of its results
// (the message it popped) first, and does its own next step (the push of a
// reply) before the library spends time on the rest. Whoever polls must poll
// again soon after a poll that delivered: the LibOS's wait loop and every
// progress round do. Attachment::Poll() keeps the old order (delivers, then
// runs the steps due).
//
// Thread-safety: none; the caller serializes every call on the group and on
// its attachments (LibOS holds its mutex). Hot path (Poll, WrId,
// RequestAfterPoll): no allocation, no system call, no lookup beyond an
// array index.
// Lifetime: the group outlives its attachments; an attachment outlives the
// queue pair that uses its queue (destroy the queue pair first).

#ifndef DEMI_RDMA_COMPLETION_GROUP_H_
#define DEMI_RDMA_COMPLETION_GROUP_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "rdma/completion_queue.h"

namespace demi::rdma {

// An endpoint whose work requests complete on a group's queue.
class CompletionHandler {
 public:
  // A completion of a request posted with wr_id Attachment::WrId(local).
  virtual void OnWorkCompletion(const ibv_wc& wc, uint32_t local) = 0;
  // Once after each Poll() that delivered to this endpoint (at the start of
  // the next group Poll(), or at the end of an Attachment::Poll()), or after
  // a RequestAfterPoll(). May call RequestAfterPoll() again (next Poll).
  virtual void AfterPoll() = 0;

 protected:
  ~CompletionHandler() = default;
};

struct CompletionGroupOptions {
  // Completions one queue holds (clamped to the device's limit).
  uint32_t queue_entries = 16384;
  // Where the queues raise their events once armed (ArmNotify); not owned,
  // outlives the group. Null: the queues can only be polled.
  ibv_comp_channel* channel = nullptr;
};

class CompletionGroup {
 public:
  // A place on one of the group's queues. Move-only; detaches on
  // destruction.
  class Attachment {
   public:
    Attachment() = default;
    Attachment(Attachment&& other) noexcept { *this = std::move(other); }
    Attachment& operator=(Attachment&& other) noexcept;
    ~Attachment();

    // The queue to create the queue pair with (send and receive).
    ibv_cq* cq() const;
    // The wr_id of a request whose completion is handed back as `local`.
    uint64_t WrId(uint32_t local) const { return tag_ | local; }
    // Makes the next Poll() call the endpoint's AfterPoll().
    void RequestAfterPoll();
    // Polls only this endpoint's queue (delivering to whoever its
    // completions belong to), then runs the due after-poll steps. Returns
    // the completions delivered.
    int Poll();
    // How many polls (of the group, or of one attachment) have run their
    // after-poll steps so far: an endpoint compares two readings to learn
    // whether a poll came between them. 0 when detached.
    uint64_t polls() const;

   private:
    friend class CompletionGroup;
    Attachment(CompletionGroup* group, uint32_t slot, uint64_t tag)
        : group_(group), slot_(slot), tag_(tag) {}

    CompletionGroup* group_ = nullptr;
    uint32_t slot_ = 0;
    uint64_t tag_ = 0;
  };

  // EINVAL without a context. Creates the first queue now.
  static absl::StatusOr<std::unique_ptr<CompletionGroup>> Create(
      ibv_context* context, const CompletionGroupOptions& options = {});
  CompletionGroup(const CompletionGroup&) = delete;
  CompletionGroup& operator=(const CompletionGroup&) = delete;
  ~CompletionGroup();

  // Attaches `handler` (not owned; must outlive the attachment), reserving
  // `entries` completions (its send plus receive queue depth) on a queue
  // with room, or on a new one. EINVAL for 0 entries or more than one queue
  // of this device can take; errors of ibv_create_cq.
  absl::StatusOr<Attachment> Attach(CompletionHandler* handler,
                                    uint32_t entries);

  // Runs the due after-poll steps (of the previous poll's deliveries and of
  // requests since), then polls every queue and delivers each completion.
  // Returns the completions delivered.
  int Poll();

  // Whether after-poll steps are due (the next Poll() runs them): work a
  // poller must not sleep on.
  bool after_poll_due() const { return !scheduled_.empty(); }

  // Arms every queue of the group (rdma::ArmNotify): the next completion
  // on any of them raises an event on the group's channel. EINVAL without a
  // channel.
  absl::Status ArmNotify();

  // Queues in use, endpoints attached, and completions dropped because
  // their endpoint was gone.
  size_t queue_count() const { return queues_.size(); }
  size_t endpoint_count() const { return attached_; }
  uint64_t stale_completions() const { return stale_; }

 private:
  struct Queue {
    CompletionQueue cq;
    // Entries reserved by attached endpoints, and by detached ones whose
    // completions may still be in the queue (`draining` of them: released
    // by the next poll that empties the queue).
    uint32_t reserved = 0;
    uint32_t draining = 0;
    uint32_t endpoints = 0;
  };
  struct Slot {
    CompletionHandler* handler = nullptr;  // null: free
    uint32_t generation = 0;
    uint32_t entries = 0;
    Queue* queue = nullptr;
    bool scheduled = false;  // in scheduled_ for the next after-poll run
  };

  CompletionGroup(ibv_context* context, uint32_t queue_entries,
                  ibv_comp_channel* channel)
      : context_(context), queue_entries_(queue_entries), channel_(channel) {}

  static constexpr int kPollBatch = 16;
  // wr_id: slot in bits 44..63, generation in bits 32..43, local below.
  static constexpr int kSlotShift = 44;
  static constexpr int kGenerationShift = 32;
  static constexpr uint32_t kGenerationMask = 0xfff;
  static constexpr uint32_t kMaxSlots = 1u << 20;

  uint32_t ReservableEntries() const { return queue_entries_ / 4 * 3; }
  void Detach(uint32_t slot);
  void Schedule(uint32_t slot);
  int PollQueue(Queue& queue);
  void RunAfterPoll();

  ibv_context* const context_;
  const uint32_t queue_entries_;
  ibv_comp_channel* const channel_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  // Endpoints due for AfterPoll, and the list being run (both with capacity
  // for every slot, so scheduling never allocates).
  std::vector<uint32_t> scheduled_;
  std::vector<uint32_t> running_;
  size_t attached_ = 0;
  uint64_t stale_ = 0;
  uint64_t polls_ = 0;  // RunAfterPoll calls
};

inline uint64_t CompletionGroup::Attachment::polls() const {
  return group_ == nullptr ? 0 : group_->polls_;
}

}  // namespace demi::rdma

#endif  // DEMI_RDMA_COMPLETION_GROUP_H_
