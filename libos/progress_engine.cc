#include "libos/progress_engine.h"

#include <time.h>

#include <utility>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace demi::libos {

uint64_t ReadTicks() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000000u +
         static_cast<uint64_t>(now.tv_nsec);
#endif
}

void ProgressEngine::Add(uint32_t interval, Source poll) {
  uint64_t rounded = 1;
  while (rounded < interval) rounded <<= 1;
  Entry entry{rounded - 1, std::move(poll)};
  if (rounded == 1) {
    every_round_.push_back(std::move(entry));
    return;
  }
  entry.last_ticks = ticks_();
  if (entry.mask < periodic_mask_min_) periodic_mask_min_ = entry.mask;
  periodic_.push_back(std::move(entry));
}

}  // namespace demi::libos
