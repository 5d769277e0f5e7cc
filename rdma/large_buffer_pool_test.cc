#include "rdma/large_buffer_pool.h"

#include <cerrno>
#include <cstring>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/fake_registrar.h"

namespace demi::rdma {
namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

TEST(LargeBufferPoolTest, BuffersAreRegisteredPowerOfTwoClassesAndReused) {
  FakeRegistrar registrar;
  auto pool = *LargeBufferPool::Create(&registrar, {.max_bytes = 64 * kMiB});
  LargeBuffer* a = *pool->Allocate(20 * kKiB);
  EXPECT_EQ(a->capacity(), 32 * kKiB);
  EXPECT_TRUE(registrar.KeysFor(a->data(), a->capacity()).has_value());
  memset(a->data(), 1, a->capacity());  // writable
  EXPECT_TRUE(pool->IsAllocated(a));
  ASSERT_TRUE(pool->Free(a).ok());
  EXPECT_FALSE(pool->IsAllocated(a));
  LargeBuffer* b = *pool->Allocate(30 * kKiB);  // the kept one again
  EXPECT_EQ(b, a);
  EXPECT_EQ(registrar.total_registrations(), 1u);
  ASSERT_TRUE(pool->Free(b).ok());
  EXPECT_EQ(ErrnoFromStatus(pool->Free(b)), EINVAL);  // double free
  EXPECT_EQ(ErrnoFromStatus(pool->Free(nullptr)), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(pool->Allocate(0).status()), EINVAL);
  pool.reset();
  EXPECT_EQ(registrar.Problems(/*expect_all_destroyed=*/true),
            std::vector<std::string>{});
}

TEST(LargeBufferPoolTest, CapGivesEagainThenRoomAfterFree) {
  FakeRegistrar registrar;
  auto pool = *LargeBufferPool::Create(&registrar, {.max_bytes = 4 * kMiB});
  LargeBuffer* a = *pool->Allocate(2 * kMiB);
  LargeBuffer* b = *pool->Allocate(2 * kMiB);
  EXPECT_EQ(ErrnoFromStatus(pool->Allocate(1 * kMiB).status()), EAGAIN);
  EXPECT_EQ(ErrnoFromStatus(pool->Allocate(5 * kMiB).status()), ENOBUFS);
  // 3 MiB takes the 4 MiB class: the whole cap, so it waits for both.
  EXPECT_EQ(ErrnoFromStatus(pool->Allocate(3 * kMiB).status()), EAGAIN);
  ASSERT_TRUE(pool->Free(a).ok());
  // The kept 2 MiB buffer is dropped to make room for a 1 MiB one.
  LargeBuffer* c = *pool->Allocate(1 * kMiB);
  EXPECT_LE(pool->Stats().mapped_bytes, 4 * kMiB);
  ASSERT_TRUE(pool->Free(b).ok());
  ASSERT_TRUE(pool->Free(c).ok());
  EXPECT_EQ(pool->Stats().in_use, 0u);
}

// Kept buffers dropped for room are deregistered even when the room they
// make is not enough (EAGAIN), and a freed buffer above the kept size is
// deregistered at once.
// At the locked-memory limit (ENOMEM from the device) the pool drops the
// buffers it keeps and registers again; with none kept, ENOMEM reaches the
// caller and nothing stays mapped.
TEST(LargeBufferPoolTest, LockedMemoryLimitDropsKeptBuffersThenRetries) {
  FakeRegistrar registrar;
  auto pool = *LargeBufferPool::Create(&registrar, {.max_bytes = 64 * kMiB});
  registrar.SetPinLimit(4 * kMiB);
  LargeBuffer* a = *pool->Allocate(1 * kMiB);
  LargeBuffer* b = *pool->Allocate(1 * kMiB);
  ASSERT_TRUE(pool->Free(a).ok());
  ASSERT_TRUE(pool->Free(b).ok());
  EXPECT_EQ(pool->Stats().mapped_bytes, 2 * kMiB);            // both kept
  absl::StatusOr<LargeBuffer*> c = pool->Allocate(3 * kMiB);  // 4 MiB class
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(pool->Stats().mapped_bytes, 4 * kMiB);
  EXPECT_EQ(registrar.live_bytes(), 4 * kMiB);
  absl::StatusOr<LargeBuffer*> d = pool->Allocate(1 * kMiB);
  EXPECT_EQ(ErrnoFromStatus(d.status()), ENOMEM);
  EXPECT_EQ(pool->Stats().mapped_bytes, 4 * kMiB);
  ASSERT_TRUE(pool->Free(*c).ok());
  pool.reset();
  EXPECT_EQ(registrar.Problems(/*expect_all_destroyed=*/true),
            std::vector<std::string>{});
}

TEST(LargeBufferPoolTest, DroppedAndOversizedBuffersAreDeregistered) {
  FakeRegistrar registrar;
  auto pool = *LargeBufferPool::Create(&registrar, {.max_bytes = 256 * kMiB});
  LargeBuffer* kept = *pool->Allocate(64 * kMiB);
  LargeBuffer* held = *pool->Allocate(128 * kMiB);
  ASSERT_TRUE(pool->Free(kept).ok());  // 64 MiB: the largest class kept
  EXPECT_EQ(registrar.live_registrations(), 2u);
  // 256 MiB: dropping the kept 64 MiB is not enough beside the held 128.
  EXPECT_EQ(ErrnoFromStatus(pool->Allocate(256 * kMiB).status()), EAGAIN);
  EXPECT_EQ(registrar.live_registrations(), 1u);
  EXPECT_EQ(pool->Stats().mapped_bytes, 128 * kMiB);
  ASSERT_TRUE(pool->Free(held).ok());  // above the kept sizes: gone at once
  EXPECT_EQ(registrar.live_registrations(), 0u);
  EXPECT_EQ(pool->Stats().mapped_bytes, 0u);
  pool.reset();
  EXPECT_EQ(registrar.Problems(/*expect_all_destroyed=*/true),
            std::vector<std::string>{});
}

TEST(LargeBufferPoolTest, RegistrationFailureLeavesNothingMapped) {
  FakeRegistrar registrar;
  auto pool = *LargeBufferPool::Create(&registrar, {.max_bytes = 8 * kMiB});
  registrar.FailNext(1, ENOMEM);
  EXPECT_EQ(ErrnoFromStatus(pool->Allocate(kMiB).status()), ENOMEM);
  EXPECT_EQ(pool->Stats().mapped_bytes, 0u);
  EXPECT_TRUE(pool->Allocate(kMiB).ok());
}

}  // namespace
}  // namespace demi::rdma
