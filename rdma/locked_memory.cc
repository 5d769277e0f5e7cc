#include "rdma/locked_memory.h"

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace demi::rdma {
namespace {

bool HasIpcLock() {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32))) != 0;
}

}  // namespace

long long PinnedBytes() {
  FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return -1;
  char line[256];
  long long kib = -1;
  while (std::fgets(line, sizeof(line), status) != nullptr) {
    if (std::sscanf(line, "VmPin: %lld kB", &kib) == 1) break;
  }
  std::fclose(status);
  return kib < 0 ? -1 : kib * 1024;
}

std::optional<size_t> LockedMemoryLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0) return std::nullopt;
  if (limit.rlim_cur == RLIM_INFINITY || HasIpcLock()) return std::nullopt;
  return static_cast<size_t>(limit.rlim_cur);
}

std::string LockedMemoryExplanation(size_t length) {
  const std::optional<size_t> limit = LockedMemoryLimit();
  if (!limit.has_value()) return "";
  const long long pinned = PinnedBytes();
  return absl::StrCat(
      "pinning ", length,
      " more bytes passes the locked-memory limit: ", "RLIMIT_MEMLOCK is ",
      *limit, " bytes (ulimit -l: ", *limit / 1024, ")",
      pinned >= 0 ? absl::StrCat(" and this process has ", pinned,
                                 " bytes pinned already")
                  : "",
      "; raise the limit (ulimit -l, docker run --ulimit memlock=BYTES, "
      "systemd LimitMEMLOCK=) or pin less: DEMI_MR_CACHE_MAX_BYTES and "
      "DEMI_LARGE_POOL_MAX_BYTES cap the cached registrations, "
      "DEMI_EAGER_LIMIT sizes each connection's receive buffers, "
      "DEMI_RENDEZVOUS_QUOTA caps what one peer's messages hold");
}

}  // namespace demi::rdma
