// MemoryRegion: owns an ibv_mr, a range of memory registered with a device.
//
// Registration pins the pages: until the region is deregistered the device
// reads and writes the physical pages that backed the range at registration,
// whatever the application later does to the virtual range. Move-only; the
// protection domain must outlive it; a failed deregistration is logged.

#ifndef DEMI_RDMA_MEMORY_REGION_H_
#define DEMI_RDMA_MEMORY_REGION_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct MemoryRegionTraits {
  using Type = ibv_mr;
  static constexpr char kRelease[] = "ibv_dereg_mr";
  static int Release(ibv_mr* mr) { return ibv_dereg_mr(mr); }
};

class MemoryRegion {
 public:
  // Registers [address, address + length) in `pd` (not owned) with `access`
  // (IBV_ACCESS_* flags). length must be > 0.
  static absl::StatusOr<MemoryRegion> Register(ibv_pd* pd, void* address,
                                               size_t length, int access);

  ibv_mr* get() const { return mr_.get(); }
  uint32_t lkey() const { return mr_->lkey; }
  uint32_t rkey() const { return mr_->rkey; }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(mr_->addr); }
  size_t length() const { return mr_->length; }

  // True if [address, address + length) lies inside this region.
  bool Contains(const void* address, size_t length) const {
    uintptr_t begin = reinterpret_cast<uintptr_t>(address);
    return begin >= this->address() && length <= this->length() &&
           begin - this->address() <= this->length() - length;
  }

 private:
  explicit MemoryRegion(ibv_mr* mr) : mr_(mr) {}

  Owned<MemoryRegionTraits> mr_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_MEMORY_REGION_H_
