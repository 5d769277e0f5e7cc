// Segment and RegisteredSpan: how the RDMA layer names registered memory
// to its users. A Segment is one piece of an outgoing message (a connection's
// or a datagram endpoint's); a RegisteredSpan is a whole registered area
// (a held receive buffer), from which segments are cut.
//
// Plain values: they own nothing, and the memory they name must stay
// registered (and, for a Segment, unchanged) until the send that carries it
// completes.

#ifndef DEMI_RDMA_SEGMENT_H_
#define DEMI_RDMA_SEGMENT_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>

namespace demi::rdma {

// A part of an outgoing message, in memory registered in the connection's
// protection domain (lkey). An aggregate without default values, so that an
// array of them on the push path costs nothing to declare: `Segment{...}`
// zeroes what it does not name.
struct Segment {
  const void* data;
  uint32_t length;
  uint32_t lkey;
  // Unused by RcConnection (a rendezvous announces keys of its own, see
  // RendezvousSender); kept zero or the registration's rkey.
  uint32_t rkey;
};

// Registered memory: where it lies, its keys, and the protection domain
// they are valid in. What a held receive buffer is, for pushing it on.
struct RegisteredSpan {
  const uint8_t* data = nullptr;  // null: no such memory
  size_t size = 0;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
  ibv_pd* pd = nullptr;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_SEGMENT_H_
