// The demi_* API with many connections, several threads and the wait
// variants: 64 connections at once, 4 threads on 4 connections, threads on
// workers of their own and a popped array relayed between workers, wait_any
// fairness, wait_next_n, and timeouts that leave tokens valid.

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "libos/qd_table.h"
#include "libos/token_table.h"
#include "tests/libos_test_util.h"

namespace demi::testing {
namespace {

struct Pair {
  int client = -1, server = -1, listener = -1;
};

class LibosConcurrencyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }

  static void Close(const Pair& pair) {
    CloseQueues({pair.client, pair.server, pair.listener});
  }
};

TEST_F(LibosConcurrencyTest, SixtyFourConnectionsAtOnce) {
  constexpr int kPairs = 64, kMessages = 10;
  std::vector<Pair> pairs(kPairs);
  for (Pair& pair : pairs) {
    ASSERT_NO_FATAL_FAILURE(
        ConnectPair(&pair.client, &pair.server, &pair.listener));
  }
  std::vector<demi_qtoken_t> pushes;
  for (int m = 0; m < kMessages; ++m) {
    for (int p = 0; p < kPairs; ++p) {
      pushes.push_back(PushMessage(pairs[p].client, p * 1000 + m, 100 + p, 3));
    }
  }
  // One pop per server at a time, collected with wait_any.
  std::vector<demi_qtoken_t> pops(kPairs);
  std::vector<int> received(kPairs, 0);
  for (int p = 0; p < kPairs; ++p)
    ASSERT_EQ(demi_pop(&pops[p], pairs[p].server), 0);
  uint64_t bytes = 0;
  for (int done = 0; done < kPairs * kMessages; ++done) {
    demi_qresult_t result{};
    int p = -1;
    ASSERT_EQ(demi_wait_any(&result, &p, pops.data(), kPairs, &kTenSeconds), 0);
    ASSERT_GE(p, 0);
    ASSERT_LT(p, kPairs);
    bytes += CheckMessage(result, p * 1000 + received[p], 100 + p, 3);
    if (++received[p] < kMessages) {
      ASSERT_EQ(demi_pop(&pops[p], pairs[p].server), 0);
    } else {
      // Park the slot on a token that never completes: this pair is done.
      ASSERT_EQ(demi_pop(&pops[p], pairs[p].server), 0);
    }
  }
  for (int p = 0; p < kPairs; ++p) EXPECT_EQ(received[p], kMessages);
  for (demi_qtoken_t qt : pushes) CompletePush(qt);
  std::printf("64 connections: %d messages, %lu bytes verified\n",
              kPairs * kMessages, static_cast<unsigned long>(bytes));
  for (const Pair& pair : pairs) Close(pair);
}

