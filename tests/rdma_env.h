// Where the RDMA integration tests find their device.
//
// The Soft-RoCE runner (tools/softroce/run) exports DEMI_RDMA_ADDR, the IPv4
// address of the RDMA-capable interface, and DEMI_RDMA_DEVICE, the device
// expected behind it. On a host with its own RDMA device set them by hand.
// A test without them fails: it is never silently skipped.

#ifndef DEMI_TESTS_RDMA_ENV_H_
#define DEMI_TESTS_RDMA_ENV_H_

#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace demi::testing {

// DEMI_RDMA_ADDR with `port` (host order), or an error saying how to set it.
absl::StatusOr<sockaddr_in> RdmaTestAddress(uint16_t port = 0);

// DEMI_RDMA_DEVICE, or "" if unset (then any device is accepted).
std::string RdmaTestDevice();

}  // namespace demi::testing

#endif  // DEMI_TESTS_RDMA_ENV_H_
