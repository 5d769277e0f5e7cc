#include "rdma/completion_group.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "rdma/completion_channel.h"

namespace demi::rdma {

CompletionGroup::Attachment& CompletionGroup::Attachment::operator=(
    Attachment&& other) noexcept {
  if (this != &other) {
    if (group_ != nullptr) group_->Detach(slot_);
    group_ = std::exchange(other.group_, nullptr);
    slot_ = other.slot_;
    tag_ = other.tag_;
  }
  return *this;
}

CompletionGroup::Attachment::~Attachment() {
  if (group_ != nullptr) group_->Detach(slot_);
}

ibv_cq* CompletionGroup::Attachment::cq() const {
  return group_ == nullptr ? nullptr : group_->slots_[slot_].queue->cq.get();
}

void CompletionGroup::Attachment::RequestAfterPoll() {
  if (group_ != nullptr) group_->Schedule(slot_);
}

int CompletionGroup::Attachment::Poll() {
  if (group_ == nullptr) return 0;
  int delivered = group_->PollQueue(*group_->slots_[slot_].queue);
  group_->RunAfterPoll();
  return delivered;
}

absl::StatusOr<std::unique_ptr<CompletionGroup>> CompletionGroup::Create(
    ibv_context* context, const CompletionGroupOptions& options) {
  if (context == nullptr) return ErrnoError(EINVAL, "no device context");
  ibv_device_attr device{};
  if (int rc = ibv_query_device(context, &device); rc != 0) {
    return ErrnoStatus(rc, "ibv_query_device");
  }
  const uint32_t entries =
      std::min<uint32_t>(options.queue_entries,
                         static_cast<uint32_t>(std::max(device.max_cqe, 1)));
  if (entries < 4) {
    return ErrnoError(EINVAL, absl::StrCat("completion queues of ", entries,
                                           " entries are too small"));
  }
  std::unique_ptr<CompletionGroup> group(
      new CompletionGroup(context, entries, options.channel));
  DEMI_ASSIGN_OR_RETURN(
      CompletionQueue cq,
      CompletionQueue::Create(context, static_cast<int>(entries),
                              options.channel));
  group->queues_.push_back(std::make_unique<Queue>(Queue{.cq = std::move(cq)}));
  return group;
}

CompletionGroup::~CompletionGroup() {
  if (attached_ != 0) {
    DEMI_LOG(kError, "completion group destroyed with ", attached_,
             " endpoints attached");
  }
}

absl::StatusOr<CompletionGroup::Attachment> CompletionGroup::Attach(
    CompletionHandler* handler, uint32_t entries) {
  if (handler == nullptr || entries == 0 || entries > ReservableEntries()) {
    return ErrnoError(EINVAL, absl::StrCat("cannot reserve ", entries,
                                           " completions (at most ",
                                           ReservableEntries(), ")"));
  }
  if (free_slots_.empty() && slots_.size() >= kMaxSlots) {
    return ErrnoError(ENOMEM, "too many endpoints on one device");
  }
  Queue* queue = nullptr;
  for (auto& candidate : queues_) {
    if (candidate->reserved + entries <= ReservableEntries()) {
      queue = candidate.get();
      break;
    }
  }
  if (queue == nullptr) {
    DEMI_ASSIGN_OR_RETURN(
        CompletionQueue cq,
        CompletionQueue::Create(context_, static_cast<int>(queue_entries_),
                                channel_));
    // Armed at once: a waiter asleep on the channel (armed before this
    // queue existed) wakes for its first completion.
    if (channel_ != nullptr) {
      DEMI_RETURN_IF_ERROR(rdma::ArmNotify(cq.get()));
    }
    queues_.push_back(std::make_unique<Queue>(Queue{.cq = std::move(cq)}));
    queue = queues_.back().get();
  }
  uint32_t index;
  if (!free_slots_.empty()) {
    index = free_slots_.back();
    free_slots_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
    scheduled_.reserve(slots_.size());
    running_.reserve(slots_.size());
  }
  Slot& slot = slots_[index];
  slot.handler = handler;
  slot.generation = (slot.generation + 1) & kGenerationMask;
  slot.entries = entries;
  slot.queue = queue;
  slot.scheduled = false;
  queue->reserved += entries;
  ++queue->endpoints;
  ++attached_;
  const uint64_t tag =
      (static_cast<uint64_t>(index) << kSlotShift) |
      (static_cast<uint64_t>(slot.generation) << kGenerationShift);
  return Attachment(this, index, tag);
}

absl::Status CompletionGroup::ArmNotify() {
  for (auto& queue : queues_) {
    DEMI_RETURN_IF_ERROR(rdma::ArmNotify(queue->cq.get()));
  }
  return absl::OkStatus();
}

void CompletionGroup::Detach(uint32_t index) {
  Slot& slot = slots_[index];
  Queue* queue = slot.queue;
  queue->draining += slot.entries;  // released once the queue is drained
  --queue->endpoints;
  slot.handler = nullptr;
  slot.queue = nullptr;
  slot.entries = 0;
  slot.scheduled = false;  // a stale entry in scheduled_ is skipped
  free_slots_.push_back(index);
  --attached_;
  // Keep memory bounded: a queue nobody uses any more goes, except the
  // first (its queue pairs are destroyed, so nothing completes on it).
  if (queue->endpoints == 0 && queue != queues_.front().get()) {
    auto it = std::find_if(
        queues_.begin(), queues_.end(),
        [queue](const std::unique_ptr<Queue>& q) { return q.get() == queue; });
    if (it != queues_.end()) queues_.erase(it);
  }
}

void CompletionGroup::Schedule(uint32_t index) {
  Slot& slot = slots_[index];
  if (slot.scheduled || slot.handler == nullptr) return;
  slot.scheduled = true;
  scheduled_.push_back(index);
}

int CompletionGroup::PollQueue(Queue& queue) {
  ibv_wc wc[kPollBatch];
  int delivered = 0;
  for (;;) {
    const int n = queue.cq.Poll(absl::MakeSpan(wc));
    if (n < 0) {
      // Polling fails only for a broken queue; its endpoints notice when
      // their sends never complete. Nothing to deliver.
      DEMI_LOG(kError, "polling a shared completion queue: ",
               CompletionQueue::PollError(n).message());
      return delivered;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t wr_id = wc[i].wr_id;
      const uint32_t index = static_cast<uint32_t>(wr_id >> kSlotShift);
      const uint32_t generation =
          static_cast<uint32_t>(wr_id >> kGenerationShift) & kGenerationMask;
      if (index >= slots_.size() || slots_[index].handler == nullptr ||
          slots_[index].generation != generation) {
        ++stale_;
        continue;
      }
      slots_[index].handler->OnWorkCompletion(wc[i],
                                              static_cast<uint32_t>(wr_id));
      Schedule(index);
      ++delivered;
    }
    if (n < kPollBatch) {
      // Empty: nothing of a detached endpoint is left in it.
      queue.reserved -= queue.draining;
      queue.draining = 0;
      return delivered;
    }
  }
}

void CompletionGroup::RunAfterPoll() {
  ++polls_;
  if (scheduled_.empty()) return;
  running_.swap(scheduled_);
  for (uint32_t index : running_) {
    Slot& slot = slots_[index];
    if (!slot.scheduled) continue;  // detached meanwhile
    slot.scheduled = false;
    slot.handler->AfterPoll();
  }
  running_.clear();
}

int CompletionGroup::Poll() {
  // The steps due first (deliveries of the previous poll, requests since),
  // so a waiter sees what this poll delivers before the work it makes
  // possible is done: that work runs off the waiter's critical path.
  RunAfterPoll();
  int delivered = 0;
  for (auto& queue : queues_) delivered += PollQueue(*queue);
  return delivered;
}

}  // namespace demi::rdma