TEST_F(LibosConcurrencyTest, FourThreadsOnFourConnections) {
  constexpr int kThreads = 4, kRoundTrips = 300;
  std::vector<Pair> pairs(kThreads);
  for (Pair& pair : pairs) {
    ASSERT_NO_FATAL_FAILURE(
        ConnectPair(&pair.client, &pair.server, &pair.listener));
  }
  std::atomic<uint64_t> bytes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const Pair& pair = pairs[t];
      for (int i = 0; i < kRoundTrips; ++i) {
        uint32_t size = 1 + (t * 7919 + i * 104729) % 8000;
        uint64_t index = t * 1000000 + i;
        demi_qtoken_t push = PushMessage(pair.client, index, size, 1 + i % 16);
        demi_qtoken_t pop = 0;
        ASSERT_EQ(demi_pop(&pop, pair.server), 0);
        demi_qresult_t request = WaitResult(pop);
        bytes += CheckMessage(request, index, size, 1 + i % 16);
        CompletePush(push);
        demi_qtoken_t reply = PushMessage(pair.server, index + 1, size, 2);
        ASSERT_EQ(demi_pop(&pop, pair.client), 0);
        demi_qresult_t response = WaitResult(pop);
        bytes += CheckMessage(response, index + 1, size, 2);
        CompletePush(reply);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::printf("4 threads: %d round trips, %lu bytes verified\n",
              kThreads * kRoundTrips, static_cast<unsigned long>(bytes.load()));
  for (const Pair& pair : pairs) Close(pair);
}

// Each thread makes its own connections: they land in its own worker (the
// worker field of their qds and of their tokens differs), and the threads'
// round trips all arrive intact while both run at once.
TEST_F(LibosConcurrencyTest, ThreadsThatMakeTheirOwnQueuesGetTheirOwnWorker) {
  constexpr int kThreads = 2, kRoundTrips = 500;
  std::vector<Pair> pairs(kThreads);
  std::vector<uint32_t> token_workers(kThreads, 0);
  std::atomic<int> connected{0};
  std::atomic<uint64_t> bytes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Pair& pair = pairs[t];
      ASSERT_NO_FATAL_FAILURE(
          ConnectPair(&pair.client, &pair.server, &pair.listener));
      // Both connected before either starts: the round trips overlap.
      connected.fetch_add(1);
      while (connected.load() < kThreads) std::this_thread::yield();
      for (int i = 0; i < kRoundTrips; ++i) {
        const uint32_t size = 1 + (t * 7919 + i * 104729) % 2000;
        const uint64_t index = t * 1000000 + i;
        demi_qtoken_t pop = 0;
        ASSERT_EQ(demi_pop(&pop, pair.server), 0);
        if (i == 0) token_workers[t] = libos::TokenTable::TagOf(pop);
        demi_qtoken_t push = PushMessage(pair.client, index, size, 1 + i % 4);
        demi_qresult_t request = WaitResult(pop);
        bytes += CheckMessage(request, index, size, 1 + i % 4);
        CompletePush(push);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const Pair& pair : pairs) {
    EXPECT_EQ(libos::QdWorker(pair.client), libos::QdWorker(pair.server));
    EXPECT_EQ(libos::QdWorker(pair.client), libos::QdWorker(pair.listener));
  }
  EXPECT_NE(libos::QdWorker(pairs[0].client), libos::QdWorker(pairs[1].client));
  EXPECT_EQ(token_workers[0], libos::QdWorker(pairs[0].server));
  EXPECT_EQ(token_workers[1], libos::QdWorker(pairs[1].server));
  uint64_t expected = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kRoundTrips; ++i) {
      expected += 1 + (t * 7919 + i * 104729) % 2000;
    }
  }
  EXPECT_EQ(bytes.load(), expected);
  std::printf("2 threads on their own workers: %d round trips, %lu bytes\n",
              kThreads * kRoundTrips, static_cast<unsigned long>(bytes.load()));
  for (const Pair& pair : pairs) Close(pair);
}

// A popped array of a connection on one worker, pushed on a connection of
// another worker and freed at once: the push pins its buffer, and when it
// completes (on the other worker) the buffer goes back to its own
// connection. Far more messages than the connection has receive buffers go
// this way, so a buffer that did not come back would stall it.
TEST_F(LibosConcurrencyTest, APoppedArrayRelayedToAnotherWorkerComesBack) {
  constexpr int kMessages = 400;  // several times the receive buffers
  Pair first, second;
  // `second` is made on another thread, so on another worker.
  std::thread maker([&] {
    ASSERT_NO_FATAL_FAILURE(
        ConnectPair(&second.client, &second.server, &second.listener));
  });
  maker.join();
  ASSERT_NO_FATAL_FAILURE(
      ConnectPair(&first.client, &first.server, &first.listener));
  ASSERT_NE(libos::QdWorker(first.server), libos::QdWorker(second.client));
  uint64_t bytes = 0;
  for (int i = 0; i < kMessages; ++i) {
    const uint32_t size = 100 + (i * 37) % 3000;
    demi_qtoken_t push = PushMessage(first.client, i, size, 1);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, first.server), 0);
    demi_qresult_t popped = WaitResult(pop);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP) << popped.qr_ret;
    // Relay it on the other worker's connection, and free it at once.
    demi_qtoken_t relay = 0;
    ASSERT_EQ(demi_push(&relay, second.client, &popped.qr_value.sga), 0);
    ASSERT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
    EXPECT_EQ(demi_sgafree(&popped.qr_value.sga), EINVAL);  // freed once
    ASSERT_EQ(demi_pop(&pop, second.server), 0);
    demi_qresult_t relayed = WaitResult(pop);
    bytes += CheckMessage(relayed, i, size, 1);
    demi_qresult_t done = WaitResult(relay);
    EXPECT_EQ(done.qr_opcode, DEMI_OPC_PUSH) << done.qr_ret;
    CompletePush(push);
  }
  std::printf("relayed across workers: %d messages, %lu bytes verified\n",
              kMessages, static_cast<unsigned long>(bytes));
  Close(first);
  Close(second);
}

