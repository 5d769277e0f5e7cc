// AddressHandle: owns an ibv_ah, the route a UD send takes to one peer.
//
// Move-only; the protection domain must outlive it, and so must every send
// posted with it until that send completes. A failed destroy is logged.

#ifndef DEMI_RDMA_ADDRESS_HANDLE_H_
#define DEMI_RDMA_ADDRESS_HANDLE_H_

#include <infiniband/verbs.h>

#include "absl/status/statusor.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct AddressHandleTraits {
  using Type = ibv_ah;
  static constexpr char kRelease[] = "ibv_destroy_ah";
  static int Release(ibv_ah* ah) { return ibv_destroy_ah(ah); }
};

class AddressHandle {
 public:
  // Creates a handle in `pd` (not owned) from `attr` (e.g. the ah_attr of a
  // UDP-port-space ESTABLISHED event).
  static absl::StatusOr<AddressHandle> Create(ibv_pd* pd, ibv_ah_attr& attr);

  ibv_ah* get() const { return ah_.get(); }

 private:
  explicit AddressHandle(ibv_ah* ah) : ah_(ah) {}

  Owned<AddressHandleTraits> ah_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_ADDRESS_HANDLE_H_
