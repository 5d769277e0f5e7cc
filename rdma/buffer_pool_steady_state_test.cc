// BufferPool's steady state: once warm, allocating and freeing (100k random
// sizes) maps no chunk, registers nothing and makes no heap allocation.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "rdma/buffer_pool.h"
#include "rdma/fake_registrar.h"

// Counts the heap allocations made by the thread that sets
// t_count_allocations, to prove the steady state allocates nothing. Not
// inlined, so the compiler does not pair these malloc/free calls with the
// new-expressions of callers (-Wmismatched-new-delete).
namespace {
thread_local bool t_count_allocations = false;
thread_local size_t t_allocations = 0;
}  // namespace

[[gnu::noinline]] void* operator new(size_t size) {
  if (t_count_allocations) ++t_allocations;
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept {
  std::free(p);
}

namespace demi::rdma {
namespace {

TEST(BufferPoolSteadyStateTest, NeitherGrowsNorAllocates) {
  FakeRegistrar registrar_;
  absl::StatusOr<std::unique_ptr<BufferPool>> created =
      BufferPool::Create(&registrar_, BufferPoolOptions());
  ASSERT_TRUE(created.ok()) << created.status();
  BufferPool& pool = **created;
  constexpr size_t kHeld = 64;
  const size_t max = pool.max_buffer_size();
  // Warm-up: kHeld buffers of every class at once.
  std::vector<PoolBuffer*> warm;
  for (size_t capacity = 64; capacity <= max; capacity *= 2) {
    for (size_t i = 0; i < kHeld; ++i) {
      auto buffer = pool.Allocate(capacity);
      ASSERT_TRUE(buffer.ok());
      warm.push_back(*buffer);
    }
  }
  for (PoolBuffer* buffer : warm) ASSERT_TRUE(pool.Free(buffer).ok());
  const size_t chunks = pool.Stats().chunks;
  const size_t registrations = registrar_.total_registrations();

  PoolBuffer* held[kHeld] = {};
  uint64_t random = 0x9e3779b97f4a7c15u;
  size_t failures = 0;
  t_allocations = 0;
  t_count_allocations = true;
  for (size_t i = 0; i < 100000; ++i) {
    random ^= random << 13;
    random ^= random >> 7;
    random ^= random << 17;
    PoolBuffer*& slot = held[i % kHeld];
    if (slot != nullptr && !pool.Free(slot).ok()) ++failures;
    auto buffer = pool.Allocate(1 + random % max);
    if (buffer.ok()) {
      slot = *buffer;
      static_cast<char*>(slot->data())[0] = 1;
    } else {
      slot = nullptr;
      ++failures;
    }
  }
  t_count_allocations = false;
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(t_allocations, 0u);
  EXPECT_EQ(pool.Stats().chunks, chunks);
  EXPECT_EQ(registrar_.total_registrations(), registrations);
  for (PoolBuffer* buffer : held) {
    if (buffer != nullptr) {
      ASSERT_TRUE(pool.Free(buffer).ok());
    }
  }
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
  created->reset();
  EXPECT_EQ(registrar_.live_registrations(), 0u);
  EXPECT_EQ(registrar_.Problems(/*expect_all_destroyed=*/true),
            std::vector<std::string>());
}

}  // namespace
}  // namespace demi::rdma
