#include "rdma/device_completions.h"

#include <utility>

#include "common/status_macros.h"

namespace demi::rdma {

absl::StatusOr<std::unique_ptr<DeviceCompletions>> DeviceCompletions::Create(
    const DeviceRegistry& devices, const CompletionGroupOptions& options) {
  std::unique_ptr<DeviceCompletions> completions(new DeviceCompletions());
  for (const DeviceRegistry::DeviceHandles& device : devices.devices()) {
    DEMI_ASSIGN_OR_RETURN(std::unique_ptr<CompletionGroup> group,
                          CompletionGroup::Create(device.context, options));
    completions->groups_.push_back({device.pd, std::move(group)});
  }
  return completions;
}

}  // namespace demi::rdma
