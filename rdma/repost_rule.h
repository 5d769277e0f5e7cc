// RepostRule: when a queue pair's released receive buffers go back to the
// device. Each ibv_post_recv costs a provider call and, for a connection,
// the credits it returns go to the peer in a message; so released buffers
// wait until a batch of them is ready (an eighth of the buffers) while most
// are posted, and go at once when a quarter or more are out (the peer's
// credits, or a datagram endpoint's room for arrivals, run low).
//
// RcConnection and UdEndpoint both ask it. Pure value; thread-safe.

#ifndef DEMI_RDMA_REPOST_RULE_H_
#define DEMI_RDMA_REPOST_RULE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace demi::rdma {

class RepostRule {
 public:
  // For a queue pair keeping `receive_buffers` buffers posted.
  explicit RepostRule(uint32_t receive_buffers)
      : batch_(std::max<uint32_t>(1, receive_buffers / 8)),
        low_water_(receive_buffers - receive_buffers / 4) {}

  // Whether `released` buffers waiting to be re-posted go now, with
  // `posted` buffers posted.
  bool Due(size_t released, uint32_t posted) const {
    return released > 0 && (released >= batch_ || posted <= low_water_);
  }

  uint32_t batch() const { return batch_; }

 private:
  uint32_t batch_;
  uint32_t low_water_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_REPOST_RULE_H_
