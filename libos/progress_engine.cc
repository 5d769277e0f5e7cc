#include "libos/progress_engine.h"

#include <utility>

namespace demi::libos {

void ProgressEngine::Add(uint32_t interval, Source poll) {
  uint64_t rounded = 1;
  while (rounded < interval) rounded <<= 1;
  Entry entry{rounded - 1, std::move(poll)};
  (rounded == 1 ? every_round_ : periodic_).push_back(std::move(entry));
}

}  // namespace demi::libos
