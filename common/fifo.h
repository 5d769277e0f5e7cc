// Fifo<T>: a first-in first-out queue on one ring of slots that grows (by
// doubling) only when it is full and never shrinks, so a queue that keeps
// a steady depth allocates nothing after its first few pushes. std::deque,
// by contrast, allocates and frees a block every few hundred bytes that
// pass through it: a malloc and a free on a path that must make none.
//
//   Fifo<demi_qtoken_t> waiting;
//   waiting.push_back(qt);
//   if (!waiting.empty()) { Use(waiting.front()); waiting.pop_front(); }
//
// T must be default-constructible and move-assignable; popped slots keep
// their (moved-from) values until overwritten, so T should own nothing
// that matters (tokens, descriptors, small records).
//
// Errors: push_back throws std::bad_alloc if growing fails (as the
// standard containers do). front() and pop_front() on an empty Fifo are
// undefined (asserted in debug builds).
//
// Thread-safety: none (a plain value type).

#ifndef DEMI_COMMON_FIFO_H_
#define DEMI_COMMON_FIFO_H_

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <utility>

namespace demi {

template <typename T>
class Fifo {
 public:
  Fifo() = default;
  Fifo(Fifo&&) noexcept = default;
  Fifo& operator=(Fifo&&) noexcept = default;
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // Slots allocated (0 before the first push; a power of two after).
  size_t capacity() const { return mask_ == 0 && !slots_ ? 0 : mask_ + 1; }

  T& front() {
    assert(size_ > 0);
    return slots_[head_];
  }
  const T& front() const {
    assert(size_ > 0);
    return slots_[head_];
  }
  // The element `i` places after the front (i < size()).
  const T& operator[](size_t i) const {
    assert(i < size_);
    return slots_[(head_ + i) & mask_];
  }

  void push_back(T value) {
    if (size_ == capacity()) Grow();
    slots_[(head_ + size_) & mask_] = std::move(value);
    ++size_;
  }
  void pop_front() {
    assert(size_ > 0);
    head_ = (head_ + 1) & mask_;
    --size_;
  }
  // Empties the queue; keeps the slots.
  void clear() {
    head_ = 0;
    size_ = 0;
  }

  // Forward iteration from front to back (for loops that visit every
  // element before clear()).
  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = const T&;

    const_iterator(const Fifo* fifo, size_t i) : fifo_(fifo), i_(i) {}
    const T& operator*() const { return (*fifo_)[i_]; }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator==(const const_iterator& other) const {
      return i_ == other.i_;
    }
    bool operator!=(const const_iterator& other) const {
      return i_ != other.i_;
    }

   private:
    const Fifo* fifo_;
    size_t i_;
  };
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size_); }

 private:
  static constexpr size_t kFirstCapacity = 8;

  void Grow() {
    const size_t old_capacity = capacity();
    const size_t new_capacity =
        old_capacity == 0 ? kFirstCapacity : old_capacity * 2;
    std::unique_ptr<T[]> slots(new T[new_capacity]);
    for (size_t i = 0; i < size_; ++i) {
      slots[i] = std::move(slots_[(head_ + i) & mask_]);
    }
    slots_ = std::move(slots);
    mask_ = new_capacity - 1;
    head_ = 0;
  }

  std::unique_ptr<T[]> slots_;
  size_t mask_ = 0;  // capacity - 1 once allocated
  size_t head_ = 0;  // slot of the front element
  size_t size_ = 0;
};

}  // namespace demi

#endif  // DEMI_COMMON_FIFO_H_
