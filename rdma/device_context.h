// DeviceContext: an open RDMA device (ibv_context).
//
// Connections made with rdma_cm get their device context from rdma_cm, which
// owns it; DeviceContext is for code that opens a device by name (tools,
// tests, device queries). Move-only; closing is logged if it fails.

#ifndef DEMI_RDMA_DEVICE_CONTEXT_H_
#define DEMI_RDMA_DEVICE_CONTEXT_H_

#include <infiniband/verbs.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct DeviceContextTraits {
  using Type = ibv_context;
  static constexpr char kRelease[] = "ibv_close_device";
  static int Release(ibv_context* context) { return ibv_close_device(context); }
};

class DeviceContext {
 public:
  // Names of the RDMA devices present (e.g. "rxe0"); empty if none.
  static absl::StatusOr<std::vector<std::string>> ListDevices();

  // Opens the device called `name`, or the first device if `name` is empty.
  // NotFound (ENODEV) if there is no such device.
  static absl::StatusOr<DeviceContext> Open(absl::string_view name);

  ibv_context* get() const { return context_.get(); }

  // The device's limits (max_sge, max_qp_wr, ...).
  absl::StatusOr<ibv_device_attr> QueryDevice() const;

  // The state and limits of `port` (1-based).
  absl::StatusOr<ibv_port_attr> QueryPort(uint8_t port) const;

 private:
  explicit DeviceContext(ibv_context* context) : context_(context) {}

  Owned<DeviceContextTraits> context_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_DEVICE_CONTEXT_H_
