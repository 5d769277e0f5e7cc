// DeviceRegistry: the protection domain and registered buffer pool of every
// RDMA device rdma_cm knows.
//
// rdma_cm opens each device once per process (rdma_get_devices); the contexts
// of connection ids (CmId::verbs()) are those same contexts. The registry
// allocates one protection domain per device, so memory registered once is
// usable on every connection to that device, one BufferPool on the first
// device for memory handed out before any connection exists (demi_sgaalloc),
// and per device a RegionCache for application memory and a LargeBufferPool
// for messages above the eager limit. The completion queues connections
// share are not here: each caller that polls on its own (a libOS worker)
// makes its own DeviceCompletions over these devices. Everything is
// registered for local access only: a peer reads a rendezvous message
// through a registration of exactly its bytes that lasts the transfer (see
// RcConnection), never through these. The caches share one UserfaultWatcher; if
// the kernel or a sandbox refuses userfaultfd, or `cache_enabled` is false,
// they register per push instead (the reason is logged once).
//
// Errors: Create fails with ENODEV when there is no RDMA device.
// Thread-safety: immutable after Create; the pools and caches it hands out
// are internally synchronized, so every member function is safe from any
// thread. Lifetime: outlives every connection created on its PDs.

#ifndef DEMI_RDMA_DEVICE_REGISTRY_H_
#define DEMI_RDMA_DEVICE_REGISTRY_H_

#include <infiniband/verbs.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "rdma/buffer_pool.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/protection_domain.h"
#include "rdma/region_cache.h"
#include "rdma/registrar.h"
#include "rdma/userfault_watcher.h"

namespace demi::rdma {

class DeviceRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceRegistry>> Create(
      const BufferPoolOptions& pool_options,
      const RegionCacheOptions& cache_options, bool cache_enabled,
      const LargeBufferPoolOptions& large_options);

  DeviceRegistry(const DeviceRegistry&) = delete;
  DeviceRegistry& operator=(const DeviceRegistry&) = delete;
  ~DeviceRegistry();

  // The protection domain of `context` (a context rdma_cm handed out), or
  // null if the device appeared after Create.
  ibv_pd* PdFor(const ibv_context* context) const;

  // Registered buffers on the first device, and that device's PD.
  BufferPool& pool() const { return *pool_; }
  ibv_pd* pool_pd() const { return devices_.front().pd.get(); }

  // The application-memory cache of the device of `pd` (one PdFor returned),
  // or null for an unknown PD.
  RegionCache* CacheFor(const ibv_pd* pd) const;
  // The pool for messages above the eager limit on the device of `pd`, or
  // null for an unknown PD; and the first device's (demi_sgaalloc).
  LargeBufferPool* LargePoolFor(const ibv_pd* pd) const;
  LargeBufferPool& large_pool() const { return *devices_.front().large_pool; }
  // Every device's context and protection domain, in rdma_cm's order.
  struct DeviceHandles {
    ibv_context* context;
    ibv_pd* pd;
  };
  std::vector<DeviceHandles> devices() const;

  // The counters of every device's cache, summed.
  RegionCacheStats CacheStats() const;

 private:
  struct Device {
    ibv_context* context;  // owned by rdma_cm
    ProtectionDomain pd;
    // Application memory and large buffers: LOCAL_WRITE only (RDMA READ
    // targets; no remote access).
    std::unique_ptr<VerbsRegistrar> cache_registrar;
    std::unique_ptr<RegionCache> cache;  // destroyed before the registrar
    std::unique_ptr<LargeBufferPool> large_pool;
  };
  DeviceRegistry() = default;

  ibv_context** rdma_cm_devices_ = nullptr;  // rdma_free_devices on destruction
  std::unique_ptr<UserfaultWatcher> watcher_;  // null: no caching
  std::vector<Device> devices_;
  std::unique_ptr<VerbsRegistrar> registrar_;
  std::unique_ptr<BufferPool> pool_;  // destroyed before registrar_ and pds
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_DEVICE_REGISTRY_H_
