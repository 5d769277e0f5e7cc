// FakeRegistrar: a Registrar for unit tests, with no device.
//
// Hands out distinct keys (no two registrations, live or dead, share an lkey
// or an rkey; lkeys and rkeys never collide either), counts live
// registrations and bytes, can be told to fail the next N registrations with
// a given errno or every registration past a pinned-byte limit, and records
// misuse instead of asserting, so a test checks Problems() once at the end:
//   - a registration destroyed more than once;
//   - a registration overlapping a live one;
//   - a registration destroyed after (part of) its range was unmapped;
//   - (Problems() only) a registration never destroyed, when
//     `expect_all_destroyed` is true.
//
// Constructed with `pins_pages`, it stands for a real device, whose
// registrations keep their pages: then overlapping registrations and
// deregistering after an unmap are allowed (the region cache does both),
// and only the other checks apply.
//
// Lifetime: must outlive every registration it hands out (as a real
// registrar). Thread-safety: every member function is safe from any thread.

#ifndef DEMI_RDMA_FAKE_REGISTRAR_H_
#define DEMI_RDMA_FAKE_REGISTRAR_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/mutex.h"
#include "rdma/registrar.h"

namespace demi::rdma {

class FakeRegistrar final : public Registrar {
 public:
  explicit FakeRegistrar(bool pins_pages = false) : pins_pages_(pins_pages) {}
  FakeRegistrar(const FakeRegistrar&) = delete;
  FakeRegistrar& operator=(const FakeRegistrar&) = delete;

  absl::StatusOr<std::unique_ptr<Registration>> Register(
      void* address, size_t length) override {
    if (address == nullptr || length == 0) {
      return ErrnoError(EINVAL, "fake registrar: empty range");
    }
    demi::MutexLock lock(&mu_);
    if (failures_left_ > 0) {
      --failures_left_;
      ++failed_;
      return ErrnoStatus(failure_errno_, "fake ibv_reg_mr");
    }
    if (live_bytes_ + length > pin_limit_) {
      ++failed_;
      return ErrnoStatus(ENOMEM, "fake ibv_reg_mr past the pin limit");
    }
    uintptr_t begin = reinterpret_cast<uintptr_t>(address);
    for (size_t i = 0; i < entries_.size(); ++i) {
      const Entry& other = entries_[i];
      if (!pins_pages_ && other.destroyed == 0 &&
          begin < other.begin + other.length && other.begin < begin + length) {
        problems_.push_back(absl::StrCat("registration ", entries_.size(),
                                         " overlaps live registration ", i));
      }
    }
    uint32_t id = static_cast<uint32_t>(entries_.size());
    MemoryKeys keys{0x100u + id, 0x80000000u + id};
    entries_.push_back(Entry{begin, length, keys, 0});
    live_bytes_ += length;
    ++live_;
    return std::unique_ptr<Registration>(new FakeRegistration(this, id, keys));
  }

  // The next `count` calls to Register() fail with `errnum`.
  void FailNext(int count, int errnum) {
    demi::MutexLock lock(&mu_);
    failures_left_ = count;
    failure_errno_ = errnum;
  }

  // From now on a registration that would take the live bytes past `bytes`
  // fails with ENOMEM, as a device does at the locked-memory limit.
  void SetPinLimit(size_t bytes) {
    demi::MutexLock lock(&mu_);
    pin_limit_ = bytes;
  }

  // Successful registrations ever made; registrations not yet destroyed, and
  // their bytes; registrations failed on purpose.
  size_t total_registrations() const {
    demi::MutexLock lock(&mu_);
    return entries_.size();
  }
  size_t live_registrations() const {
    demi::MutexLock lock(&mu_);
    return live_;
  }
  size_t live_bytes() const {
    demi::MutexLock lock(&mu_);
    return live_bytes_;
  }
  size_t failed_registrations() const {
    demi::MutexLock lock(&mu_);
    return failed_;
  }

  // The keys of the live registration containing [address, address +
  // length), if any.
  std::optional<MemoryKeys> KeysFor(const void* address, size_t length) const {
    uintptr_t begin = reinterpret_cast<uintptr_t>(address);
    demi::MutexLock lock(&mu_);
    for (const Entry& entry : entries_) {
      if (entry.destroyed == 0 && begin >= entry.begin &&
          length <= entry.length &&
          begin - entry.begin <= entry.length - length) {
        return entry.keys;
      }
    }
    return std::nullopt;
  }

  // Everything that went wrong so far (empty when all is well). With
  // `expect_all_destroyed`, also every registration still alive.
  std::vector<std::string> Problems(bool expect_all_destroyed) const {
    demi::MutexLock lock(&mu_);
    std::vector<std::string> problems = problems_;
    if (expect_all_destroyed) {
      for (size_t i = 0; i < entries_.size(); ++i) {
        if (entries_[i].destroyed == 0) {
          problems.push_back(absl::StrCat("registration ", i, " (",
                                          entries_[i].length,
                                          " bytes) never destroyed"));
        }
      }
    }
    return problems;
  }

 private:
  struct Entry {
    uintptr_t begin;
    size_t length;
    MemoryKeys keys;
    int destroyed;  // How many times its Registration was destroyed.
  };

  class FakeRegistration final : public Registration {
   public:
    FakeRegistration(FakeRegistrar* registrar, uint32_t id, MemoryKeys keys)
        : registrar_(registrar), id_(id), keys_(keys) {}
    ~FakeRegistration() override { registrar_->Deregister(id_); }
    MemoryKeys keys() const override { return keys_; }

   private:
    FakeRegistrar* const registrar_;
    const uint32_t id_;
    const MemoryKeys keys_;
  };

  // True if every page of [begin, begin + length) is mapped (msync fails
  // with ENOMEM otherwise).
  static bool Mapped(uintptr_t begin, size_t length) {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t first = begin & ~(page - 1);
    return msync(reinterpret_cast<void*>(first), begin + length - first,
                 MS_ASYNC) == 0;
  }

  void Deregister(uint32_t id) {
    demi::MutexLock lock(&mu_);
    Entry& entry = entries_[id];
    if (++entry.destroyed > 1) {
      problems_.push_back(absl::StrCat("registration ", id, " destroyed ",
                                       entry.destroyed, " times"));
      return;
    }
    if (!pins_pages_ && !Mapped(entry.begin, entry.length)) {
      problems_.push_back(absl::StrCat(
          "registration ", id, " destroyed after its memory was unmapped"));
    }
    live_bytes_ -= entry.length;
    --live_;
  }

  const bool pins_pages_;
  mutable demi::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);  // Indexed by id.
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
  size_t live_ ABSL_GUARDED_BY(mu_) = 0;
  size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pin_limit_ ABSL_GUARDED_BY(mu_) = SIZE_MAX;
  size_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  int failures_left_ ABSL_GUARDED_BY(mu_) = 0;
  int failure_errno_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_FAKE_REGISTRAR_H_
