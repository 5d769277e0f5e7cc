// RendezvousSender: the sending side of rendezvous on one connection. It
// keeps the transfers announced to the peer (or about to be) until the
// peer's done message, and the memory each exposes to the peer's RDMA READs.
//
// A transfer is started for a message's segments (Start): each segment gets a
// registration of exactly its bytes, and nothing else of that memory is
// opened to the peer (its other registrations, a pool chunk or a cached
// region, grant no remote access). With windows (a device that binds type-2
// windows), the registration allows only binding, and a window bound over it
// on the connection's queue pair is what the peer's key opens: remote read,
// from that queue pair alone. Without, the registration itself allows remote
// read and its key is announced.
//
// The connection posts; this class builds nothing on its own:
//   index = Start(segments, cookie)       // registered; EAGAIN when full
//   PrepareBind(index, i, wr) for each i   // with windows, before announcing
//   MarkBound(index)                       // once the binds are posted
//   Announce(index, segments, &header)     // the id and keys to send
//   cookie = Finish(done.transfer_id)      // the peer read it: report cookie
// Abandon(index) ends a transfer the peer never heard of (its post failed);
// EndAll ends every one (the connection failed). Ending a transfer takes
// the peer's access away: the window first, then the registration.
//
// Transfer ids on the wire: slot index | nonce << 16 (transfer_nonces.h). A
// done is taken only for an announced transfer with its current nonce, so a
// stale or forged one names no transfer (the caller fails the connection).
//
// Thread-safety: none (the connection's caller serializes). Lifetime: the
// protection domain given to Configure outlives the sender, or the sender
// ends its transfers first (destroying it does).

#ifndef DEMI_RDMA_RENDEZVOUS_SENDER_H_
#define DEMI_RDMA_RENDEZVOUS_SENDER_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "rdma/memory_region.h"
#include "rdma/memory_window.h"
#include "rdma/segment.h"
#include "rdma/transfer_nonces.h"
#include "rdma/wire.h"

namespace demi::rdma {

class RendezvousSender {
 public:
  // Registers [address, address + length) with `access` in the connection's
  // protection domain (the connection's, which may retry after relieving
  // pinning).
  using Registrar =
      std::function<absl::StatusOr<MemoryRegion>(void*, size_t, int)>;

  // At most `capacity` transfers at once (the connection's send queue
  // depth; at most 65536, the ids' low 16 bits).
  explicit RendezvousSender(uint32_t capacity) : transfers_(capacity) {}
  RendezvousSender(const RendezvousSender&) = delete;
  RendezvousSender& operator=(const RendezvousSender&) = delete;

  // Before the first Start: where to allocate windows, whether to use them
  // (MemoryWindow::Supported), and how to register.
  void Configure(ibv_pd* pd, bool windows, Registrar registrar) {
    pd_ = pd;
    windows_ = windows;
    registrar_ = std::move(registrar);
  }

  // Keys are windows bound on the queue pair (see above).
  bool windows() const { return windows_; }
  // Transfers started and not ended.
  uint32_t in_use() const { return in_use_; }
  bool full() const { return in_use_ == transfers_.size(); }

  // Starts a transfer of `segments` whose `cookie` Finish returns: registers
  // each segment (with windows, also allocates its window). Returns its
  // index. EAGAIN if full; a registration's error (nothing is left of the
  // transfer then).
  absl::StatusOr<uint32_t> Start(absl::Span<const Segment> segments,
                                 uint64_t cookie);

  // Whether the windows of transfer `index` are bound, or it needs none.
  bool bound(uint32_t index) const { return transfers_[index].bound; }
  // Its segments: with windows, the binds it needs.
  uint32_t num_segments(uint32_t index) const {
    return transfers_[index].num_segments;
  }
  // Fills `wr`, started by the caller as an IBV_WR_BIND_MW request, to bind
  // the window of segment `segment` of transfer `index` over its
  // registration for remote read; the key announced becomes the new one.
  void PrepareBind(uint32_t index, uint32_t segment, ibv_send_wr* wr);
  // The binds of transfer `index` are posted.
  void MarkBound(uint32_t index) { transfers_[index].bound = true; }

  // Fills the announcement of transfer `index` for `segments` (those given
  // to Start): its id, and each segment's address and key. From now on a
  // done for it is taken.
  void Announce(uint32_t index, absl::Span<const Segment> segments,
                wire::MessageHeader* header);

  // Ends transfer `index`, which the peer never heard of (its post failed).
  void Abandon(uint32_t index) { End(index); }

  // A done message for `transfer_id` arrived: ends that transfer and returns
  // its cookie; nullopt if the id names no announced transfer.
  std::optional<uint64_t> Finish(uint32_t transfer_id);

  // Ends every transfer, calling `report(cookie)` for each.
  template <typename Fn>
  void EndAll(Fn report) {
    for (uint32_t i = 0; i < transfers_.size(); ++i) {
      if (!transfers_[i].in_use) continue;
      End(i);
      report(transfers_[i].cookie);
    }
  }

 private:
  // What the peer may read of one segment, while the transfer lasts; the
  // window goes first (declared last).
  struct Exposure {
    std::optional<MemoryRegion> region;
    std::optional<MemoryWindow> window;
    uint32_t rkey = 0;  // the key announced
  };
  struct Transfer {
    bool in_use = false;
    bool announced = false;  // a done for it is taken
    bool bound = false;      // its windows' binds are posted (or none needed)
    uint8_t num_segments = 0;
    uint16_t nonce = 0;
    uint64_t cookie = 0;
    Exposure exposed[wire::kMaxSegments];
  };

  // Takes the peer's access to transfer `index` away and frees its slot.
  void End(uint32_t index);

  std::vector<Transfer> transfers_;
  uint32_t in_use_ = 0;
  TransferNonces nonces_;
  ibv_pd* pd_ = nullptr;
  bool windows_ = false;
  Registrar registrar_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_RENDEZVOUS_SENDER_H_
