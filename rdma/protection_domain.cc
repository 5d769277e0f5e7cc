#include "rdma/protection_domain.h"

#include <cerrno>

#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<ProtectionDomain> ProtectionDomain::Create(
    ibv_context* context) {
  if (context == nullptr) return ErrnoError(EINVAL, "no device context");
  ibv_pd* pd = ibv_alloc_pd(context);
  if (pd == nullptr) return ErrnoStatus(errno, "ibv_alloc_pd");
  return ProtectionDomain(pd);
}

}  // namespace demi::rdma
