// ProgressEngine: what one round of progress visits, and how often.
//
// Nothing in the library runs on its own thread: progress is made by the
// waiting calls, one round at a time, and a round polls every registered
// source that is due. A source is due every `interval` rounds, a power of
// two: completion queues every round (1), an rdma_cm event channel (a system
// call per look, a few microseconds under emulation) every 1024th, slow
// housekeeping every 1024th. Sources are polled in the order they were
// added; those due every round first.
//
//   ProgressEngine engine;
//   engine.Add(1, [&] { devices.PollCompletions(); });
//   engine.Add(1024, [&] { DrainCmEvents(); });
//   engine.Round();  // from the wait loop
//
// Lifetime: the engine owns the callables, not what they refer to; a source
// stays registered for the engine's life, so what it polls must outlive the
// rounds (the LibOS destroys its sockets only when no round can run). A
// source must not add sources.
//
// Rounds are not evenly spaced in time: a program that polls with
// zero-timeout waits and works in between may run one round a millisecond.
// So the first round of each wait is a catch-up round (Round(true)): a
// periodic source is also polled then if kCatchUpTicks of the tick counter
// have passed since it last ran. That costs one read of the counter per
// wait, never one per spinning round.
//
// Thread-safety: none; the worker's mutex guards the engine and every round.
// The hot path (Round) makes no allocation and no lookup.

#ifndef DEMI_LIBOS_PROGRESS_ENGINE_H_
#define DEMI_LIBOS_PROGRESS_ENGINE_H_

#include <cstdint>
#include <functional>
#include <vector>

namespace demi::libos {

// How often a round looks at an rdma_cm event channel: a system call (about
// a microsecond under emulation, and librdmacm allocates and frees an event
// per look, against ~0.1 us for a round without completions), so connection
// events wait a hundred microseconds or so and messages seldom wait behind
// the system call. At every 128th round, with a stream and a datagram
// channel, a 64 B ping-pong made 1.7 failed looks per round trip (strace):
// about a tenth of the spin time was spent in them.
inline constexpr uint32_t kCmPollInterval = 1024;

// Ticks after which a catch-up round polls a periodic source whatever the
// round count: 2^22 of the x86 time-stamp counter (1-4 ms at 1-4 GHz), or
// of nanoseconds elsewhere (4 ms).
inline constexpr uint64_t kCatchUpTicks = uint64_t{1} << 22;

// The tick counter ProgressEngine reads by default: the time-stamp counter
// on x86-64 (rdtsc, a few nanoseconds even under emulation), monotonic
// nanoseconds elsewhere.
uint64_t ReadTicks();

class ProgressEngine {
 public:
  using Source = std::function<void()>;

  // `ticks` is the tick counter (ReadTicks outside tests).
  explicit ProgressEngine(uint64_t (*ticks)() = &ReadTicks) : ticks_(ticks) {}

  // Registers `poll`, called every `interval` rounds (rounded up to a power
  // of two; 0 counts as 1), starting with the next round that is a multiple
  // of it.
  void Add(uint32_t interval, Source poll);

  // One round: polls every source that is due. With `catch_up` (the first
  // round of a wait), a periodic source not polled for kCatchUpTicks is due
  // too.
  void Round(bool catch_up = false) {
    ++rounds_;
    for (Entry& entry : every_round_) entry.poll();
    if (periodic_.empty()) return;
    const bool counted = (rounds_ & periodic_mask_min_) == 0;
    if (!counted && !catch_up) return;
    const uint64_t now = ticks_();
    for (Entry& entry : periodic_) {
      if ((rounds_ & entry.mask) == 0 ||
          (catch_up && now - entry.last_ticks >= kCatchUpTicks)) {
        entry.last_ticks = now;
        entry.poll();
      }
    }
  }

  // A round that polls every source, due or not (after a sleep: whatever
  // woke the waiter may be an rdma_cm event).
  void RoundAll() {
    ++rounds_;
    for (Entry& entry : every_round_) entry.poll();
    const uint64_t now = periodic_.empty() ? 0 : ticks_();
    for (Entry& entry : periodic_) {
      entry.last_ticks = now;
      entry.poll();
    }
  }

  // Rounds run so far.
  uint64_t rounds() const { return rounds_; }

 private:
  struct Entry {
    uint64_t mask;  // interval - 1
    Source poll;
    uint64_t last_ticks = 0;  // when it was last polled (periodic sources)
  };
  uint64_t (*const ticks_)();
  std::vector<Entry> every_round_;
  std::vector<Entry> periodic_;
  // The smallest periodic mask: no periodic source is due by count in a
  // round that is not a multiple of it (masks are 2^k - 1, nested).
  uint64_t periodic_mask_min_ = ~uint64_t{0};
  uint64_t rounds_ = 0;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_PROGRESS_ENGINE_H_
