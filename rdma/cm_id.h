// CmId: owns an rdma_cm identifier, rdma_cm's analogue of a socket.
//
// The asynchronous steps (address and route resolution, connect, accept)
// report their outcome as events on the id's EventChannel; the methods here
// only start them. rdma_cm opens the device itself, so verbs() is the device
// context to allocate the connection's protection domain and queues on; it is
// null until the id is bound to a device (after bind or address resolution).
// Lifetime: the EventChannel must outlive the id; the id's queue pair (see
// QueuePair) must be destroyed before it; destroying an id blocks until its
// events are acknowledged. Move-only; one thread at a time.

#ifndef DEMI_RDMA_CM_ID_H_
#define DEMI_RDMA_CM_ID_H_

#include <netinet/in.h>
#include <rdma/rdma_cma.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rdma/cm_event_channel.h"
#include "rdma/owned.h"

namespace demi::rdma {

struct CmIdTraits {
  using Type = rdma_cm_id;
  static constexpr char kRelease[] = "rdma_destroy_id";
  static int Release(rdma_cm_id* id) { return rdma_destroy_id(id); }
};

class CmId {
 public:
  // A new id reporting to `channel`, in `port_space` (RDMA_PS_TCP for
  // reliable connections, RDMA_PS_UDP for datagrams). `context` is stored in
  // the id for the owner's use.
  static absl::StatusOr<CmId> Create(EventChannel& channel,
                                     rdma_port_space port_space,
                                     void* context = nullptr);

  // Takes ownership of an id rdma_cm created (a CONNECT_REQUEST's new id).
  static CmId Adopt(rdma_cm_id* id) { return CmId(id); }

  // Refuses a CONNECT_REQUEST nobody will accept: acknowledges the event,
  // then rejects and destroys its new id (in that order: destroying an id
  // waits until its events are acknowledged). Failures are ignored: the
  // peer sees a reject or a timeout either way.
  static void RejectRequest(CmEvent request);

  rdma_cm_id* get() const { return id_.get(); }
  ibv_context* verbs() const { return id_->verbs; }
  ibv_qp* qp() const { return id_->qp; }

  absl::Status Bind(const sockaddr_in& address);
  absl::Status Listen(int backlog);
  // Starts address resolution; ADDR_RESOLVED (or ADDR_ERROR) follows.
  absl::Status ResolveAddress(const sockaddr_in& destination,
                              absl::Duration timeout);
  // Starts route resolution; ROUTE_RESOLVED (or ROUTE_ERROR) follows.
  absl::Status ResolveRoute(absl::Duration timeout);
  // Starts connecting; ESTABLISHED, REJECTED or UNREACHABLE follows.
  absl::Status Connect(const rdma_conn_param& param);
  // Accepts a connection request on this (new) id; ESTABLISHED follows.
  absl::Status Accept(const rdma_conn_param& param);
  absl::Status Reject(const void* private_data, uint8_t length);
  // Starts a graceful disconnect; DISCONNECTED follows on both sides.
  absl::Status Disconnect();
  // The queue pair's local ACK timeout: a packet not acknowledged within
  // 4.096 us * 2^exponent is sent again (retry_count times, then the queue
  // pair fails with IBV_WC_RETRY_EXC_ERR). Must be called before Connect
  // or Accept (rdma_cm applies it as it moves the queue pair to RTS).
  // `exponent` in [1, 31]; EINVAL otherwise.
  absl::Status SetAckTimeout(uint8_t exponent);

  sockaddr_in LocalAddress() const;
  sockaddr_in PeerAddress() const;

 private:
  explicit CmId(rdma_cm_id* id) : id_(id) {}

  Owned<CmIdTraits> id_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_CM_ID_H_
