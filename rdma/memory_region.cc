#include "rdma/memory_region.h"

#include <atomic>
#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "rdma/locked_memory.h"

namespace demi::rdma {

absl::StatusOr<MemoryRegion> MemoryRegion::Register(ibv_pd* pd, void* address,
                                                    size_t length, int access) {
  if (pd == nullptr) return ErrnoError(EINVAL, "no protection domain");
  if (address == nullptr || length == 0) {
    return ErrnoError(EINVAL, "cannot register an empty range");
  }
  ibv_mr* mr = ibv_reg_mr(pd, address, length, access);
  if (mr == nullptr) {
    const int error = errno;
    std::string what = absl::StrCat("ibv_reg_mr(", length, " bytes)");
    if (error == ENOMEM) {
      if (std::string limit = LockedMemoryExplanation(length); !limit.empty()) {
        absl::StrAppend(&what, ": ", limit);
        // The application sees only ENOMEM: say why on stderr, loudly the
        // first time (callers may retry after freeing what they cache).
        static std::atomic<bool> told{false};
        if (!told.exchange(true)) {
          DEMI_LOG(kWarning, what);
        } else {
          DEMI_LOG(kInfo, what);
        }
      }
    }
    return ErrnoStatus(error, what);
  }
  return MemoryRegion(mr);
}

}  // namespace demi::rdma
