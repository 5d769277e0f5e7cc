#include "rdma/memory_window.h"

#include <cerrno>

#include "common/errno_status.h"

namespace demi::rdma {

bool MemoryWindow::Supported(const ibv_device_attr& device) {
  return device.max_mw > 0 &&
         (device.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B) != 0;
}

absl::StatusOr<MemoryWindow> MemoryWindow::Allocate(ibv_pd* pd) {
  if (pd == nullptr) return ErrnoError(EINVAL, "no protection domain");
  ibv_mw* mw = ibv_alloc_mw(pd, IBV_MW_TYPE_2);
  if (mw == nullptr) return ErrnoStatus(errno, "ibv_alloc_mw");
  return MemoryWindow(mw);
}

uint32_t MemoryWindow::PrepareBind(const MemoryRegion& region,
                                   uintptr_t address, size_t length,
                                   unsigned int access, ibv_send_wr* wr) {
  rkey_ = ibv_inc_rkey(rkey_);
  wr->opcode = IBV_WR_BIND_MW;
  wr->sg_list = nullptr;
  wr->num_sge = 0;
  wr->bind_mw.mw = mw_.get();
  wr->bind_mw.rkey = rkey_;
  wr->bind_mw.bind_info.mr = region.get();
  wr->bind_mw.bind_info.addr = address;
  wr->bind_mw.bind_info.length = length;
  wr->bind_mw.bind_info.mw_access_flags = access;
  return rkey_;
}

}  // namespace demi::rdma
