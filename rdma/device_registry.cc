#include "rdma/device_registry.h"

#include <rdma/rdma_cma.h>

#include <cerrno>

#include "common/errno_status.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace demi::rdma {

absl::StatusOr<std::unique_ptr<DeviceRegistry>> DeviceRegistry::Create(
    const BufferPoolOptions& pool_options,
    const RegionCacheOptions& cache_options, bool cache_enabled,
    const LargeBufferPoolOptions& large_options) {
  std::unique_ptr<DeviceRegistry> registry(new DeviceRegistry());
  int count = 0;
  registry->rdma_cm_devices_ = rdma_get_devices(&count);
  if (registry->rdma_cm_devices_ == nullptr || count == 0) {
    return ErrnoError(ENODEV, "no RDMA device (rdma_get_devices found none)");
  }
  if (cache_enabled) {
    absl::StatusOr<std::unique_ptr<UserfaultWatcher>> watcher =
        UserfaultWatcher::Create();
    if (watcher.ok()) {
      registry->watcher_ = *std::move(watcher);
    } else {
      DEMI_LOG(kWarning,
               "memory-region cache off, registering application memory per "
               "push: ",
               watcher.status().message());
    }
  }
  for (int i = 0; i < count; ++i) {
    ibv_context* context = registry->rdma_cm_devices_[i];
    DEMI_ASSIGN_OR_RETURN(ProtectionDomain pd,
                          ProtectionDomain::Create(context));
    Device device{context, std::move(pd), nullptr, nullptr, nullptr};
    device.cache_registrar = std::make_unique<VerbsRegistrar>(
        device.pd.get(), IBV_ACCESS_LOCAL_WRITE,
        VerbsRegistrar::ReadOnlyFallback::kYes);
    DEMI_ASSIGN_OR_RETURN(
        device.large_pool,
        LargeBufferPool::Create(device.cache_registrar.get(), large_options));
    DEMI_ASSIGN_OR_RETURN(
        device.cache,
        RegionCache::Create(device.cache_registrar.get(),
                            registry->watcher_.get(), cache_options));
    registry->devices_.push_back(std::move(device));
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
  watcher_.reset();
  if (rdma_cm_devices_ != nullptr) rdma_free_devices(rdma_cm_devices_);
}

ibv_pd* DeviceRegistry::PdFor(const ibv_context* context) const {
  for (const Device& device : devices_) {
    if (device.context == context) return device.pd.get();
  }
  return nullptr;
}

std::vector<DeviceRegistry::DeviceHandles> DeviceRegistry::devices() const {
  std::vector<DeviceHandles> out;
  out.reserve(devices_.size());
  for (const Device& device : devices_) {
    out.push_back({device.context, device.pd.get()});
  }
  return out;
}

RegionCache* DeviceRegistry::CacheFor(const ibv_pd* pd) const {
  for (const Device& device : devices_) {
    if (device.pd.get() == pd) return device.cache.get();
  }
  return nullptr;
}

LargeBufferPool* DeviceRegistry::LargePoolFor(const ibv_pd* pd) const {
  for (const Device& device : devices_) {
    if (device.pd.get() == pd) return device.large_pool.get();
  }
  return nullptr;
}

RegionCacheStats DeviceRegistry::CacheStats() const {
  RegionCacheStats sum;
  sum.caching = watcher_ != nullptr;
  for (const Device& device : devices_) {
    RegionCacheStats stats = device.cache->Stats();
    sum.hits += stats.hits;
    sum.misses += stats.misses;
    sum.evictions += stats.evictions;
    sum.invalidations += stats.invalidations;
    sum.uncached += stats.uncached;
    sum.pinned_bytes += stats.pinned_bytes;
    sum.regions += stats.regions;
  }
  return sum;
}

}  // namespace demi::rdma
