// FixedRing<T>: a first-in first-out ring of a capacity fixed by Reset(),
// for the bounded queues of the data path (a connection's posted and queued
// sends, its rendezvous arrivals and owed dones, a datagram socket's
// arrivals). Unlike Fifo<T> (common/fifo.h) it never grows: a full ring
// refuses, so what bounds the queue is visible at the call.
//
//   FixedRing<uint32_t> arrivals;
//   arrivals.Reset(64);
//   if (!arrivals.push_back(index)) Fail("more arrivals than buffers");
//   while (!arrivals.empty()) { Use(arrivals.front()); arrivals.pop_front(); }
//
// Elements live in slots 0..capacity()-1. Besides the queue operations, a
// ring can be filled in place: SlotAfterBack(i) names the slot that will
// hold the element i places after the back, slot(s) gives it, and
// Extend(n) makes the next n slots part of the queue (a connection writes
// its send records where the work requests go, then commits those it
// posted). Index arithmetic wraps by subtraction, never by division (a
// division is a helper call under emulation, and this is the hot path).
//
// T must be default-constructible and copy- or move-assignable; popped
// slots keep their values until overwritten. Preconditions (asserted in
// debug builds): front/pop_front on an empty ring, operator[] past size(),
// Extend past capacity(), a slot index past capacity().
//
// Thread-safety: none (a plain value type). Reset() allocates; nothing else
// does.

#ifndef DEMI_COMMON_FIXED_RING_H_
#define DEMI_COMMON_FIXED_RING_H_

#include <cassert>
#include <cstdint>
#include <utility>
#include <vector>

namespace demi {

template <typename T>
class FixedRing {
 public:
  FixedRing() = default;
  explicit FixedRing(uint32_t capacity) { Reset(capacity); }

  // Empties the ring and gives it `capacity` default-constructed slots.
  void Reset(uint32_t capacity) {
    slots_.assign(capacity, T{});
    head_ = count_ = 0;
  }

  uint32_t capacity() const { return static_cast<uint32_t>(slots_.size()); }
  uint32_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  bool full() const { return count_ == capacity(); }

  T& front() {
    assert(count_ > 0);
    return slots_[head_];
  }
  const T& front() const {
    assert(count_ > 0);
    return slots_[head_];
  }
  // The element `i` places after the front (i < size()).
  T& operator[](uint32_t i) {
    assert(i < count_);
    return slots_[Wrap(head_ + i)];
  }
  const T& operator[](uint32_t i) const {
    assert(i < count_);
    return slots_[Wrap(head_ + i)];
  }

  // Appends `value`; false (and nothing changed) when full.
  bool push_back(T value) {
    if (full()) return false;
    slots_[Wrap(head_ + count_)] = std::move(value);
    ++count_;
    return true;
  }
  // Drops the `n` oldest elements (n <= size()).
  void pop_front(uint32_t n = 1) {
    assert(n <= count_);
    head_ = Wrap(head_ + n);
    count_ -= n;
  }
  // Empties the ring; keeps the slots.
  void clear() { head_ = count_ = 0; }

  // Filling in place: the slot of the element `position` places after the
  // back (position < capacity()), the slot itself, and Extend(n), which
  // makes the next n slots the newest n elements (size() + n <=
  // capacity()).
  uint32_t SlotAfterBack(uint32_t position) const {
    return Wrap2(head_ + count_ + position);
  }
  T& slot(uint32_t index) {
    assert(index < capacity());
    return slots_[index];
  }
  void Extend(uint32_t n) {
    assert(count_ + n <= capacity());
    count_ += n;
  }
  // The slot of the front element, and how many places after it `index`
  // lies (capacity() or more for an index past capacity()).
  uint32_t front_slot() const { return head_; }
  uint32_t PlacesAfterFront(uint32_t index) const {
    if (index >= capacity()) return capacity();
    return index >= head_ ? index - head_ : index + capacity() - head_;
  }

 private:
  // For sums below 2 * capacity().
  uint32_t Wrap(uint32_t i) const {
    return i >= capacity() ? i - capacity() : i;
  }
  // For sums below 3 * capacity().
  uint32_t Wrap2(uint32_t i) const {
    while (i >= capacity()) i -= capacity();
    return i;
  }

  std::vector<T> slots_;
  uint32_t head_ = 0;
  uint32_t count_ = 0;
};

}  // namespace demi

#endif  // DEMI_COMMON_FIXED_RING_H_
