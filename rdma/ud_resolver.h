// UdResolver: learns how to reach one datagram peer, through rdma_cm.
//
// For a UD queue pair a peer is an address handle, a queue pair number and a
// Q_Key. rdma_cm finds them in four steps, each reported as an event on the
// resolver's id: address resolution (ADDR_RESOLVED), route resolution
// (ROUTE_RESOLVED), then rdma_connect on the RDMA_PS_UDP id, which asks the
// peer's listening id (a SIDR request; the peer answers with
// UdEndpoint::AcceptResolution) and yields ESTABLISHED carrying the peer's
// ah_attr, qp_num and qkey. The resolver then creates the address handle.
//
//   auto resolver = UdResolver::Start(channel, local, destination, pd, 2s);
//   ... for each event whose id() is resolver->id():
//   absl::StatusOr<std::optional<UdPeer>> peer =
//       resolver->OnEvent(std::move(event));
//   // error: failed; nullopt: wait for the next event; a UdPeer: done.
//
// Errors (as a socket would report them): EHOSTUNREACH or ENETUNREACH when
// no address or route is found, ETIMEDOUT when the peer does not answer,
// ECONNREFUSED when nobody listens on the destination port.
//
// Thread-safety: none. Lifetime: the EventChannel and the protection domain
// outlive the resolver; destroying it destroys its id (acknowledge its
// events first: OnEvent does).

#ifndef DEMI_RDMA_UD_RESOLVER_H_
#define DEMI_RDMA_UD_RESOLVER_H_

#include <infiniband/verbs.h>
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rdma/address_handle.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"

namespace demi::rdma {

// A resolved peer. The address handle must outlive every send posted with it.
struct UdPeer {
  AddressHandle ah;
  uint32_t qp_num = 0;
  uint32_t qkey = 0;
};

class UdResolver {
 public:
  // Starts resolving `destination` from `local` (an address of the device of
  // `pd`, whose port the resolver does not take: it binds port 0), each step
  // bounded by `timeout`. Errors of the first step are returned here.
  static absl::StatusOr<std::unique_ptr<UdResolver>> Start(
      EventChannel& channel, const sockaddr_in& local,
      const sockaddr_in& destination, ibv_pd* pd, absl::Duration timeout);

  rdma_cm_id* id() const { return id_.get(); }

  // Handles an event of id(); see the file comment for what it returns.
  absl::StatusOr<std::optional<UdPeer>> OnEvent(CmEvent event);

 private:
  UdResolver(CmId id, ibv_pd* pd, absl::Duration timeout)
      : id_(std::move(id)), pd_(pd), timeout_(timeout) {}

  CmId id_;
  ibv_pd* const pd_;
  const absl::Duration timeout_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_UD_RESOLVER_H_
