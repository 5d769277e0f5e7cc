// DeviceRegistry: the protection domain and registered buffer pool of every
// RDMA device rdma_cm knows.
//
// rdma_cm opens each device once per process (rdma_get_devices); the contexts
// of connection ids (CmId::verbs()) are those same contexts. The registry
// allocates one protection domain per device, so memory registered once is
// usable on every connection to that device, and one BufferPool on the first
// device for memory handed out before any connection exists (demi_sgaalloc).
//
// Errors: Create fails with ENODEV when there is no RDMA device.
// Thread-safety: immutable after Create except the pool, which is internally
// synchronized. Lifetime: outlives every connection created on its PDs.

#ifndef DEMI_RDMA_DEVICE_REGISTRY_H_
#define DEMI_RDMA_DEVICE_REGISTRY_H_

#include <infiniband/verbs.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "rdma/buffer_pool.h"
#include "rdma/protection_domain.h"
#include "rdma/registrar.h"

namespace demi::rdma {

class DeviceRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceRegistry>> Create(
      const BufferPoolOptions& pool_options);

  DeviceRegistry(const DeviceRegistry&) = delete;
  DeviceRegistry& operator=(const DeviceRegistry&) = delete;
  ~DeviceRegistry();

  // The protection domain of `context` (a context rdma_cm handed out), or
  // null if the device appeared after Create.
  ibv_pd* PdFor(const ibv_context* context) const;

  // Registered buffers on the first device.
  BufferPool& pool() const { return *pool_; }

 private:
  struct Device {
    ibv_context* context;  // owned by rdma_cm
    ProtectionDomain pd;
  };
  DeviceRegistry() = default;

  ibv_context** rdma_cm_devices_ = nullptr;  // rdma_free_devices on destruction
  std::vector<Device> devices_;
  std::unique_ptr<VerbsRegistrar> registrar_;
  std::unique_ptr<BufferPool> pool_;  // destroyed before registrar_ and pds
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_DEVICE_REGISTRY_H_
