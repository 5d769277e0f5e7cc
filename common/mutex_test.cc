#include "common/mutex.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace demi {
namespace {

TEST(MutexTest, TryLockSeesTheHolder) {
  Mutex mu;
  ASSERT_TRUE(mu.TryLock());
  EXPECT_FALSE(mu.TryLock());
  mu.Unlock();
  EXPECT_TRUE(mu.TryLock());
  mu.Unlock();
}

// Threads incrementing a plain counter under the lock lose no increment,
// through the spinning and the sleeping paths alike.
TEST(MutexTest, ExcludesUnderContention) {
  Mutex mu;
  uint64_t counter = 0;
  constexpr int kThreads = 4;
  constexpr int kIncrements = 200000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        MutexLock lock(&mu);
        ++counter;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter, uint64_t{kThreads} * kIncrements);
}

// A waiter that went to sleep (the holder keeps the lock far longer than
// the spin) is woken by the unlock and then sees the holder's writes.
TEST(MutexTest, SleeperIsWokenAndSeesTheWrites) {
  Mutex mu;
  int value = 0;
  std::atomic<bool> waiting{false};
  mu.Lock();
  std::thread waiter([&] {
    waiting = true;
    MutexLock lock(&mu);
    EXPECT_EQ(value, 42);
    value = 43;
  });
  while (!waiting) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  value = 42;
  mu.Unlock();
  waiter.join();
  MutexLock lock(&mu);
  EXPECT_EQ(value, 43);
}

}  // namespace
}  // namespace demi
