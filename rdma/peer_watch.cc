#include "rdma/peer_watch.h"

namespace demi::rdma {

std::optional<absl::Duration> PeerWatch::ProbeStuckFor(
    absl::Time now, absl::Duration stuck_after) const {
  if (!probe_out_ || now - probe_posted_at_ <= stuck_after) {
    return std::nullopt;
  }
  return now - probe_posted_at_;
}

std::optional<absl::Duration> PeerWatch::StalledFor(absl::Time now,
                                                    bool waiting,
                                                    absl::Duration limit) {
  if (!waiting) {
    waiting_since_ = absl::InfiniteFuture();
    return std::nullopt;
  }
  if (waiting_since_ == absl::InfiniteFuture() ||
      progress_ != progress_at_check_) {
    progress_at_check_ = progress_;
    waiting_since_ = now;
    return std::nullopt;
  }
  if (limit <= absl::ZeroDuration() || now - waiting_since_ <= limit) {
    return std::nullopt;
  }
  return now - waiting_since_;
}

}  // namespace demi::rdma
