// Fuzz target: wire::DecodeConnectionParams on any rdma_cm private data a
// peer could send with its connect request or accept. Checks what the
// decoder promises on the inputs it accepts: usable receive buffers, and
// the same 8 bytes when encoded again (unused flag bits aside).

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/errno_status.h"
#include "rdma/fuzz/fuzz_check.h"
#include "rdma/wire.h"

namespace wire = demi::rdma::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<wire::ConnectionParams> params =
      wire::DecodeConnectionParams(size == 0 ? nullptr : data, size);
  if (!params.ok()) {
    FUZZ_CHECK(demi::ErrnoFromStatus(params.status()) == EPROTO);
    return 0;
  }
  FUZZ_CHECK(size >= wire::kConnectionParamsSize);
  FUZZ_CHECK(params->receive_buffers > 0);
  FUZZ_CHECK(params->receive_buffer_size >= wire::kMaxHeaderSize);
  // A quota exactly when rendezvous messages are taken.
  FUZZ_CHECK(params->rendezvous == (params->rendezvous_quota != 0));
  uint8_t expected[wire::kConnectionParamsSize];
  std::memcpy(expected, data, sizeof(expected));
  expected[1] &= 1;  // only bit 0 (rendezvous) means anything
  uint8_t again[wire::kConnectionParamsSize];
  wire::EncodeConnectionParams(*params, again);
  FUZZ_CHECK(std::memcmp(again, expected, sizeof(again)) == 0);
  return 0;
}
