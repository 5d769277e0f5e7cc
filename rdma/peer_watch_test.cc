#include "rdma/peer_watch.h"

#include <optional>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace demi::rdma {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

TEST(PeerWatchTest, ProbeIsStuckOnlyWhileOutPastTheLimit) {
  PeerWatch watch;
  const absl::Duration limit = absl::Seconds(2);
  EXPECT_EQ(watch.ProbeStuckFor(kStart + absl::Hours(1), limit), std::nullopt)
      << "no probe out";
  watch.ProbePosted(kStart);
  EXPECT_TRUE(watch.probe_out());
  EXPECT_EQ(watch.probes(), 1u);
  EXPECT_EQ(watch.ProbeStuckFor(kStart + limit, limit), std::nullopt);
  EXPECT_EQ(watch.ProbeStuckFor(kStart + absl::Seconds(3), limit),
            absl::Seconds(3));
  watch.ProbeDone();
  EXPECT_FALSE(watch.probe_out());
  EXPECT_EQ(watch.ProbeStuckFor(kStart + absl::Seconds(3), limit),
            std::nullopt);
  watch.ProbePosted(kStart + absl::Seconds(10));
  EXPECT_EQ(watch.probes(), 2u);
  EXPECT_EQ(watch.ProbeStuckFor(kStart + absl::Seconds(11), limit),
            std::nullopt)
      << "timed from the latest probe";
}

TEST(PeerWatchTest, StallCountsFromTheLastProgressWhileWaiting) {
  PeerWatch watch;
  const absl::Duration limit = absl::Seconds(5);
  auto at = [](int seconds) { return kStart + absl::Seconds(seconds); };
  EXPECT_EQ(watch.StalledFor(at(0), true, limit), std::nullopt);  // starts
  EXPECT_EQ(watch.StalledFor(at(5), true, limit), std::nullopt);  // = limit
  EXPECT_EQ(watch.StalledFor(at(6), true, limit), absl::Seconds(6));
  watch.PeerProgressed();
  EXPECT_EQ(watch.StalledFor(at(7), true, limit), std::nullopt)
      << "progress restarts the wait";
  EXPECT_EQ(watch.StalledFor(at(12), true, limit), std::nullopt);
  EXPECT_EQ(watch.StalledFor(at(13), true, limit), absl::Seconds(6));
  EXPECT_EQ(watch.StalledFor(at(14), false, limit), std::nullopt)
      << "not waiting";
  EXPECT_EQ(watch.StalledFor(at(100), true, limit), std::nullopt)
      << "a new wait starts afresh";
  EXPECT_EQ(watch.StalledFor(at(106), true, limit), absl::Seconds(6));
}

TEST(PeerWatchTest, NoLimitNeverStalls) {
  PeerWatch watch;
  EXPECT_EQ(watch.StalledFor(kStart, true, absl::ZeroDuration()), std::nullopt);
  EXPECT_EQ(
      watch.StalledFor(kStart + absl::Hours(1), true, absl::ZeroDuration()),
      std::nullopt);
}

}  // namespace
}  // namespace demi::rdma
