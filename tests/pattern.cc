#include "tests/pattern.h"

#include <cstring>

namespace demi::testing {

// Whole aligned words at a time (gigabyte messages), bytes at the edges.
void FillPattern(void* data, size_t length, uint64_t seed, size_t offset) {
  auto* bytes = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < length;) {
    if ((offset + i) % 8 == 0 && length - i >= 8) {
      const uint64_t word = seed * kPatternMix + (offset + i) / 8;
      std::memcpy(bytes + i, &word, 8);
      i += 8;
    } else {
      bytes[i] = PatternByte(seed, offset + i);
      ++i;
    }
  }
}

int64_t FindPatternMismatch(const void* data, size_t length, uint64_t seed,
                            size_t offset) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < length;) {
    if ((offset + i) % 8 == 0 && length - i >= 8) {
      const uint64_t word = seed * kPatternMix + (offset + i) / 8;
      if (std::memcmp(bytes + i, &word, 8) == 0) {
        i += 8;
        continue;
      }
      for (size_t k = 0; k < 8; ++k) {  // which byte of the word
        if (bytes[i + k] != PatternByte(seed, offset + i + k)) {
          return static_cast<int64_t>(i + k);
        }
      }
    }
    if (bytes[i] != PatternByte(seed, offset + i)) {
      return static_cast<int64_t>(i);
    }
    ++i;
  }
  return -1;
}

}  // namespace demi::testing
