// Tests of BufferCache over a BufferPool on FakeRegistrar (no device).

#include "rdma/buffer_cache.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "rdma/buffer_pool.h"
#include "rdma/fake_registrar.h"

namespace demi::rdma {
namespace {

class BufferCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = BufferPool::Create(&registrar_, BufferPoolOptions());
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }
  void TearDown() override {
    ASSERT_TRUE(pool_->CheckInvariants().ok());
    pool_.reset();
    EXPECT_EQ(registrar_.live_registrations(), 0u);
  }

  PoolBuffer* FromPool(size_t size) {
    auto buffer = pool_->Allocate(size);
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    return buffer.ok() ? *buffer : nullptr;
  }

  FakeRegistrar registrar_;
  std::unique_ptr<BufferPool> pool_;
};

TEST_F(BufferCacheTest, AnEmptyClassSendsTheCallerToThePool) {
  BufferCache cache(*pool_);
  EXPECT_EQ(cache.Allocate(64), nullptr);
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(BufferCacheTest, AKeptBufferComesBackForItsClassOnlyWithPinsReset) {
  BufferCache cache(*pool_);
  PoolBuffer* buffer = FromPool(100);  // class 1: 128 bytes
  ASSERT_NE(buffer, nullptr);
  ASSERT_EQ(buffer->pins().Release(), PinCount::kFreeNow);
  ASSERT_TRUE(cache.Keep(buffer));
  EXPECT_EQ(cache.size(), 1u);
  // Still allocated as far as the pool knows, but released by its holder.
  EXPECT_TRUE(pool_->IsAllocated(buffer));
  EXPECT_TRUE(buffer->pins().released());
  EXPECT_EQ(cache.Allocate(64), nullptr);   // class 0
  EXPECT_EQ(cache.Allocate(256), nullptr);  // class 2
  EXPECT_EQ(cache.Allocate(65), buffer);    // class 1 again
  EXPECT_FALSE(buffer->pins().released());
  EXPECT_EQ(cache.size(), 0u);
  ASSERT_TRUE(pool_->Free(buffer).ok());
}

TEST_F(BufferCacheTest, AFullClassRefusesAndTheDestructorGivesAllBack) {
  const size_t in_use_before = pool_->Stats().in_use;
  {
    BufferCache cache(*pool_);
    std::vector<PoolBuffer*> buffers;
    for (uint32_t i = 0; i < BufferCache::kDepth + 1; ++i) {
      buffers.push_back(FromPool(64));
    }
    for (uint32_t i = 0; i < BufferCache::kDepth; ++i) {
      EXPECT_TRUE(cache.Keep(buffers[i]));
    }
    EXPECT_FALSE(cache.Keep(buffers.back()));  // full: the caller frees it
    ASSERT_TRUE(pool_->Free(buffers.back()).ok());
    EXPECT_EQ(cache.size(), BufferCache::kDepth);
    EXPECT_EQ(pool_->Stats().in_use, in_use_before + BufferCache::kDepth);
  }
  EXPECT_EQ(pool_->Stats().in_use, in_use_before);
}

TEST_F(BufferCacheTest, AForgottenCacheLeavesThePoolAlone) {
  PoolBuffer* buffer = FromPool(64);
  {
    BufferCache cache(*pool_);
    ASSERT_TRUE(cache.Keep(buffer));
    cache.Forget();
    EXPECT_EQ(cache.size(), 0u);
  }
  // Dropped, not freed: the pool still counts it, and it can be freed once.
  EXPECT_TRUE(pool_->IsAllocated(buffer));
  ASSERT_TRUE(pool_->Free(buffer).ok());
}

}  // namespace
}  // namespace demi::rdma
