// EventChannel and CmEvent: rdma_cm's connection-management events.
//
// An EventChannel owns an rdma_event_channel whose file descriptor is
// non-blocking, so waiting honours a timeout (poll(2)) and can be multiplexed
// with other descriptors. A CmEvent owns one received event and acknowledges
// it when destroyed; an rdma_cm id cannot be destroyed while an event of its
// is unacknowledged, so keep events short-lived.
// Thread-safety: one thread at a time per channel. Move-only.

#ifndef DEMI_RDMA_CM_EVENT_CHANNEL_H_
#define DEMI_RDMA_CM_EVENT_CHANNEL_H_

#include <rdma/rdma_cma.h>

#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct EventChannelTraits {
  using Type = rdma_event_channel;
  static constexpr char kRelease[] = "rdma_destroy_event_channel";
  static int Release(rdma_event_channel* channel) {
    rdma_destroy_event_channel(channel);
    return 0;
  }
};

struct CmEventTraits {
  using Type = rdma_cm_event;
  static constexpr char kRelease[] = "rdma_ack_cm_event";
  static int Release(rdma_cm_event* event) { return rdma_ack_cm_event(event); }
};

class CmEvent {
 public:
  explicit CmEvent(rdma_cm_event* event) : event_(event) {}

  rdma_cm_event_type type() const { return event_->event; }
  // The id the event is about; for CONNECT_REQUEST, the new connection's id
  // (owned by nobody until the caller adopts it, see CmId::Adopt).
  rdma_cm_id* id() const { return event_->id; }
  rdma_cm_id* listen_id() const { return event_->listen_id; }
  // The context given to the event's id (CmId::Create), and to the listener's
  // for CONNECT_REQUEST; null when the id or listener is.
  void* context() const {
    return event_->id == nullptr ? nullptr : event_->id->context;
  }
  void* listen_context() const {
    return event_->listen_id == nullptr ? nullptr : event_->listen_id->context;
  }
  // For CONNECT_REQUEST: gives the new connection's id its context before it
  // is adopted, so its later events carry it.
  void set_context(void* context) { event_->id->context = context; }
  // The device the event's id is bound to (null before address resolution).
  ibv_context* device() const {
    return event_->id == nullptr ? nullptr : event_->id->verbs;
  }
  int status() const { return event_->status; }
  const rdma_conn_param& connection() const { return event_->param.conn; }
  // For ESTABLISHED on an RDMA_PS_UDP id: the peer's address handle
  // attributes, queue pair number and Q_Key.
  const rdma_ud_param& datagram() const { return event_->param.ud; }

 private:
  Owned<CmEventTraits> event_;
};

class EventChannel {
 public:
  static absl::StatusOr<EventChannel> Create();

  rdma_event_channel* get() const { return channel_.get(); }
  int fd() const { return channel_->fd; }

  // Returns the next event, waiting at most `timeout` (ETIMEDOUT after it;
  // absl::InfiniteDuration() waits forever, zero polls once).
  absl::StatusOr<CmEvent> Next(absl::Duration timeout);

  // The next event if one is waiting, else nothing: one non-blocking read
  // of the channel, no clock read and no status built (for progress loops).
  // A failed read (never seen: the channel is the library's own) is logged
  // and reads as no event.
  std::optional<CmEvent> TryNext();

  // Returns the next event if it is `expected` with status 0. Any other event
  // is an error naming it, with the errno a socket would give: ECONNREFUSED
  // for a rejection, ETIMEDOUT for an unreachable peer, ECONNRESET for a
  // disconnect, and so on.
  absl::StatusOr<CmEvent> Expect(rdma_cm_event_type expected,
                                 absl::Duration timeout);

 private:
  explicit EventChannel(rdma_event_channel* channel) : channel_(channel) {}

  Owned<EventChannelTraits> channel_;
};

// The errno that best describes an unexpected event of `type` with `status`.
int ErrnoForCmEvent(rdma_cm_event_type type, int status);

}  // namespace demi::rdma

#endif  // DEMI_RDMA_CM_EVENT_CHANNEL_H_
