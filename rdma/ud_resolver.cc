#include "rdma/ud_resolver.h"

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/status_macros.h"

namespace demi::rdma {
namespace {

// The errno a datagram socket reports for a failed resolution event.
int ErrnoForResolution(rdma_cm_event_type type, int status) {
  switch (type) {
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
      if (status == -ETIMEDOUT) return ETIMEDOUT;
      return status < 0 && status != -ENODEV ? -status : EHOSTUNREACH;
    case RDMA_CM_EVENT_UNREACHABLE:
      // A negative errno (-ETIMEDOUT: no answer), or the peer's SIDR reply
      // status (> 0: nobody listens there, or it refused).
      if (status == -ETIMEDOUT) return ETIMEDOUT;
      return status > 0 ? ECONNREFUSED : EHOSTUNREACH;
    case RDMA_CM_EVENT_REJECTED:
      return ECONNREFUSED;
    default:
      return ErrnoForCmEvent(type, status);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<UdResolver>> UdResolver::Start(
    EventChannel& channel, const sockaddr_in& local,
    const sockaddr_in& destination, ibv_pd* pd, absl::Duration timeout) {
  DEMI_ASSIGN_OR_RETURN(CmId id, CmId::Create(channel, RDMA_PS_UDP));
  // Bound to the local address first, so that the route (and the source GID
  // of the address handle) is that of the sending socket's device.
  sockaddr_in source = local;
  source.sin_port = 0;
  DEMI_RETURN_IF_ERROR(id.Bind(source));
  DEMI_RETURN_IF_ERROR(id.ResolveAddress(destination, timeout));
  return std::unique_ptr<UdResolver>(
      new UdResolver(std::move(id), pd, timeout));
}

absl::StatusOr<std::optional<UdPeer>> UdResolver::OnEvent(CmEvent event) {
  const rdma_cm_event_type type = event.type();
  const int status = event.status();
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
      if (id_.verbs() != pd_->context) {
        return ErrnoError(ENETUNREACH,
                          "the destination is reached through another device");
      }
      DEMI_RETURN_IF_ERROR(id_.ResolveRoute(timeout_));
      return std::nullopt;
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      rdma_conn_param param{};
      DEMI_RETURN_IF_ERROR(id_.Connect(param));
      return std::nullopt;
    }
    case RDMA_CM_EVENT_ESTABLISHED: {
      rdma_ud_param ud = event.datagram();
      { CmEvent acknowledged = std::move(event); }
      DEMI_ASSIGN_OR_RETURN(AddressHandle ah,
                            AddressHandle::Create(pd_, ud.ah_attr));
      return UdPeer{std::move(ah), ud.qp_num, ud.qkey};
    }
    default:
      return ErrnoError(
          ErrnoForResolution(type, status),
          absl::StrCat("resolving a datagram peer: ", rdma_event_str(type),
                       " (status ", status, ")"));
  }
}

}  // namespace demi::rdma
