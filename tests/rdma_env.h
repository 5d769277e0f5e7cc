// Where the RDMA integration tests find their device.
//
// DEMI_RDMA_ADDR is the IPv4 address of the RDMA-capable interface, by
// default 10.77.0.1 (the Soft-RoCE guest's: tools/softroce/run and
// tools/rdma_test run the tests there), and DEMI_RDMA_DEVICE the device
// expected behind it (any when unset). On a host with its own RDMA device
// set them by hand. A test without a usable address fails saying so: it is
// never silently skipped.

#ifndef DEMI_TESTS_RDMA_ENV_H_
#define DEMI_TESTS_RDMA_ENV_H_

#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace demi::testing {

inline constexpr char kDefaultRdmaTestAddress[] = "10.77.0.1";

// DEMI_RDMA_ADDR (else the default, if an interface here has it) with `port`
// (host order), or an error saying how to run the tests or set it.
absl::StatusOr<sockaddr_in> RdmaTestAddress(uint16_t port = 0);

// The test address with a port no other socket of this process has taken
// (demi has no getsockname, so tests pick ports): ports from a range of 100
// per process id, then on; safe from any thread. A test failure if there is
// no test address.
sockaddr_in NextTestAddress();

// DEMI_RDMA_DEVICE, or "" if unset (then any device is accepted).
std::string RdmaTestDevice();

}  // namespace demi::testing

#endif  // DEMI_TESTS_RDMA_ENV_H_
