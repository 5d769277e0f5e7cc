// Registrar: the one way the memory layer registers memory with a device.
//
// Pools (and the memory-region cache) register through this interface rather
// than calling ibv_reg_mr themselves, so they can be unit-tested with a fake
// (rdma/fake_registrar.h) on a host that has no RDMA device.
//
//   VerbsRegistrar registrar(pd.get(), IBV_ACCESS_LOCAL_WRITE);
//   DEMI_ASSIGN_OR_RETURN(std::unique_ptr<Registration> registration,
//                         registrar.Register(address, length));
//   sge.lkey = registration->keys().lkey;
//
// Lifetime: a Registration deregisters its range when destroyed; the
// Registrar (and whatever it registers into, e.g. the protection domain) must
// outlive every Registration it handed out.
//
// Thread-safety: Register() may be called from several threads at once, and a
// Registration may be destroyed on any thread (implementations must allow
// both; VerbsRegistrar does, since libibverbs is thread-safe). keys() is
// const and safe from any thread.

#ifndef DEMI_RDMA_REGISTRAR_H_
#define DEMI_RDMA_REGISTRAR_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace demi::rdma {

// The keys the device gave a registered range: lkey for local scatter/gather
// entries, rkey for a peer's RDMA READ/WRITE.
struct MemoryKeys {
  uint32_t lkey = 0;
  uint32_t rkey = 0;

  friend bool operator==(const MemoryKeys&, const MemoryKeys&) = default;
};

// One registered range. Destroying it deregisters the range (a failure is
// logged: there is nobody to return it to). Not copyable or movable; held by
// std::unique_ptr.
class Registration {
 public:
  Registration() = default;
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  virtual ~Registration() = default;

  virtual MemoryKeys keys() const = 0;
};

class Registrar {
 public:
  virtual ~Registrar() = default;

  // Registers [address, address + length). `address` must be non-null and
  // `length` > 0 (else EINVAL). The caller keeps the memory mapped until the
  // returned Registration is destroyed. Errors carry the errno of the failed
  // registration (e.g. ENOMEM when the locked-memory limit is reached).
  virtual absl::StatusOr<std::unique_ptr<Registration>> Register(
      void* address, size_t length) = 0;
};

// Registers with ibv_reg_mr in one protection domain, with fixed access flags.
class VerbsRegistrar final : public Registrar {
 public:
  enum class ReadOnlyFallback { kNo, kYes };

  // `pd` is not owned and must outlive the registrar and every registration
  // it hands out. `access` is a set of IBV_ACCESS_* flags. With
  // ReadOnlyFallback::kYes, memory the process may not write (EFAULT/EACCES
  // with write access, e.g. constants in .rodata) is registered without the
  // write flags: enough to send it.
  VerbsRegistrar(ibv_pd* pd, int access,
                 ReadOnlyFallback fallback = ReadOnlyFallback::kNo)
      : pd_(pd), access_(access), fallback_(fallback) {}

  absl::StatusOr<std::unique_ptr<Registration>> Register(
      void* address, size_t length) override;

 private:
  ibv_pd* const pd_;
  const int access_;
  const ReadOnlyFallback fallback_;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_REGISTRAR_H_
