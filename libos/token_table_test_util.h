// Shared by the TokenTable tests: results to complete with, and how to
// compare what a wait hands out.

#ifndef DEMI_LIBOS_TOKEN_TABLE_TEST_UTIL_H_
#define DEMI_LIBOS_TOKEN_TABLE_TEST_UTIL_H_

#include <demi/types.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "common/errno_status.h"

namespace demi::libos {

// A result as a completing engine would fill it: opcode, ret and a value
// whose bytes are recognizable. qr_qt and qr_qd are deliberately wrong: the
// table must overwrite them.
inline demi_qresult_t MakeResult(demi_opcode_t opcode, int64_t ret,
                                 uint8_t tag) {
  demi_qresult_t r;
  std::memset(&r, 0, sizeof(r));
  r.qr_opcode = opcode;
  r.qr_ret = ret;
  r.qr_qd = -12345;
  r.qr_qt = 0xdeadbeef;
  r.qr_value.sga.sga_numsegs = tag;
  r.qr_value.sga.sga_segs[0].sgaseg_len = 1000u + tag;
  r.qr_value.sga.sga_addr.sin_port = tag;
  return r;
}

// What Take() must return for `r` completed on token `qt` of queue `qd`.
inline demi_qresult_t Expected(demi_qresult_t r, demi_qtoken_t qt, int qd) {
  r.qr_qt = qt;
  r.qr_qd = qd;
  return r;
}

// Whether two results say the same, as far as a wait hands them out: every
// byte of the header, and of a push's or pop's array the segments up to
// sga_numsegs (CopyResult leaves the unused ones alone); every byte of the
// value otherwise.
inline bool SameResult(const demi_qresult_t& a, const demi_qresult_t& b) {
  if (a.qr_opcode != b.qr_opcode || a.qr_qd != b.qr_qd || a.qr_qt != b.qr_qt ||
      a.qr_ret != b.qr_ret) {
    return false;
  }
  if (a.qr_opcode != DEMI_OPC_PUSH && a.qr_opcode != DEMI_OPC_POP) {
    return std::memcmp(&a.qr_value, &b.qr_value, sizeof(a.qr_value)) == 0;
  }
  const demi_sgarray_t& x = a.qr_value.sga;
  const demi_sgarray_t& y = b.qr_value.sga;
  const uint32_t used = std::min<uint32_t>(x.sga_numsegs, DEMI_SGARRAY_MAXSIZE);
  return x.sga_buf == y.sga_buf && x.sga_numsegs == y.sga_numsegs &&
         std::memcmp(&x.sga_addr, &y.sga_addr, sizeof(x.sga_addr)) == 0 &&
         std::memcmp(x.sga_segs, y.sga_segs, used * sizeof(x.sga_segs[0])) == 0;
}

template <typename T>
int ErrnoOf(const absl::StatusOr<T>& s) {
  return ErrnoFromStatus(s.status());
}

}  // namespace demi::libos

#endif  // DEMI_LIBOS_TOKEN_TABLE_TEST_UTIL_H_
