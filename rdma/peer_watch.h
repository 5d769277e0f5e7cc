// PeerWatch: when a connection has waited on its peer for too long. Pure
// bookkeeping on the caller's clock: it posts nothing and fails nothing; the
// connection asks and acts (rc_connection_liveness.cc).
//
// Two watches:
//  * the keepalive probe: at most one out at a time (ProbePosted, ProbeDone);
//    one still out after `stuck_after` means the transport neither delivered
//    nor gave up on it (ProbeStuckFor);
//  * the stall: while the connection waits on its peer (sends queued for
//    credits it does not return, rendezvous dones that do not come), the
//    peer must show progress (PeerProgressed: credits returned, dones);
//    StalledFor says how long it has not, once that exceeds the limit.
//
// Thread-safety: none (the connection's caller serializes).

#ifndef DEMI_RDMA_PEER_WATCH_H_
#define DEMI_RDMA_PEER_WATCH_H_

#include <cstdint>
#include <optional>

#include "absl/time/time.h"

namespace demi::rdma {

class PeerWatch {
 public:
  // A probe is out (posted, its completion not yet seen).
  bool probe_out() const { return probe_out_; }
  // Probes posted so far.
  uint64_t probes() const { return probes_; }
  void ProbePosted(absl::Time now) {
    probe_out_ = true;
    probe_posted_at_ = now;
    ++probes_;
  }
  void ProbeDone() { probe_out_ = false; }
  // How long the probe has been out, if that is more than `stuck_after`.
  std::optional<absl::Duration> ProbeStuckFor(absl::Time now,
                                              absl::Duration stuck_after) const;

  // The peer did something that moves a waiting connection on.
  void PeerProgressed() { ++progress_; }
  // Called every second or so with whether the connection now waits on its
  // peer: the wait (re)starts when it begins and whenever the peer
  // progressed since the last call; returns its length once it is more than
  // `limit` (> 0; none otherwise).
  std::optional<absl::Duration> StalledFor(absl::Time now, bool waiting,
                                           absl::Duration limit);

 private:
  bool probe_out_ = false;
  absl::Time probe_posted_at_;
  uint64_t probes_ = 0;
  uint64_t progress_ = 0;
  uint64_t progress_at_check_ = 0;
  absl::Time waiting_since_ = absl::InfiniteFuture();
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_PEER_WATCH_H_
