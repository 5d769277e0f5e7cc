#include "rdma/transfer_nonces.h"

#include <sys/random.h>
#include <x86intrin.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/logging.h"

namespace demi::rdma {

void TransferNonces::Refill() {
  size_t filled = 0;
  auto* bytes = reinterpret_cast<uint8_t*>(nonces_);
  while (filled < sizeof(nonces_)) {
    const ssize_t n = getrandom(bytes + filled, sizeof(nonces_) - filled, 0);
    if (n > 0) {
      filled += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  if (filled < sizeof(nonces_)) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      DEMI_LOG(kWarning, "getrandom failed (", std::strerror(errno),
               "): rendezvous transfer ids from the time-stamp counter");
    }
    // splitmix64 over the time-stamp counter: distinct, not secret.
    uint64_t state = __rdtsc();
    for (size_t i = filled / sizeof(uint16_t); i < kCount; ++i) {
      state += 0x9e3779b97f4a7c15ull;
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      nonces_[i] = static_cast<uint16_t>(z ^ (z >> 31));
    }
  }
  next_ = 0;
}

}  // namespace demi::rdma
