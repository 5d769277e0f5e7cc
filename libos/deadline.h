// Deadline: when a wait gives up, checked once per progress round.
//
// Reading the clock is not free: in a guest whose only clock sources are an
// emulated HPET or ACPI timer, clock_gettime costs about as much as a system
// call (~700 ns). A wait that is answered within its first few rounds should
// not pay for it, so a Deadline reads the clock only once a wait has gone
// kClockInterval rounds without an answer, and from then on every
// kClockInterval rounds. The timeout counts from that first read: a wait
// lasts at most kClockInterval rounds longer than asked (microseconds, when
// rounds find nothing to do).
//
// An infinite timeout never reads the clock; a zero (or negative) one
// passes after the first round, so a zero wait is exactly one poll.
//
// Not thread-safe: one Deadline belongs to one waiting call.

#ifndef DEMI_LIBOS_DEADLINE_H_
#define DEMI_LIBOS_DEADLINE_H_

#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace demi::libos {

class Deadline {
 public:
  static constexpr uint32_t kClockInterval = 8;

  // `now` is the clock (absl::Now outside tests).
  explicit Deadline(absl::Duration timeout, absl::Time (*now)() = &absl::Now)
      : timeout_(timeout),
        infinite_(timeout == absl::InfiniteDuration()),
        zero_(timeout <= absl::ZeroDuration()),
        now_(now) {}

  // Time left, InfiniteDuration() for an infinite timeout (reads the clock;
  // a wait not yet timed starts its timeout now).
  absl::Duration Remaining() {
    if (infinite_) return absl::InfiniteDuration();
    if (zero_) return absl::ZeroDuration();
    const absl::Time now = now_();
    if (rounds_ < kClockInterval) {
      deadline_ = now + timeout_;
      rounds_ = kClockInterval;
    }
    return deadline_ > now ? deadline_ - now : absl::ZeroDuration();
  }

  // Call once after each round that found nothing; true once the wait is
  // over.
  bool Passed() {
    if (infinite_) return false;
    if (zero_) return true;
    if (++rounds_ % kClockInterval != 0) return false;
    const absl::Time now = now_();
    if (rounds_ == kClockInterval) {
      deadline_ = now + timeout_;
      return false;
    }
    return now >= deadline_;
  }

 private:
  const absl::Duration timeout_;
  const bool infinite_;
  const bool zero_;
  absl::Time (*const now_)();
  absl::Time deadline_ = absl::InfinitePast();  // set at the first read
  uint32_t rounds_ = 0;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_DEADLINE_H_
