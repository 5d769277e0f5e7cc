// UserfaultWatcher: a MemoryWatcher built on a userfaultfd.
//
// Why userfaultfd: the kernel reports the change itself, whoever makes it.
// Interposing munmap/mremap/madvise/brk from the shared library would miss
// glibc's internal calls (free() of a large block unmaps through an internal
// symbol), would not work when the application links statically, and loses
// events when another library interposes the same calls. A userfaultfd sees
// every unmap, mremap and page-dropping madvise of a watched range, from any
// caller, linked any way.
//
// How: the userfaultfd is opened with the UNMAP, REMOVE and REMAP events and
// UFFD_USER_MODE_ONLY (allowed without privilege where
// vm.unprivileged_userfaultfd is 0). Ranges are registered in write-protect
// mode but never write-protected, so no page fault is ever delivered: the
// watcher only receives events, and faults (including the kernel's own, in
// system calls) behave exactly as before. A thread reads the events; the
// kernel holds the thread that unmapped the memory until its event is read,
// and the read happens inside an InvalidationLog write section, so a lookup
// made after munmap() returned sees the change.
//
// Limits (documented in rdma/region_cache.md): only private anonymous and
// shared-memory mappings can be watched (file mappings get EINVAL: not
// cached); a range another userfaultfd watches gets EBUSY (not cached);
// shmdt() and truncating a shared-memory file through another descriptor
// change pages without an event. Watched ranges stay watched until unmapped,
// so an munmap of memory that was once pushed waits for this thread to read
// its event (microseconds).
//
// Errors: Create fails with the errno of userfaultfd() or UFFDIO_API when the
// kernel or a sandbox refuses them (ENOSYS, EPERM, EINVAL); callers then fall
// back to registering per push.
//
// Thread-safety: every member function is safe from any thread. Lifetime:
// destroying the watcher stops its thread and closes the userfaultfd, which
// unwatches every range.

#ifndef DEMI_RDMA_USERFAULT_WATCHER_H_
#define DEMI_RDMA_USERFAULT_WATCHER_H_

#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rdma/invalidation_log.h"
#include "rdma/memory_watcher.h"

namespace demi::rdma {

class UserfaultWatcher final : public MemoryWatcher {
 public:
  static absl::StatusOr<std::unique_ptr<UserfaultWatcher>> Create();

  UserfaultWatcher(const UserfaultWatcher&) = delete;
  UserfaultWatcher& operator=(const UserfaultWatcher&) = delete;
  ~UserfaultWatcher() override;

  absl::Status Watch(AddressRange range) override;
  InvalidationLog& log() override { return log_; }

 private:
  UserfaultWatcher(int uffd, int stop_fd);

  // The thread: waits for events (or the stop signal) and logs them.
  void Run();
  // Reads every pending event into the log. False if the descriptor failed.
  bool ReadEvents();

  const int uffd_;
  const int stop_fd_;  // An eventfd; written to stop the thread.
  InvalidationLog log_;
  std::thread thread_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_USERFAULT_WATCHER_H_
