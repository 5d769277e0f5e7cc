// DeviceCompletions: one CompletionGroup per RDMA device, for one poller.
//
// Connections on a device share a group's few completion queues, so a poll
// costs the same however many connections are idle (completion_group.h).
// Whoever polls on its own (a libOS worker: one thread at a time drives its
// connections) owns one DeviceCompletions, so two such pollers never touch
// the same queue and need no lock in common.
//
// Sleeping: each device's queues raise their events on one completion
// channel (completion_channel.h), so a waiter arms them all (ArmNotify),
// sleeps on the channels' descriptors (AppendFds) and drains the events it
// woke for (DrainEvents).
//
// Errors: Create fails as CompletionChannel::Create and
// CompletionGroup::Create do.
// Thread-safety: none; the owner serializes every call (as for the groups).
// Lifetime: outlives every connection attached to its groups; the devices'
// contexts outlive it.

#ifndef DEMI_RDMA_DEVICE_COMPLETIONS_H_
#define DEMI_RDMA_DEVICE_COMPLETIONS_H_

#include <infiniband/verbs.h>

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rdma/completion_channel.h"
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
  // The channel the queues of the device of `pd` raise their events on
  // (for other queues of that device: a datagram endpoint's), or null.
  ibv_comp_channel* ChannelFor(const ibv_pd* pd) const {
    for (const Entry& entry : groups_) {
      if (entry.pd == pd) return entry.channel.get();
    }
    return nullptr;
  }
  // Appends the descriptor of every channel (one per device) to `fds`.
  void AppendFds(std::vector<int>* fds) const {
    for (const Entry& entry : groups_) fds->push_back(entry.channel.fd());
  }
  // Arms every group's queues (CompletionGroup::ArmNotify).
  absl::Status ArmNotify() {
    for (Entry& entry : groups_) {
      if (absl::Status s = entry.group->ArmNotify(); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // Whether some group's next Poll() has after-poll steps to run
  // (CompletionGroup::after_poll_due).
  bool AfterPollDue() const {
    for (const Entry& entry : groups_) {
      if (entry.group->after_poll_due()) return true;
    }
    return false;
  }
  // Takes and acknowledges every pending event of every channel.
  void DrainEvents() {
    for (Entry& entry : groups_) entry.channel.Drain();
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
    CompletionChannel channel;  // destroyed after the group's queues
    std::unique_ptr<CompletionGroup> group;
  };
  DeviceCompletions() = default;

  std::vector<Entry> groups_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_DEVICE_COMPLETIONS_H_
