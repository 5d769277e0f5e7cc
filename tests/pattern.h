// The byte pattern the integration tests write and check. 64-bit word k of
// the bytes of `seed` is seed * kMix + k (kMix the 64-bit golden ratio),
// little-endian; bytes at any offset and length take their part of their
// word. So a shifted, stale, foreign or torn byte shows, at any size (a
// pattern of period 256 would miss a chunk moved by a multiple of 256).

#ifndef DEMI_TESTS_PATTERN_H_
#define DEMI_TESTS_PATTERN_H_

#include <cstddef>
#include <cstdint>

namespace demi::testing {

inline constexpr uint64_t kPatternMix = 0x9E3779B97F4A7C15ull;

// The byte at `offset` of the bytes of `seed`.
inline uint8_t PatternByte(uint64_t seed, size_t offset) {
  const uint64_t word = seed * kPatternMix + offset / 8;
  return static_cast<uint8_t>(word >> (8 * (offset % 8)));
}

// Writes bytes [offset, offset + length) of `seed` to `data`.
void FillPattern(void* data, size_t length, uint64_t seed, size_t offset = 0);

// The index in `data` of the first byte that differs from bytes
// [offset, offset + length) of `seed`, or -1 if none does.
int64_t FindPatternMismatch(const void* data, size_t length, uint64_t seed,
                            size_t offset = 0);

}  // namespace demi::testing

#endif  // DEMI_TESTS_PATTERN_H_
