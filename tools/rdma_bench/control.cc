#include "tools/rdma_bench/control.h"

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace demi::bench {

bool DecodeControl(const demi_sgarray_t& sga, Control* control) {
  if (sga.sga_numsegs != 2 || sga.sga_segs[0].sgaseg_len != kControlSplit ||
      sga.sga_segs[1].sgaseg_len != sizeof(Control) - kControlSplit) {
    return false;
  }
  auto* bytes = reinterpret_cast<char*>(control);
  std::memcpy(bytes, sga.sga_segs[0].sgaseg_buf, kControlSplit);
  std::memcpy(bytes + kControlSplit, sga.sga_segs[1].sgaseg_buf,
              sizeof(Control) - kControlSplit);
  return control->magic == kControlMagic;
}

uint64_t MessageBytes(const demi_sgarray_t& sga) {
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < sga.sga_numsegs; ++i) {
    bytes += sga.sga_segs[i].sgaseg_len;
  }
  return bytes;
}

std::string ErrnoText(int err) {
  const char* name = strerrorname_np(err);
  return absl::StrCat(name != nullptr ? name : "errno", " (",
                      std::strerror(err), ")");
}

absl::Status DemiError(int err, absl::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, ": ", ErrnoText(err)));
}

bool IsUnsupported(int err) {
  return err == EMSGSIZE || err == ENOTSUP || err == EOPNOTSUPP ||
         err == ENOMEM || err == ENOBUFS;
}

std::string MemoryName(Memory memory) {
  return memory == Memory::kLibrary ? "library memory" : "application memory";
}

absl::StatusOr<int> Pump(
    absl::Duration timeout,
    absl::FunctionRef<absl::Status(demi_qresult_t&)> handle) {
  demi_qresult_t results[32];
  int count = 0;
  timespec limit = absl::ToTimespec(timeout);
  int rc = demi_wait_next_n(results, 32, &count, &limit);
  if (rc == ETIMEDOUT) return 0;
  if (rc != 0) return DemiError(rc, "demi_wait_next_n");
  for (int i = 0; i < count; ++i) {
    if (absl::Status s = handle(results[i]); !s.ok()) return s;
  }
  return count;
}

absl::Status PostPop(int qd) {
  demi_qtoken_t qt = 0;
  int rc = demi_pop(&qt, qd);
  return rc == 0 ? absl::OkStatus() : DemiError(rc, "demi_pop");
}

absl::Status Outbox::Flush(int qd) {
  while (!pending_.empty()) {
    demi_sgarray_t sga = demi_sgaalloc(sizeof(Control));
    if (sga.sga_numsegs != 1) {
      return absl::ResourceExhaustedError(
          "demi_sgaalloc for a control message failed");
    }
    auto* bytes = static_cast<char*>(sga.sga_segs[0].sgaseg_buf);
    std::memcpy(bytes, &pending_.front(), sizeof(Control));
    sga.sga_numsegs = 2;
    sga.sga_segs[0] = {bytes, kControlSplit};
    sga.sga_segs[1] = {bytes + kControlSplit, sizeof(Control) - kControlSplit};
    demi_qtoken_t qt = 0;
    int rc = demi_push(&qt, qd, &sga);
    if (rc != 0) {
      (void)demi_sgafree(&sga);
      if (rc == EAGAIN) return absl::OkStatus();
      return DemiError(rc, "demi_push of a control message");
    }
    pending_.pop_front();  // the push result frees the array
  }
  return absl::OkStatus();
}

bool FreeIfControlPush(demi_qresult_t& result) {
  demi_sgarray_t& sga = result.qr_value.sga;
  if (sga.sga_numsegs != 2 || sga.sga_buf == nullptr) return false;
  (void)demi_sgafree(&sga);
  return true;
}

}  // namespace demi::bench
