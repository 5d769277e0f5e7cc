// CycleClock: time read from the CPU's cycle counter, as perftest reads it.
//
// The benchmark reads the clock around every sample. Where clock_gettime is
// a system call (a guest whose clock source is an emulated HPET: ~700 ns a
// read), that would be part of what is measured; a cycle counter read is a
// few dozen cycles. The counter is calibrated once, on first use, against
// CLOCK_MONOTONIC over kCalibration. Off x86-64 it falls back to
// clock_gettime.
//
// Thread-safety: NowNs() may be called from any thread once calibrated (the
// first call calibrates, under a function-local static).

#ifndef DEMI_TOOLS_RDMA_BENCH_CYCLE_CLOCK_H_
#define DEMI_TOOLS_RDMA_BENCH_CYCLE_CLOCK_H_

#include <cstdint>

namespace demi::bench {

class CycleClock {
 public:
  // Nanoseconds on a monotonic scale (CLOCK_MONOTONIC's origin).
  static int64_t NowNs();
  // Cycles per nanosecond found by the calibration (0: no cycle counter).
  static double CyclesPerNs();
};

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_CYCLE_CLOCK_H_
