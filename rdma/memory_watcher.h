// MemoryWatcher: reports address ranges whose pages may have changed under
// their addresses (unmapped, remapped, dropped), for ranges it was asked to
// watch.
//
// A registration cache may keep a registration only while its range is
// watched: the registration pins the pages it was made over, so once the
// application maps other pages at those addresses, the cache must stop
// handing the registration out. The watcher appends every such change to its
// InvalidationLog (see there for the ordering guarantee).
//
// Implementations: UserfaultWatcher (userfaultfd, rdma/userfault_watcher.h);
// tests use a fake that appends to the log by hand.
//
// Thread-safety: every member function is safe from any thread.

#ifndef DEMI_RDMA_MEMORY_WATCHER_H_
#define DEMI_RDMA_MEMORY_WATCHER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "rdma/invalidation_log.h"

namespace demi::rdma {

class MemoryWatcher {
 public:
  virtual ~MemoryWatcher() = default;

  // Starts watching the page-aligned `range`; changes to any page of it are
  // appended to log() from now on, until the pages are unmapped. Watching a
  // watched range again is fine. Errors (the range must then not be cached):
  // EINVAL for memory that cannot be watched (e.g. a file mapping), EBUSY if
  // someone else watches it, ENOMEM if part of it is not mapped.
  virtual absl::Status Watch(AddressRange range) = 0;

  virtual InvalidationLog& log() = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_MEMORY_WATCHER_H_
