#include "rdma/device_context.h"

#include <cerrno>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<std::vector<std::string>> DeviceContext::ListDevices() {
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr) {
    // rdma-core reports "no devices" as ENOSYS when the kernel lacks verbs.
    if (errno == ENOSYS) return std::vector<std::string>();
    return ErrnoStatus(errno, "ibv_get_device_list");
  }
  absl::Cleanup free_list = [devices] { ibv_free_device_list(devices); };
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) {
    names.emplace_back(ibv_get_device_name(devices[i]));
  }
  return names;
}

absl::StatusOr<DeviceContext> DeviceContext::Open(absl::string_view name) {
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr && errno != ENOSYS) {
    return ErrnoStatus(errno, "ibv_get_device_list");
  }
  absl::Cleanup free_list = [devices] {
    if (devices != nullptr) ibv_free_device_list(devices);
  };
  for (int i = 0; i < count; ++i) {
    if (!name.empty() && name != ibv_get_device_name(devices[i])) continue;
    ibv_context* context = ibv_open_device(devices[i]);
    if (context == nullptr) {
      return ErrnoStatus(errno,
                         absl::StrCat("ibv_open_device(",
                                      ibv_get_device_name(devices[i]), ")"));
    }
    return DeviceContext(context);
  }
  return ErrnoError(ENODEV, name.empty()
                                ? std::string("no RDMA device found")
                                : absl::StrCat("no RDMA device named ", name));
}

absl::StatusOr<ibv_device_attr> DeviceContext::QueryDevice() const {
  ibv_device_attr attr{};
  int rc = ibv_query_device(context_.get(), &attr);
  if (rc != 0) return ErrnoStatus(rc, "ibv_query_device");
  return attr;
}

absl::StatusOr<ibv_port_attr> DeviceContext::QueryPort(uint8_t port) const {
  ibv_port_attr attr{};
  int rc = ibv_query_port(context_.get(), port, &attr);
  if (rc != 0) return ErrnoStatus(rc, "ibv_query_port");
  return attr;
}

}  // namespace demi::rdma
