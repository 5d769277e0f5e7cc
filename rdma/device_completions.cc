#include "rdma/device_completions.h"

#include <utility>

#include "common/status_macros.h"

namespace demi::rdma {

absl::StatusOr<std::unique_ptr<DeviceCompletions>> DeviceCompletions::Create(
    const DeviceRegistry& devices, const CompletionGroupOptions& options) {
  std::unique_ptr<DeviceCompletions> completions(new DeviceCompletions());
  for (const DeviceRegistry::DeviceHandles& device : devices.devices()) {
    DEMI_ASSIGN_OR_RETURN(CompletionChannel channel,
                          CompletionChannel::Create(device.context));
    CompletionGroupOptions on_channel = options;
    on_channel.channel = channel.get();
    DEMI_ASSIGN_OR_RETURN(std::unique_ptr<CompletionGroup> group,
                          CompletionGroup::Create(device.context, on_channel));
    completions->groups_.push_back(
        Entry{device.pd, std::move(channel), std::move(group)});
  }
  return completions;
}

}  // namespace demi::rdma
