#include "tools/rdma_bench/cycle_clock.h"

#include <time.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace demi::bench {
namespace {

int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

struct Calibration {
  int64_t origin_ns = 0;
  uint64_t origin_cycles = 0;
  double ns_per_cycle = 0;  // 0: no counter, use clock_gettime
};

Calibration Calibrate() {
  Calibration c;
#if defined(__x86_64__)
  constexpr int64_t kCalibrationNs = 20 * 1000 * 1000;
  const int64_t start_ns = MonotonicNs();
  const uint64_t start_cycles = __rdtsc();
  int64_t end_ns = start_ns;
  while (end_ns - start_ns < kCalibrationNs) end_ns = MonotonicNs();
  const uint64_t end_cycles = __rdtsc();
  if (end_cycles > start_cycles) {
    c.origin_ns = start_ns;
    c.origin_cycles = start_cycles;
    c.ns_per_cycle = static_cast<double>(end_ns - start_ns) /
                     static_cast<double>(end_cycles - start_cycles);
  }
#endif
  return c;
}

const Calibration& TheCalibration() {
  static const Calibration calibration = Calibrate();
  return calibration;
}

}  // namespace

int64_t CycleClock::NowNs() {
  const Calibration& c = TheCalibration();
#if defined(__x86_64__)
  if (c.ns_per_cycle > 0) {
    return c.origin_ns + static_cast<int64_t>(
                             static_cast<double>(__rdtsc() - c.origin_cycles) *
                             c.ns_per_cycle);
  }
#endif
  return MonotonicNs();
}

double CycleClock::CyclesPerNs() {
  const Calibration& c = TheCalibration();
  return c.ns_per_cycle > 0 ? 1.0 / c.ns_per_cycle : 0;
}

}  // namespace demi::bench
