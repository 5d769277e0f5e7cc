#include "rdma/cm_id.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace demi::rdma {
namespace {

// rdma_cm calls return 0, or -1 with errno set.
absl::Status CheckCm(int rc, const char* what) {
  if (rc == 0) return absl::OkStatus();
  return ErrnoStatus(errno, what);
}

int TimeoutMs(absl::Duration timeout) {
  return static_cast<int>(absl::ToInt64Milliseconds(timeout));
}

sockaddr_in ToIpv4(const sockaddr* address) {
  sockaddr_in out{};
  if (address != nullptr && address->sa_family == AF_INET) {
    std::memcpy(&out, address, sizeof(out));
  }
  return out;
}

}  // namespace

absl::StatusOr<CmId> CmId::Create(EventChannel& channel,
                                  rdma_port_space port_space, void* context) {
  rdma_cm_id* id = nullptr;
  if (rdma_create_id(channel.get(), &id, context, port_space) != 0) {
    return ErrnoStatus(errno, "rdma_create_id");
  }
  return CmId(id);
}

absl::Status CmId::Bind(const sockaddr_in& address) {
  sockaddr_in copy = address;
  return CheckCm(rdma_bind_addr(id_.get(), reinterpret_cast<sockaddr*>(&copy)),
                 "rdma_bind_addr");
}

absl::Status CmId::Listen(int backlog) {
  return CheckCm(rdma_listen(id_.get(), backlog), "rdma_listen");
}

absl::Status CmId::ResolveAddress(const sockaddr_in& destination,
                                  absl::Duration timeout) {
  sockaddr_in copy = destination;
  return CheckCm(
      rdma_resolve_addr(id_.get(), /*src_addr=*/nullptr,
                        reinterpret_cast<sockaddr*>(&copy), TimeoutMs(timeout)),
      "rdma_resolve_addr");
}

absl::Status CmId::ResolveRoute(absl::Duration timeout) {
  return CheckCm(rdma_resolve_route(id_.get(), TimeoutMs(timeout)),
                 "rdma_resolve_route");
}

absl::Status CmId::Connect(const rdma_conn_param& param) {
  rdma_conn_param copy = param;
  return CheckCm(rdma_connect(id_.get(), &copy), "rdma_connect");
}

absl::Status CmId::Accept(const rdma_conn_param& param) {
  rdma_conn_param copy = param;
  return CheckCm(rdma_accept(id_.get(), &copy), "rdma_accept");
}

absl::Status CmId::Reject(const void* private_data, uint8_t length) {
  return CheckCm(rdma_reject(id_.get(), private_data, length), "rdma_reject");
}

void CmId::RejectRequest(CmEvent request) {
  rdma_cm_id* id = request.id();
  { CmEvent acknowledged = std::move(request); }
  CmId rejected = Adopt(id);
  (void)rejected.Reject(nullptr, 0);
}

absl::Status CmId::Disconnect() {
  return CheckCm(rdma_disconnect(id_.get()), "rdma_disconnect");
}

absl::Status CmId::SetAckTimeout(uint8_t exponent) {
  if (exponent < 1 || exponent > 31) {
    return ErrnoError(EINVAL, absl::StrCat("ACK timeout exponent ", exponent));
  }
  return CheckCm(
      rdma_set_option(id_.get(), RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT,
                      &exponent, sizeof(exponent)),
      "rdma_set_option(RDMA_OPTION_ID_ACK_TIMEOUT)");
}

sockaddr_in CmId::LocalAddress() const {
  return ToIpv4(rdma_get_local_addr(id_.get()));
}

sockaddr_in CmId::PeerAddress() const {
  return ToIpv4(rdma_get_peer_addr(id_.get()));
}

}  // namespace demi::rdma
