#include "rdma/address_handle.h"

#include <cerrno>

#include "common/errno_status.h"

namespace demi::rdma {

absl::StatusOr<AddressHandle> AddressHandle::Create(ibv_pd* pd,
                                                    ibv_ah_attr& attr) {
  ibv_ah* ah = ibv_create_ah(pd, &attr);
  if (ah == nullptr)
    return ErrnoStatus(errno != 0 ? errno : EIO, "ibv_create_ah");
  return AddressHandle(ah);
}

}  // namespace demi::rdma
