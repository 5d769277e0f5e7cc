#include "rdma/memory_region.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<MemoryRegion> MemoryRegion::Register(ibv_pd* pd, void* address,
                                                    size_t length, int access) {
  if (pd == nullptr) return ErrnoError(EINVAL, "no protection domain");
  if (address == nullptr || length == 0) {
    return ErrnoError(EINVAL, "cannot register an empty range");
  }
  ibv_mr* mr = ibv_reg_mr(pd, address, length, access);
  if (mr == nullptr) {
    return ErrnoStatus(errno, absl::StrCat("ibv_reg_mr(", length, " bytes)"));
  }
  return MemoryRegion(mr);
}

}  // namespace demi::rdma
