// Mutex: a small futex-based mutex that Clang's thread-safety analysis
// understands (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED...), with a
// scoped lock.
//
// Why not absl::Mutex: Debian's Abseil is built without NDEBUG, so every
// absl::Mutex lock and unlock runs its deadlock detector (a graph of lock
// acquisitions, a thread-local lookup): about 44 ns per uncontended
// lock + unlock on the build machines, on the path of every demi_* call.
// Why not std::mutex: glibc's pthread_mutex_lock/unlock cost about 60
// instructions a pair even uncontended (lock kinds, elision and robustness
// checks), and a 64 B round trip takes a lock about ten times; here the
// uncontended pair is one compare-and-swap and one exchange, inline.
//
// Algorithm: the three-state futex mutex (0 free, 1 locked, 2 locked with
// possible waiters). Lock: CAS 0 -> 1; if that fails, spin a little, then
// mark the word 2 and sleep in FUTEX_WAIT until it is 0. Unlock: exchange
// 0; if it was 2, FUTEX_WAKE one sleeper. Not fair; no lost wake-ups.
//
// Thread-safety: it is a mutex, for the threads of one process (private
// futex). Not recursive; no condition variables.

#ifndef DEMI_COMMON_MUTEX_H_
#define DEMI_COMMON_MUTEX_H_

#include <atomic>
#include <cstdint>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"

namespace demi {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  ABSL_ATTRIBUTE_ALWAYS_INLINE void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    uint32_t expected = kFree;
    if (!state_.compare_exchange_strong(expected, kLocked,
                                        std::memory_order_acquire,
                                        std::memory_order_relaxed)) {
      LockSlow();
    }
  }
  ABSL_ATTRIBUTE_ALWAYS_INLINE void Unlock() ABSL_UNLOCK_FUNCTION() {
    if (state_.exchange(kFree, std::memory_order_release) == kContended) {
      WakeOne();
    }
  }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    uint32_t expected = kFree;
    return state_.compare_exchange_strong(expected, kLocked,
                                          std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }

 private:
  static constexpr uint32_t kFree = 0;
  static constexpr uint32_t kLocked = 1;
  static constexpr uint32_t kContended = 2;

  void LockSlow();
  void WakeOne();

  std::atomic<uint32_t> state_{kFree};
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  ABSL_ATTRIBUTE_ALWAYS_INLINE explicit MutexLock(Mutex* mu)
      ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_->Lock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ABSL_ATTRIBUTE_ALWAYS_INLINE ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    mu_->Unlock();
  }

 private:
  Mutex* const mu_;
};

}  // namespace demi

#endif  // DEMI_COMMON_MUTEX_H_
