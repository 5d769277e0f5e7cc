// Owned<Traits>: unique ownership of one verbs or rdma_cm object.
//
// Every wrapper in rdma/ holds its C object through this template, so the
// rules are said once: move-only; the object is released exactly once, by the
// destructor or Reset(); release never throws, and a failed release is logged
// (there is nobody to return it to). Traits supplies:
//   using Type = ibv_pd;                      // the C type
//   static constexpr char kRelease[] = "...";  // the release call's name
//   static int Release(Type*);                // 0, or an errno (positive, or
//                                             // -1 with errno set)
// Thread-safety: none; an Owned is used by one thread at a time.

#ifndef DEMI_RDMA_OWNED_H_
#define DEMI_RDMA_OWNED_H_

#include <cerrno>
#include <utility>

#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::rdma {

template <typename Traits>
class Owned {
 public:
  using Type = typename Traits::Type;

  Owned() = default;
  explicit Owned(Type* object) : object_(object) {}
  Owned(Owned&& other) noexcept : object_(other.Release()) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { Reset(); }

  Type* get() const { return object_; }
  Type* operator->() const { return object_; }
  explicit operator bool() const { return object_ != nullptr; }

  // Gives up ownership without releasing.
  Type* Release() { return std::exchange(object_, nullptr); }

  // Releases the current object (logging a failure) and takes `object`.
  void Reset(Type* object = nullptr) noexcept {
    Type* old = std::exchange(object_, object);
    if (old == nullptr) return;
    int rc = Traits::Release(old);
    if (rc != 0) {
      int errnum = rc > 0 ? rc : errno;
      DEMI_LOG(kError, ErrnoStatus(errnum, Traits::kRelease).message());
    }
  }

 private:
  Type* object_ = nullptr;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_OWNED_H_
