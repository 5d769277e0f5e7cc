#include "rdma/rendezvous_sender.h"

#include <cerrno>

#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<uint32_t> RendezvousSender::Start(
    absl::Span<const Segment> segments, uint64_t cookie) {
  if (full()) return ErrnoError(EAGAIN, "too many rendezvous sends in flight");
  uint32_t index = 0;
  while (transfers_[index].in_use) ++index;
  Transfer& transfer = transfers_[index];
  transfer.num_segments = static_cast<uint8_t>(segments.size());
  transfer.bound = !windows_;
  transfer.announced = false;
  const int access = windows_ ? IBV_ACCESS_MW_BIND : IBV_ACCESS_REMOTE_READ;
  for (size_t i = 0; i < segments.size(); ++i) {
    Exposure& exposure = transfer.exposed[i];
    absl::StatusOr<MemoryRegion> region = registrar_(
        const_cast<void*>(segments[i].data), segments[i].length, access);
    if (!region.ok()) {
      End(index);
      return region.status();
    }
    exposure.rkey = region->rkey();
    exposure.region.emplace(*std::move(region));
    if (!windows_) continue;
    absl::StatusOr<MemoryWindow> window = MemoryWindow::Allocate(pd_);
    if (!window.ok()) {
      End(index);
      return window.status();
    }
    exposure.window.emplace(*std::move(window));
  }
  transfer.in_use = true;
  transfer.nonce = nonces_.Next();
  transfer.cookie = cookie;
  ++in_use_;
  return index;
}

void RendezvousSender::PrepareBind(uint32_t index, uint32_t segment,
                                   ibv_send_wr* wr) {
  Exposure& exposure = transfers_[index].exposed[segment];
  exposure.rkey = exposure.window->PrepareBind(
      *exposure.region, exposure.region->address(), exposure.region->length(),
      IBV_ACCESS_REMOTE_READ, wr);
}

void RendezvousSender::Announce(uint32_t index,
                                absl::Span<const Segment> segments,
                                wire::MessageHeader* header) {
  Transfer& transfer = transfers_[index];
  header->transfer_id = index | (uint32_t{transfer.nonce} << 16);
  for (size_t i = 0; i < segments.size(); ++i) {
    header->remote[i] = {reinterpret_cast<uintptr_t>(segments[i].data),
                         transfer.exposed[i].rkey};
  }
  transfer.announced = true;
}

std::optional<uint64_t> RendezvousSender::Finish(uint32_t transfer_id) {
  const uint32_t index = transfer_id & 0xffff;
  if (index >= transfers_.size()) return std::nullopt;
  const Transfer& transfer = transfers_[index];
  if (!transfer.in_use || !transfer.announced ||
      transfer.nonce != transfer_id >> 16) {
    return std::nullopt;
  }
  End(index);
  return transfer.cookie;
}

void RendezvousSender::End(uint32_t index) {
  Transfer& transfer = transfers_[index];
  if (transfer.in_use) {
    transfer.in_use = false;
    --in_use_;
  }
  // The window before the region it is bound to (a region with windows
  // bound may not be deregistered).
  for (Exposure& exposure : transfer.exposed) {
    exposure.window.reset();
    exposure.region.reset();
    exposure.rkey = 0;
  }
  transfer.announced = false;
  transfer.bound = false;
}

}  // namespace demi::rdma
