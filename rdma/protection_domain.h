// ProtectionDomain: owns an ibv_pd.
//
// Every memory region and queue pair of a connection lives in one protection
// domain; it must outlive them (declare it first in the owning object).
// Move-only; a failed dealloc is logged.

#ifndef DEMI_RDMA_PROTECTION_DOMAIN_H_
#define DEMI_RDMA_PROTECTION_DOMAIN_H_

#include <infiniband/verbs.h>

#include "absl/status/statusor.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct ProtectionDomainTraits {
  using Type = ibv_pd;
  static constexpr char kRelease[] = "ibv_dealloc_pd";
  static int Release(ibv_pd* pd) { return ibv_dealloc_pd(pd); }
};

class ProtectionDomain {
 public:
  // Allocates a protection domain on `context` (not owned; must outlive it).
  static absl::StatusOr<ProtectionDomain> Create(ibv_context* context);

  ibv_pd* get() const { return pd_.get(); }

 private:
  explicit ProtectionDomain(ibv_pd* pd) : pd_(pd) {}

  Owned<ProtectionDomainTraits> pd_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_PROTECTION_DOMAIN_H_
