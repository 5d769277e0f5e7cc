// Mutex: a plain std::mutex that Clang's thread-safety analysis understands
// (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED...), with a scoped lock.
//
// Why not absl::Mutex: Debian's Abseil is built without NDEBUG, so every
// absl::Mutex lock and unlock runs its deadlock detector (a graph of lock
// acquisitions, a thread-local lookup): about 44 ns per uncontended
// lock + unlock on the build machines, against 3 ns for std::mutex, on the
// path of every demi_* call. Turning the detector off would be a
// process-wide change to the application's own Abseil mutexes.
//
// Thread-safety: it is a mutex. Not recursive; no condition variables.

#ifndef DEMI_COMMON_MUTEX_H_
#define DEMI_COMMON_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace demi {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    return mu_.try_lock();
  }

 private:
  std::mutex mu_;
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  Mutex* const mu_;
};

}  // namespace demi

#endif  // DEMI_COMMON_MUTEX_H_
