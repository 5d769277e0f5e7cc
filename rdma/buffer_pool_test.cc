// Tests of BufferPool against FakeRegistrar (no RDMA device needed).

#include "rdma/buffer_pool.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/fake_registrar.h"
#include "rdma/registrar.h"

namespace demi::rdma {
namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;

class BufferPoolTest : public ::testing::Test {
 protected:
  void TearDown() override {
    pool_.reset();
    EXPECT_EQ(registrar_.live_registrations(), 0u);
    EXPECT_EQ(registrar_.live_bytes(), 0u);
    EXPECT_EQ(registrar_.Problems(/*expect_all_destroyed=*/true),
              std::vector<std::string>());
  }

  BufferPool& MakePool(BufferPoolOptions options = BufferPoolOptions()) {
    auto pool = BufferPool::Create(&registrar_, options);
    EXPECT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    return *pool_;
  }

  FakeRegistrar registrar_;  // Outlives pool_.
  std::unique_ptr<BufferPool> pool_;
};

uint8_t PatternByte(size_t buffer, size_t offset) {
  return static_cast<uint8_t>(buffer * 131 + offset * 7 + 1);
}

TEST_F(BufferPoolTest, CreateRejectsBadOptions) {
  auto create = [this](BufferPoolOptions options) {
    return ErrnoFromStatus(BufferPool::Create(&registrar_, options).status());
  };
  BufferPoolOptions options;
  options.max_buffer_size = 0;
  EXPECT_EQ(create(options), EINVAL);
  options.max_buffer_size = BufferPool::kMaxBufferSizeLimit + 1;
  EXPECT_EQ(create(options), EINVAL);
  options = BufferPoolOptions();
  options.min_chunk_bytes = 300 * kKiB;
  EXPECT_EQ(create(options), EINVAL);
  options.min_chunk_bytes = 64;
  EXPECT_EQ(create(options), EINVAL);
  options = BufferPoolOptions();
  options.max_pool_bytes = 0;
  EXPECT_EQ(create(options), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(
                BufferPool::Create(nullptr, BufferPoolOptions()).status()),
            EINVAL);
  options = BufferPoolOptions();
  options.max_buffer_size = BufferPool::kMaxBufferSizeLimit;
  EXPECT_EQ(create(options), 0);
  EXPECT_EQ(registrar_.total_registrations(), 0u) << "chunks are lazy";
}

// Holds one buffer of every size 1..max at once: each big enough, writable
// over its whole capacity, disjoint from the others, with its chunk's keys.
TEST_F(BufferPoolTest, EverySizeGetsADisjointWritableBuffer) {
  BufferPoolOptions options;
  options.max_pool_bytes = 256 * kMiB;
  BufferPool& pool = MakePool(options);
  const size_t max = pool.max_buffer_size();
  ASSERT_EQ(max, 8 * kKiB);

  std::vector<PoolBuffer*> buffers(max + 1, nullptr);
  for (size_t size = 1; size <= max; ++size) {
    auto buffer = pool.Allocate(size);
    ASSERT_TRUE(buffer.ok()) << size << ": " << buffer.status();
    PoolBuffer* b = *buffer;
    buffers[size] = b;
    const size_t capacity = b->capacity();
    ASSERT_GE(capacity, size);
    ASSERT_TRUE(std::has_single_bit(capacity));
    if (size <= BufferPool::kMinCapacity) {
      ASSERT_EQ(capacity, BufferPool::kMinCapacity) << size;
    } else {
      ASSERT_LT(capacity, 2 * size) << size;  // The waste bound.
    }
    ASSERT_EQ(reinterpret_cast<uintptr_t>(b->data()) %
                  std::min<size_t>(capacity, 4096),
              0u);
    ASSERT_TRUE(pool.IsAllocated(b));
    auto keys = registrar_.KeysFor(b->data(), capacity);
    ASSERT_TRUE(keys.has_value()) << "buffer outside every registration";
    ASSERT_EQ(*keys, b->keys());
    uint8_t* data = static_cast<uint8_t*>(b->data());
    for (size_t i = 0; i < capacity; ++i) data[i] = PatternByte(size, i);
  }
  // No buffer overwrote another...
  for (size_t size = 1; size <= max; ++size) {
    const uint8_t* data = static_cast<const uint8_t*>(buffers[size]->data());
    for (size_t i = 0; i < buffers[size]->capacity(); ++i) {
      ASSERT_EQ(data[i], PatternByte(size, i)) << size << " at " << i;
    }
  }
  // ... and the ranges are disjoint.
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (size_t size = 1; size <= max; ++size) {
    uintptr_t begin = reinterpret_cast<uintptr_t>(buffers[size]->data());
    ranges.emplace_back(begin, begin + buffers[size]->capacity());
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    ASSERT_LE(ranges[i - 1].second, ranges[i].first);
  }

  BufferPoolStats stats = pool.Stats();
  EXPECT_EQ(stats.in_use, max);
  EXPECT_EQ(stats.chunks, registrar_.total_registrations())
      << "one registration per chunk";
  EXPECT_EQ(stats.registered_bytes, registrar_.live_bytes());
  ASSERT_EQ(stats.size_classes.size(), 8u);  // 64 B .. 8 KiB.
  EXPECT_EQ(stats.size_classes[0].capacity, 64u);
  EXPECT_EQ(stats.size_classes[0].in_use, 64u);  // Sizes 1..64.
  EXPECT_EQ(stats.size_classes[7].capacity, 8 * kKiB);
  EXPECT_EQ(stats.size_classes[7].in_use, 4 * kKiB);  // Sizes 4097..8192.
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();

  for (size_t size = 1; size <= max; ++size) {
    ASSERT_TRUE(pool.Free(buffers[size]).ok());
    ASSERT_FALSE(pool.IsAllocated(buffers[size]));
    ASSERT_TRUE(pool.Owns(buffers[size]));
  }
  EXPECT_EQ(pool.Stats().in_use, 0u);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
}

TEST_F(BufferPoolTest, ZeroAndOversizeRequestsFail) {
  BufferPool& pool = MakePool();
  EXPECT_EQ(ErrnoFromStatus(pool.Allocate(0).status()), EINVAL);
  EXPECT_EQ(ErrnoFromStatus(pool.Allocate(8 * kKiB + 1).status()), EMSGSIZE);
  EXPECT_EQ(ErrnoFromStatus(pool.Allocate(SIZE_MAX).status()), EMSGSIZE);
  EXPECT_EQ(registrar_.total_registrations(), 0u);
}

TEST_F(BufferPoolTest, LargeAndUnevenMaximums) {
  BufferPoolOptions options;
  options.max_buffer_size = BufferPool::kMaxBufferSizeLimit;
  options.max_pool_bytes = 512 * kMiB;
  BufferPool& pool = MakePool(options);
  for (size_t power = 64; power <= kMiB; power *= 2) {
    for (size_t size : {power - 1, power, power + 1}) {
      if (size > kMiB) continue;
      auto buffer = pool.Allocate(size);
      ASSERT_TRUE(buffer.ok()) << size << ": " << buffer.status();
      EXPECT_EQ((*buffer)->capacity(),
                std::bit_ceil(std::max<size_t>(size, 64)));
      std::memset((*buffer)->data(), 0xa5, (*buffer)->capacity());
      ASSERT_TRUE(pool.Free(*buffer).ok());
    }
  }
  EXPECT_EQ(ErrnoFromStatus(pool.Allocate(kMiB + 1).status()), EMSGSIZE);
  // The 1-MiB class uses chunks of 8 buffers.
  BufferPoolStats stats = pool.Stats();
  ASSERT_EQ(stats.size_classes.size(), 15u);
  EXPECT_EQ(stats.size_classes[14].buffers, 8u);
  EXPECT_EQ(registrar_.live_bytes(), stats.registered_bytes);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();

  FakeRegistrar registrar;
  options.max_buffer_size = 10000;
  auto uneven = BufferPool::Create(&registrar, options);
  ASSERT_TRUE(uneven.ok());
  auto buffer = (*uneven)->Allocate(10000);
  ASSERT_TRUE(buffer.ok());
  EXPECT_EQ((*buffer)->capacity(), 16 * kKiB);
  EXPECT_EQ(ErrnoFromStatus((*uneven)->Allocate(10001).status()), EMSGSIZE);
  EXPECT_EQ((*uneven)->Stats().size_classes.size(), 9u);
  ASSERT_TRUE((*uneven)->Free(*buffer).ok());
  uneven->reset();
  EXPECT_EQ(registrar.Problems(/*expect_all_destroyed=*/true),
            std::vector<std::string>());
}

TEST_F(BufferPoolTest, CapGivesENOMEMAndFreesRecover) {
  BufferPoolOptions options;
  options.max_pool_bytes = 1 * kMiB;  // Four 256-KiB chunks.
  BufferPool& pool = MakePool(options);
  std::vector<PoolBuffer*> held;
  for (;;) {
    auto buffer = pool.Allocate(8 * kKiB);
    if (!buffer.ok()) {
      EXPECT_EQ(ErrnoFromStatus(buffer.status()), ENOMEM) << buffer.status();
      break;
    }
    held.push_back(*buffer);
    ASSERT_LE(held.size(), 128u) << "grew past the cap";
  }
  EXPECT_EQ(held.size(), 128u);  // 4 chunks of 32.
  EXPECT_EQ(pool.Stats().registered_bytes, 1 * kMiB);
  // Another class needs a chunk of its own: also ENOMEM.
  EXPECT_EQ(ErrnoFromStatus(pool.Allocate(100).status()), ENOMEM);
  // Still at the cap: the failures changed nothing.
  EXPECT_EQ(ErrnoFromStatus(pool.Allocate(8 * kKiB).status()), ENOMEM);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();

  ASSERT_TRUE(pool.Free(held.back()).ok());
  held.pop_back();
  auto again = pool.Allocate(5000);
  ASSERT_TRUE(again.ok()) << again.status();
  held.push_back(*again);
  EXPECT_EQ(pool.Stats().chunks, 4u);
  EXPECT_EQ(registrar_.total_registrations(), 4u);
  for (PoolBuffer* buffer : held) ASSERT_TRUE(pool.Free(buffer).ok());
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
}

TEST_F(BufferPoolTest, RegistrationFailureIsENOMEMAndThePoolRecovers) {
  BufferPoolOptions options;
  options.max_pool_bytes = 256 * kKiB;  // Exactly one chunk.
  BufferPool& pool = MakePool(options);
  registrar_.FailNext(2, EFAULT);
  for (int i = 0; i < 2; ++i) {
    auto failed = pool.Allocate(1);
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(ErrnoFromStatus(failed.status()), ENOMEM);
    EXPECT_NE(failed.status().message().find("errno 14"),
              absl::string_view::npos)
        << failed.status();
  }
  EXPECT_EQ(registrar_.failed_registrations(), 2u);
  EXPECT_EQ(pool.Stats().chunks, 0u);
  EXPECT_EQ(pool.Stats().registered_bytes, 0u);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
  // The failed attempts gave their reservation back: the one chunk the cap
  // allows can still be made.
  auto buffer = pool.Allocate(1);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(pool.Stats().chunks, 1u);
  ASSERT_TRUE(pool.Free(*buffer).ok());
}

TEST_F(BufferPoolTest, ChunksAreRegisteredOnceAndBuffersCarryTheirKeys) {
  BufferPool& pool = MakePool();
  const size_t per_chunk = 256 * kKiB / 64;
  std::vector<PoolBuffer*> held;
  for (size_t i = 0; i < 3 * per_chunk; ++i) {
    auto buffer = pool.Allocate(1 + i % 64);
    ASSERT_TRUE(buffer.ok()) << buffer.status();
    held.push_back(*buffer);
  }
  EXPECT_EQ(registrar_.total_registrations(), 3u);
  EXPECT_EQ(pool.Stats().chunks, 3u);
  EXPECT_EQ(pool.Stats().size_classes[0].buffers, 3 * per_chunk);
  // Buffers of one chunk share its keys; chunks have distinct keys.
  std::vector<uint32_t> lkeys;
  for (PoolBuffer* buffer : held) {
    auto keys = registrar_.KeysFor(buffer->data(), buffer->capacity());
    ASSERT_TRUE(keys.has_value());
    ASSERT_EQ(*keys, buffer->keys());
    lkeys.push_back(buffer->keys().lkey);
  }
  std::sort(lkeys.begin(), lkeys.end());
  lkeys.erase(std::unique(lkeys.begin(), lkeys.end()), lkeys.end());
  EXPECT_EQ(lkeys.size(), 3u);
  for (PoolBuffer* buffer : held) ASSERT_TRUE(pool.Free(buffer).ok());
  // Reusing the buffers registers nothing new.
  for (size_t i = 0; i < 3 * per_chunk; ++i) {
    auto buffer = pool.Allocate(64);
    ASSERT_TRUE(buffer.ok());
    held[i] = *buffer;
  }
  EXPECT_EQ(registrar_.total_registrations(), 3u);
  for (PoolBuffer* buffer : held) ASSERT_TRUE(pool.Free(buffer).ok());
}

TEST_F(BufferPoolTest, BadFreesAreRejectedAndChangeNothing) {
  BufferPool& pool = MakePool();
  FakeRegistrar other_registrar;
  auto other = BufferPool::Create(&other_registrar, BufferPoolOptions());
  ASSERT_TRUE(other.ok());

  auto a = pool.Allocate(100);
  auto b = pool.Allocate(100);
  auto foreign = (*other)->Allocate(100);
  ASSERT_TRUE(a.ok() && b.ok() && foreign.ok());
  const BufferPoolStats before = pool.Stats();

  auto expect_rejected = [&](PoolBuffer* bad) {
    EXPECT_FALSE(pool.Owns(bad));
    EXPECT_FALSE(pool.IsAllocated(bad));
    EXPECT_EQ(ErrnoFromStatus(pool.Free(bad)), EINVAL);
  };
  char* a_bytes = reinterpret_cast<char*>(*a);
  expect_rejected(nullptr);
  expect_rejected(*foreign);
  expect_rejected(reinterpret_cast<PoolBuffer*>(a_bytes + 1));
  expect_rejected(reinterpret_cast<PoolBuffer*>(a_bytes + 8));
  expect_rejected(
      reinterpret_cast<PoolBuffer*>(a_bytes + sizeof(PoolBuffer) - 1));
  expect_rejected(static_cast<PoolBuffer*>((*a)->data()));
  alignas(PoolBuffer) char on_stack[sizeof(PoolBuffer)] = {};
  expect_rejected(reinterpret_cast<PoolBuffer*>(on_stack));
  // Just outside the chunk's descriptor array, on either side.
  const size_t per_chunk = 256 * kKiB / 128;
  PoolBuffer* first = *a;  // A fresh chunk hands out its first descriptor.
  expect_rejected(reinterpret_cast<PoolBuffer*>(reinterpret_cast<char*>(first) -
                                                sizeof(PoolBuffer)));
  expect_rejected(reinterpret_cast<PoolBuffer*>(
      reinterpret_cast<char*>(first) + per_chunk * sizeof(PoolBuffer)));
  EXPECT_TRUE(pool.Owns(reinterpret_cast<PoolBuffer*>(
      reinterpret_cast<char*>(first) + (per_chunk - 1) * sizeof(PoolBuffer))));

  const BufferPoolStats after = pool.Stats();
  EXPECT_EQ(after.in_use, before.in_use);
  EXPECT_EQ(after.chunks, before.chunks);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();

  // Double free.
  ASSERT_TRUE(pool.Free(*a).ok());
  EXPECT_TRUE(pool.Owns(*a));
  EXPECT_EQ(ErrnoFromStatus(pool.Free(*a)), EINVAL);
  EXPECT_EQ(pool.Stats().in_use, 1u);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();

  // Still consistent: every buffer of the class comes out exactly once.
  std::vector<PoolBuffer*> all;
  for (size_t i = 0; i + 1 < per_chunk; ++i) {
    auto buffer = pool.Allocate(128);
    ASSERT_TRUE(buffer.ok());
    all.push_back(*buffer);
  }
  all.push_back(*b);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  EXPECT_EQ(pool.Stats().chunks, 1u);
  for (PoolBuffer* buffer : all) ASSERT_TRUE(pool.Free(buffer).ok());
  ASSERT_TRUE((*other)->Free(*foreign).ok());
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
}

// After warm-up, 100k allocate/free cycles (up to 64 buffers held, random
// sizes) create no chunk and make no heap allocation.
// Four threads allocate and free random sizes (100k in all), holding up to
// eight buffers each; a buffer is never handed to two threads at once.
TEST_F(BufferPoolTest, ThreadsNeverShareABuffer) {
  BufferPool& pool = MakePool();
  constexpr int kThreads = 4;
  constexpr size_t kPerThread = 25000;
  constexpr size_t kHeld = 8;
  std::atomic<size_t> errors{0};
  std::atomic<size_t> clobbered{0};
  const size_t max = pool.max_buffer_size();

  auto mark = [](PoolBuffer* buffer, uint64_t tag) {
    char* data = static_cast<char*>(buffer->data());
    std::memcpy(data, &tag, sizeof(tag));
    std::memcpy(data + buffer->capacity() - sizeof(tag), &tag, sizeof(tag));
  };
  auto marked = [](PoolBuffer* buffer, uint64_t tag) {
    const char* data = static_cast<const char*>(buffer->data());
    uint64_t head, tail;
    std::memcpy(&head, data, sizeof(head));
    std::memcpy(&tail, data + buffer->capacity() - sizeof(tail), sizeof(tail));
    return head == tag && tail == tag;
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t tag = 0x7ead000000000000u + static_cast<uint64_t>(t);
      PoolBuffer* held[kHeld] = {};
      uint64_t random = 0x2545f4914f6cdd1du * static_cast<uint64_t>(t + 1);
      for (size_t i = 0; i < kPerThread; ++i) {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        PoolBuffer*& slot = held[i % kHeld];
        if (slot != nullptr) {
          if (!marked(slot, tag)) ++clobbered;
          if (!pool.Free(slot).ok()) ++errors;
          slot = nullptr;
        }
        auto buffer = pool.Allocate(1 + random % max);
        if (!buffer.ok()) {
          ++errors;
          continue;
        }
        slot = *buffer;
        if (!pool.IsAllocated(slot)) ++errors;
        mark(slot, tag);
        std::this_thread::yield();
        if (!marked(slot, tag)) ++clobbered;
      }
      for (PoolBuffer* buffer : held) {
        if (buffer == nullptr) continue;
        if (!marked(buffer, tag)) ++clobbered;
        if (!pool.Free(buffer).ok()) ++errors;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_EQ(clobbered.load(), 0u);
  BufferPoolStats stats = pool.Stats();
  EXPECT_EQ(stats.in_use, 0u);
  EXPECT_EQ(stats.chunks, registrar_.total_registrations());
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
}

TEST_F(BufferPoolTest, DestructionDeregistersEverythingEvenWithBuffersOut) {
  BufferPool& pool = MakePool();
  for (size_t size = 1; size <= pool.max_buffer_size(); size *= 3) {
    ASSERT_TRUE(pool.Allocate(size).ok());  // Never freed.
  }
  EXPECT_GT(registrar_.live_registrations(), 1u);
  EXPECT_EQ(pool.Stats().registered_bytes, registrar_.live_bytes());
  pool_.reset();
  EXPECT_EQ(registrar_.live_registrations(), 0u);
  EXPECT_EQ(registrar_.live_bytes(), 0u);
  // TearDown checks each registration was destroyed exactly once.
}

}  // namespace
}  // namespace demi::rdma
