#include "rdma/device_registry.h"

#include <rdma/rdma_cma.h>

#include <cerrno>

#include "common/errno_status.h"
#include "common/status_macros.h"

namespace demi::rdma {

absl::StatusOr<std::unique_ptr<DeviceRegistry>> DeviceRegistry::Create(
    const BufferPoolOptions& pool_options) {
  std::unique_ptr<DeviceRegistry> registry(new DeviceRegistry());
  int count = 0;
  registry->rdma_cm_devices_ = rdma_get_devices(&count);
  if (registry->rdma_cm_devices_ == nullptr || count == 0) {
    return ErrnoError(ENODEV, "no RDMA device (rdma_get_devices found none)");
  }
  for (int i = 0; i < count; ++i) {
    ibv_context* context = registry->rdma_cm_devices_[i];
    DEMI_ASSIGN_OR_RETURN(ProtectionDomain pd,
                          ProtectionDomain::Create(context));
    registry->devices_.push_back(Device{context, std::move(pd)});
  }
  registry->registrar_ = std::make_unique<VerbsRegistrar>(
      registry->devices_.front().pd.get(), IBV_ACCESS_LOCAL_WRITE);
  DEMI_ASSIGN_OR_RETURN(
      registry->pool_,
      BufferPool::Create(registry->registrar_.get(), pool_options));
  return registry;
}

DeviceRegistry::~DeviceRegistry() {
  pool_.reset();
  registrar_.reset();
  devices_.clear();
  if (rdma_cm_devices_ != nullptr) rdma_free_devices(rdma_cm_devices_);
}

ibv_pd* DeviceRegistry::PdFor(const ibv_context* context) const {
  for (const Device& device : devices_) {
    if (device.context == context) return device.pd.get();
  }
  return nullptr;
}

}  // namespace demi::rdma
