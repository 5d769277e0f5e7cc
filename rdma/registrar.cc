#include "rdma/registrar.h"

#include <memory>
#include <utility>

#include "common/status_macros.h"
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
  DEMI_ASSIGN_OR_RETURN(MemoryRegion region,
                        MemoryRegion::Register(pd_, address, length, access_));
  return std::make_unique<VerbsRegistration>(std::move(region));
}

}  // namespace demi::rdma
