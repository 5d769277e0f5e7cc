// The locked-memory limit (RLIMIT_MEMLOCK) and what a refused registration
// should tell its user.
//
// Registering memory pins its pages, and the kernel counts pinned pages
// against the process's RLIMIT_MEMLOCK unless it holds CAP_IPC_LOCK; past the
// limit ibv_reg_mr fails with ENOMEM. Containers often set the limit to
// 8-64 MiB. MemoryRegion::Register calls LockedMemoryExplanation() when a
// registration fails with ENOMEM, so the error names the limit, what was
// asked, and what to change, instead of a bare "Cannot allocate memory".
//
// Thread-safety: both functions are safe from any thread (they read
// process state only: getrlimit, capget, /proc/self/status).

#ifndef DEMI_RDMA_LOCKED_MEMORY_H_
#define DEMI_RDMA_LOCKED_MEMORY_H_

#include <cstddef>
#include <optional>
#include <string>

namespace demi::rdma {

// The limit on bytes this process may pin, or nullopt when it has none: an
// unlimited RLIMIT_MEMLOCK, or CAP_IPC_LOCK in its effective set.
std::optional<size_t> LockedMemoryLimit();

// The bytes this process has pinned now (VmPin of /proc/self/status: what
// registrations pinned), or -1 if unreadable.
long long PinnedBytes();

// For a registration of `length` bytes the kernel refused with ENOMEM: a
// sentence giving the limit, the bytes this process has pinned (VmPin) and
// what lowers or raises them; empty when no limit applies (the ENOMEM then
// came from elsewhere).
std::string LockedMemoryExplanation(size_t length);

}  // namespace demi::rdma

#endif  // DEMI_RDMA_LOCKED_MEMORY_H_
