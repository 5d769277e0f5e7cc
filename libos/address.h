// Addresses at the API (sockaddr) and queue descriptors in rdma_cm ids: the
// small conversions every socket kind makes.

#ifndef DEMI_LIBOS_ADDRESS_H_
#define DEMI_LIBOS_ADDRESS_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace demi::libos {

// An IPv4 address given to the API: EINVAL if null, too short or not
// AF_INET.
inline absl::StatusOr<sockaddr_in> ParseIpv4(const sockaddr* address,
                                             socklen_t size) {
  if (address == nullptr) return ErrnoError(EINVAL, "null address");
  if (size < static_cast<socklen_t>(sizeof(sockaddr_in))) {
    return ErrnoError(EINVAL, absl::StrCat("address size ", size));
  }
  if (address->sa_family != AF_INET) {
    return ErrnoError(EINVAL, "only AF_INET addresses are supported");
  }
  sockaddr_in ipv4;
  std::memcpy(&ipv4, address, sizeof(ipv4));
  return ipv4;
}

// A socket's qd as an rdma_cm id's context (rdma::CmId::Create,
// rdma::CmEvent::context), and back (0 for no context).
inline void* QdContext(int qd) {
  return reinterpret_cast<void*>(static_cast<intptr_t>(qd));
}
inline int QdOf(const void* context) {
  return static_cast<int>(reinterpret_cast<intptr_t>(context));
}

}  // namespace demi::libos

#endif  // DEMI_LIBOS_ADDRESS_H_