TEST_F(LibosConcurrencyTest, WaitAnyDoesNotStarveLaterTokens) {
  Pair busy, quiet;
  ASSERT_NO_FATAL_FAILURE(
      ConnectPair(&busy.client, &busy.server, &busy.listener));
  ASSERT_NO_FATAL_FAILURE(
      ConnectPair(&quiet.client, &quiet.server, &quiet.listener));
  std::vector<demi_qtoken_t> pushes;
  for (int i = 0; i < 20; ++i)
    pushes.push_back(PushMessage(busy.client, i, 64, 1));
  pushes.push_back(PushMessage(quiet.client, 999, 64, 1));
  for (demi_qtoken_t qt : pushes) CompletePush(qt);  // all delivered now
  demi_qtoken_t tokens[2];
  ASSERT_EQ(demi_pop(&tokens[0], busy.server), 0);
  ASSERT_EQ(demi_pop(&tokens[1], quiet.server), 0);
  int busy_seen = 0;
  bool quiet_seen = false;
  for (int call = 0; call < 3 && !quiet_seen; ++call) {
    demi_qresult_t result{};
    int index = -1;
    ASSERT_EQ(demi_wait_any(&result, &index, tokens, 2, &kTenSeconds), 0);
    if (index == 1) {
      quiet_seen = true;
      CheckMessage(result, 999, 64, 1);
    } else {
      CheckMessage(result, busy_seen++, 64, 1);
      ASSERT_EQ(demi_pop(&tokens[0], busy.server), 0);  // ready again at once
    }
  }
  EXPECT_TRUE(quiet_seen) << "wait_any kept returning the first token";
  EXPECT_LE(busy_seen, 1);
  Close(busy);
  Close(quiet);
}

TEST_F(LibosConcurrencyTest, WaitNextNReturnsEveryResultOnce) {
  // wait_next_n is process-wide: first take what earlier tests left
  // (operations cancelled by their closes, pops they never waited for).
  demi_qresult_t leftovers[16];
  int left = 0;
  while (demi_wait_next_n(leftovers, 16, &left, &kZero) == 0) {
    for (int i = 0; i < left; ++i) {
      if (leftovers[i].qr_opcode == DEMI_OPC_POP &&
          leftovers[i].qr_value.sga.sga_numsegs > 0) {
        EXPECT_EQ(demi_sgafree(&leftovers[i].qr_value.sga), 0);
      }
    }
  }
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(
      ConnectPair(&pair.client, &pair.server, &pair.listener));
  std::set<demi_qtoken_t> expected;
  for (int i = 0; i < 5; ++i) {
    expected.insert(PushMessage(pair.client, i, 32, 1));
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, pair.server), 0);
    expected.insert(pop);
  }
  std::set<demi_qtoken_t> seen;
  int pops = 0;
  while (seen.size() < expected.size()) {
    demi_qresult_t results[4];
    int count = 0;
    ASSERT_EQ(demi_wait_next_n(results, 4, &count, &kTenSeconds), 0);
    ASSERT_GE(count, 1);
    ASSERT_LE(count, 4);
    for (int i = 0; i < count; ++i) {
      EXPECT_TRUE(expected.contains(results[i].qr_qt));
      EXPECT_TRUE(seen.insert(results[i].qr_qt).second) << "returned twice";
      if (results[i].qr_opcode == DEMI_OPC_POP) {
        CheckMessage(results[i], pops++, 32, 1);  // pops complete in order
      } else {
        EXPECT_EQ(results[i].qr_opcode, DEMI_OPC_PUSH);
        EXPECT_EQ(demi_sgafree(&results[i].qr_value.sga), 0);
      }
    }
  }
  demi_qresult_t result{};
  int count = 0;
  timespec short_wait{0, 20000000};
  EXPECT_EQ(demi_wait_next_n(&result, 1, &count, &short_wait), ETIMEDOUT);
  Close(pair);
}

TEST_F(LibosConcurrencyTest, TimeoutKeepsTheTokenValid) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(
      ConnectPair(&pair.client, &pair.server, &pair.listener));
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, pair.server), 0);
  demi_qresult_t result{};
  timespec fifty_ms{0, 50000000};
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(demi_wait(&result, pop, &fifty_ms), ETIMEDOUT);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(50));
  EXPECT_LT(elapsed, std::chrono::seconds(2));
  CompletePush(PushMessage(pair.client, 77, 10, 2));
  result = WaitResult(pop);  // the same token, still valid
  CheckMessage(result, 77, 10, 2);
  Close(pair);
}

}  // namespace
}  // namespace demi::testing
