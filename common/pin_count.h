// PinCount: free protection for one buffer that several threads may read.
//
// A buffer handed to an owner (the application, after demi_sgaalloc or a
// pop) may be pinned by readers (pushes in flight that read it). The owner
// releases it (demi_sgafree) whenever it likes; the buffer is really freed
// only once no pin is held, and exactly one party learns that it is the one
// to free it: Release() if no pin was held, else the Unpin() of the last pin.
//
//   buffer.pins.Reset();                      // handed out
//   if (!buffer.pins.Pin()) return EINVAL;   // a push: released already
//   ...
//   if (buffer.pins.Unpin()) FreeNow(buffer);             // push done
//   if (buffer.pins.Release() == PinCount::kFreeNow) FreeNow(buffer);
//
// Thread-safety: every member function is safe from any thread (one atomic
// word; lock-free). Reset() must not race with the others (the buffer is
// not in anyone's hands then).

#ifndef DEMI_COMMON_PIN_COUNT_H_
#define DEMI_COMMON_PIN_COUNT_H_

#include <atomic>
#include <cstdint>

namespace demi {

class PinCount {
 public:
  enum ReleaseResult {
    kFreeNow,          // no pin held: the caller frees the buffer now
    kDeferred,         // the last Unpin() will say to free it
    kAlreadyReleased,  // a second release: nothing changed
  };

  // `released`: starts as if Release() had been called (a buffer not yet
  // in anyone's hands).
  explicit PinCount(bool released = false) : word_(released ? kReleased : 0) {}
  PinCount(const PinCount&) = delete;
  PinCount& operator=(const PinCount&) = delete;

  // Handed out again: not released, no pin.
  void Reset() { word_.store(0, std::memory_order_relaxed); }

  // Takes a pin. False, nothing changed, if the buffer was released.
  bool Pin() {
    uint32_t word = word_.load(std::memory_order_relaxed);
    do {
      if ((word & kReleased) != 0) return false;
    } while (!word_.compare_exchange_weak(word, word + kOnePin,
                                          std::memory_order_acquire,
                                          std::memory_order_relaxed));
    return true;
  }

  // Drops a pin Pin() took. True if it was the last one and the buffer was
  // released meanwhile: the caller frees it now.
  bool Unpin() {
    return word_.fetch_sub(kOnePin, std::memory_order_acq_rel) ==
           (kOnePin | kReleased);
  }

  // The owner lets go of the buffer (see ReleaseResult).
  ReleaseResult Release() {
    uint32_t word = word_.load(std::memory_order_relaxed);
    do {
      if ((word & kReleased) != 0) return kAlreadyReleased;
    } while (!word_.compare_exchange_weak(word, word | kReleased,
                                          std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    return word == 0 ? kFreeNow : kDeferred;
  }

  // Whether Release() was called since Reset().
  bool released() const {
    return (word_.load(std::memory_order_acquire) & kReleased) != 0;
  }
  // Pins held (a snapshot).
  uint32_t pins() const {
    return word_.load(std::memory_order_relaxed) / kOnePin;
  }

 private:
  static constexpr uint32_t kReleased = 1;
  static constexpr uint32_t kOnePin = 2;

  std::atomic<uint32_t> word_{0};
};

}  // namespace demi

#endif  // DEMI_COMMON_PIN_COUNT_H_
