// QdTable: the queues of one kind by queue descriptor, found by an index.
//
// A qd is what demi_socket hands out and every call names a queue by. It
// encodes where the queue lives: bits 0..15 are a slot of the table, bits
// 16..19 the worker whose table it is (QdWorker: the LibOS keeps one table
// of each kind per worker), bits 20..29 the slot's generation (bumped each
// time the slot is reused, so a closed queue's qd does not name its
// successor until 1023 reuses later, and stale rdma_cm events of a closed
// queue find nothing), and bit 30 the kind of queue (the table's `kKind`:
// stream queues 0, datagram sockets 1), so "which table is qd in?" is two
// bit fields. A qd is always positive.
//
// Find is the hot path (every push and pop): an array index and a compare,
// no hashing, no allocation.
// Thread-safety: none; the caller serializes (LibOS holds its mutex).

#ifndef DEMI_LIBOS_QD_TABLE_H_
#define DEMI_LIBOS_QD_TABLE_H_

#include <cerrno>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/errno_status.h"

namespace demi::libos {

// The kind bit of a qd (see QdTable).
inline constexpr int kQdKindShift = 30;
inline constexpr int QdKind(int qd) { return (qd >> kQdKindShift) & 1; }
// The worker field of a qd (see QdTable): at most kMaxQdWorkers workers.
inline constexpr int kQdWorkerShift = 16;
inline constexpr uint32_t kMaxQdWorkers = 16;
inline constexpr uint32_t QdWorker(int qd) {
  return (static_cast<uint32_t>(qd) >> kQdWorkerShift) & (kMaxQdWorkers - 1);
}

template <typename T, int kKind>
class QdTable {
 public:
  static_assert(kKind == 0 || kKind == 1);
  static constexpr uint32_t kMaxQueues = (1u << kQdWorkerShift) - 1;

  // The table of worker `worker` (below kMaxQdWorkers).
  explicit QdTable(uint32_t worker = 0)
      : worker_bits_((worker & (kMaxQdWorkers - 1)) << kQdWorkerShift) {}

  // Takes `queue` and returns its new qd; EMFILE when kMaxQueues are open.
  absl::StatusOr<int> Insert(std::unique_ptr<T> queue) {
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      if (slots_.size() >= kMaxQueues) {
        return ErrnoError(EMFILE, "too many queues open");
      }
      slot = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    Slot& s = slots_[slot];
    s.generation = s.generation % kMaxGeneration + 1;  // 1..kMaxGeneration
    s.queue = std::move(queue);
    ++size_;
    return QdOf(slot, s.generation);
  }

  // The queue of `qd`, or null (another kind, closed, never issued).
  T* Find(int qd) const {
    const Slot* s = SlotOf(qd);
    return s == nullptr ? nullptr : s->queue.get();
  }

  // Removes the queue of `qd` and hands it back (null if there is none).
  std::unique_ptr<T> Take(int qd) {
    Slot* s = const_cast<Slot*>(SlotOf(qd));
    if (s == nullptr) return nullptr;
    std::unique_ptr<T> queue = std::move(s->queue);
    free_.push_back(static_cast<uint32_t>(s - slots_.data()));
    --size_;
    return queue;
  }

  // Calls f(qd, T&) for every queue, in slot order. `f` must not insert or
  // take.
  template <typename F>
  void ForEach(F f) const {
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.queue != nullptr) {
        f(QdOf(static_cast<uint32_t>(i), s.generation), *s.queue);
      }
    }
  }

  size_t size() const { return size_; }

  // Destroys every queue (in slot order).
  void Clear() {
    for (Slot& s : slots_) s.queue.reset();
    free_.clear();
    slots_.clear();
    size_ = 0;
  }

 private:
  static constexpr int kGenerationShift = 20;
  static constexpr uint32_t kMaxGeneration = (1u << 10) - 1;

  struct Slot {
    std::unique_ptr<T> queue;
    uint32_t generation = 0;
  };

  int QdOf(uint32_t slot, uint32_t generation) const {
    return static_cast<int>((uint32_t{kKind} << kQdKindShift) |
                            (generation << kGenerationShift) | worker_bits_ |
                            slot);
  }

  const Slot* SlotOf(int qd) const {
    if (qd <= 0 || QdKind(qd) != kKind) return nullptr;
    if ((static_cast<uint32_t>(qd) & ((kMaxQdWorkers - 1) << kQdWorkerShift)) !=
        worker_bits_) {
      return nullptr;
    }
    const uint32_t slot = static_cast<uint32_t>(qd) & kMaxQueues;
    const uint32_t generation =
        (static_cast<uint32_t>(qd) >> kGenerationShift) & kMaxGeneration;
    if (slot >= slots_.size()) return nullptr;
    const Slot& s = slots_[slot];
    if (s.queue == nullptr || s.generation != generation) return nullptr;
    return &s;
  }

  const uint32_t worker_bits_;  // the worker field, in place
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  size_t size_ = 0;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_QD_TABLE_H_
