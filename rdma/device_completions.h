// DeviceCompletions: one CompletionGroup per RDMA device, for one poller.
//
// Connections on a device share a group's few completion queues, so a poll
// costs the same however many connections are idle (completion_group.h).
// Whoever polls on its own (a libOS worker: one thread at a time drives its
// connections) owns one DeviceCompletions, so two such pollers never touch
// the same queue and need no lock in common.
//
// Errors: Create fails as CompletionGroup::Create does.
// Thread-safety: none; the owner serializes every call (as for the groups).
// Lifetime: outlives every connection attached to its groups; the devices'
// contexts outlive it.

#ifndef DEMI_RDMA_DEVICE_COMPLETIONS_H_
#define DEMI_RDMA_DEVICE_COMPLETIONS_H_

#include <infiniband/verbs.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "rdma/completion_group.h"
#include "rdma/device_registry.h"

namespace demi::rdma {

class DeviceCompletions {
 public:
  // A group on every device of `devices`.
  static absl::StatusOr<std::unique_ptr<DeviceCompletions>> Create(
      const DeviceRegistry& devices,
      const CompletionGroupOptions& options = {});
  DeviceCompletions(const DeviceCompletions&) = delete;
  DeviceCompletions& operator=(const DeviceCompletions&) = delete;

  // The group of the device of `pd`, or null for an unknown PD.
  CompletionGroup* For(const ibv_pd* pd) const {
    for (const Entry& entry : groups_) {
      if (entry.pd == pd) return entry.group.get();
    }
    return nullptr;
  }
  // Polls every group (delivering to the connections; see
  // CompletionGroup::Poll). Returns the completions delivered.
  int Poll() {
    int delivered = 0;
    for (Entry& entry : groups_) delivered += entry.group->Poll();
    return delivered;
  }

 private:
  struct Entry {
    const ibv_pd* pd;
    std::unique_ptr<CompletionGroup> group;
  };
  DeviceCompletions() = default;

  std::vector<Entry> groups_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_DEVICE_COMPLETIONS_H_
