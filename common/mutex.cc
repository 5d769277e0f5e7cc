#include "common/mutex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace demi {
namespace {

// A holder usually lets go within a few hundred instructions (one demi_*
// call): spin about that long before sleeping.
constexpr int kSpins = 100;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

void Mutex::LockSlow() {
  uint32_t state = state_.load(std::memory_order_relaxed);
  for (int i = 0; i < kSpins && state != kContended; ++i) {
    if (state == kFree &&
        state_.compare_exchange_weak(state, kLocked, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      return;
    }
    CpuRelax();
    state = state_.load(std::memory_order_relaxed);
  }
  // Mark the word contended and sleep until it was free when we marked it:
  // whoever unlocks a contended word wakes one sleeper, which marks it
  // contended again on the way in (it cannot know it was the last).
  state = state_.exchange(kContended, std::memory_order_acquire);
  while (state != kFree) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&state_), FUTEX_WAIT_PRIVATE,
            kContended, nullptr, nullptr, 0);
    state = state_.exchange(kContended, std::memory_order_acquire);
  }
}

void Mutex::WakeOne() {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&state_), FUTEX_WAKE_PRIVATE,
          1, nullptr, nullptr, 0);
}

}  // namespace demi
