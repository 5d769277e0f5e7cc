#include "rdma/registrar.h"

#include <cerrno>
#include <memory>
#include <utility>

#include "common/errno_status.h"
#include "rdma/memory_region.h"

namespace demi::rdma {
namespace {

class VerbsRegistration final : public Registration {
 public:
  explicit VerbsRegistration(MemoryRegion region)
      : region_(std::move(region)) {}

  MemoryKeys keys() const override {
    return MemoryKeys{region_.lkey(), region_.rkey()};
  }

 private:
  MemoryRegion region_;  // Deregisters (logging a failure) when destroyed.
};

}  // namespace

absl::StatusOr<std::unique_ptr<Registration>> VerbsRegistrar::Register(
    void* address, size_t length) {
  absl::StatusOr<MemoryRegion> region =
      MemoryRegion::Register(pd_, address, length, access_);
  constexpr int kWriteAccess = IBV_ACCESS_LOCAL_WRITE |
                               IBV_ACCESS_REMOTE_WRITE |
                               IBV_ACCESS_REMOTE_ATOMIC;
  const int errnum = ErrnoFromStatus(region.status());
  if (!region.ok() && fallback_ == ReadOnlyFallback::kYes &&
      (access_ & kWriteAccess) != 0 && (errnum == EFAULT || errnum == EACCES)) {
    region =
        MemoryRegion::Register(pd_, address, length, access_ & ~kWriteAccess);
  }
  if (!region.ok()) return region.status();
  return std::make_unique<VerbsRegistration>(*std::move(region));
}

}  // namespace demi::rdma
