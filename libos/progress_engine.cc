#include "libos/progress_engine.h"

#include <algorithm>
#include <utility>

namespace demi::libos {

uint32_t ProgressEngine::Add(uint32_t interval, Source poll) {
  uint64_t rounded = 1;
  while (rounded < interval) rounded <<= 1;
  const uint32_t id = next_id_++;
  Entry entry{id, rounded - 1, std::move(poll)};
  (rounded == 1 ? every_round_ : periodic_).push_back(std::move(entry));
  return id;
}

void ProgressEngine::Remove(uint32_t id) {
  for (std::vector<Entry>* list : {&every_round_, &periodic_}) {
    list->erase(std::remove_if(list->begin(), list->end(),
                               [id](const Entry& e) { return e.id == id; }),
                list->end());
  }
}

}  // namespace demi::libos
