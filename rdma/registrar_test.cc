// The registrars without a device: FakeRegistrar's bookkeeping (what the
// pool and cache tests rely on) and VerbsRegistrar's host-side checks.

#include "rdma/registrar.h"

#include <infiniband/verbs.h>

#include <cerrno>
#include <string>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/fake_registrar.h"

namespace demi::rdma {
namespace {

TEST(FakeRegistrarTest, KeysFailuresAndBookkeeping) {
  FakeRegistrar registrar;
  char memory[256];
  EXPECT_EQ(ErrnoFromStatus(registrar.Register(nullptr, 1).status()), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(registrar.Register(memory, 0).status()), EINVAL);
  registrar.FailNext(1, EPERM);
  EXPECT_EQ(ErrnoFromStatus(registrar.Register(memory, 16).status()), EPERM);
  auto a = registrar.Register(memory, 128);
  auto b = registrar.Register(memory + 128, 128);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->keys().lkey, (*b)->keys().lkey);
  EXPECT_NE((*a)->keys().rkey, (*b)->keys().rkey);
  EXPECT_EQ(registrar.live_registrations(), 2u);
  EXPECT_EQ(registrar.live_bytes(), 256u);
  EXPECT_EQ(registrar.KeysFor(memory + 130, 10), (*b)->keys());
  EXPECT_FALSE(registrar.KeysFor(memory + 120, 10).has_value());
  EXPECT_EQ(registrar.Problems(true).size(), 2u);  // Both still live.
  {
    auto overlapping = registrar.Register(memory + 100, 8);
    ASSERT_TRUE(overlapping.ok());
  }
  EXPECT_EQ(registrar.Problems(false).size(), 1u);  // The overlap.
  a->reset();
  b->reset();
  EXPECT_EQ(registrar.live_registrations(), 0u);
  EXPECT_EQ(registrar.total_registrations(), 3u);
}

TEST(VerbsRegistrarTest, NoProtectionDomainIsEINVAL) {
  VerbsRegistrar registrar(nullptr, IBV_ACCESS_LOCAL_WRITE);
  char byte;
  EXPECT_EQ(ErrnoFromStatus(registrar.Register(&byte, 1).status()), EINVAL);
}

}  // namespace
}  // namespace demi::rdma
