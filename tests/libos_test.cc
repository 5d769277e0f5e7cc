// The demi_* API end to end on the test device: connections, pushes and pops
// checked byte for byte, end of stream, close, and invalid arguments. All in
// one process (one libOS), client and server on the same rxe address.

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

class LibosTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(demi_init(nullptr), 0);
    EXPECT_EQ(demi_init(nullptr), EEXIST);
  }
};

TEST_F(LibosTest, EchoPingPongEveryByteChecked) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  sockaddr_in peer{};
  socklen_t peer_size = sizeof(peer);
  ASSERT_EQ(
      demi_getpeername(client, reinterpret_cast<sockaddr*>(&peer), &peer_size),
      0);
  std::mt19937 random(42);
  uint64_t bytes = 0;
  constexpr int kMessages = 2000;
  for (int i = 0; i < kMessages; ++i) {
    uint32_t size = 1 + random() % 8192;
    uint32_t segments = 1 + random() % 16;
    demi_qtoken_t push = PushMessage(client, i, size, segments);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    demi_qresult_t request = WaitResult(pop);
    bytes += CheckMessage(request, i, size, segments);
    CompletePush(push);
    // Echo back as message i + kMessages.
    demi_qtoken_t echo = PushMessage(server, i + kMessages, size, segments);
    ASSERT_EQ(demi_pop(&pop, client), 0);
    demi_qresult_t reply = WaitResult(pop);
    bytes += CheckMessage(reply, i + kMessages, size, segments);
    CompletePush(echo);
    if (HasFailure()) break;
  }
  std::printf("echo: %d round trips, %lu bytes verified\n", kMessages,
              static_cast<unsigned long>(bytes));
  EXPECT_EQ(demi_close(client), 0);
  // The server sees end of stream after everything sent before.
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t end = WaitResult(pop);
  EXPECT_EQ(end.qr_opcode, DEMI_OPC_POP);
  EXPECT_EQ(end.qr_value.sga.sga_numsegs, 0u);
  CloseQueues({server, listener});
}

TEST_F(LibosTest, StreamOfPushesArrivesInOrder) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  std::mt19937 random(7);
  constexpr int kMessages = 100000;
  std::vector<uint32_t> sizes(kMessages), segments(kMessages);
  for (int i = 0; i < kMessages; ++i) {
    sizes[i] = 1 + random() % 4096;
    segments[i] = 1 + random() % 16;
  }
  // 100 000 messages of 1..4096 bytes in 1..16 segments; pushes run ahead
  // of pops by up to kWindow messages.
  constexpr int kWindow = 32;
  std::deque<demi_qtoken_t> pushes;
  int pushed = 0, popped = 0;
  uint64_t bytes = 0;
  while (popped < kMessages && !HasFailure()) {
    while (pushed < kMessages && pushed - popped < kWindow) {
      if (pushes.size() == kWindow) {
        CompletePush(pushes.front());
        pushes.pop_front();
      }
      pushes.push_back(
          PushMessage(client, pushed, sizes[pushed], segments[pushed]));
      ++pushed;
    }
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    demi_qresult_t result = WaitResult(pop);
    bytes += CheckMessage(result, popped, sizes[popped], segments[popped]);
    ++popped;
  }
  for (demi_qtoken_t qt : pushes) CompletePush(qt);
  std::printf("stream: %d messages, %lu bytes verified in order\n", kMessages,
              static_cast<unsigned long>(bytes));
  CloseQueues({client, server, listener});
}

TEST_F(LibosTest, StalledConsumerMakesPushesWaitNotFail) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  // The server does not pop: pushes pile up until the library says EAGAIN.
  std::vector<demi_qtoken_t> pushes = PushUntilEagain(client, 1000);
  const int pushed = static_cast<int>(pushes.size());
  ASSERT_GT(pushed, 0);
  // Stalled, not failed: the newest push is still pending after a while.
  demi_qresult_t result{};
  timespec pause{0, 200000000};
  EXPECT_EQ(demi_wait(&result, pushes.back(), &pause), ETIMEDOUT);
  std::printf("stalled after %d pushes\n", pushed);
  // The consumer resumes: every message arrives, and every push completes.
  for (int i = 0; i < pushed; ++i) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    result = WaitResult(pop);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
    ASSERT_EQ(result.qr_value.sga.sga_numsegs, 1u);
    EXPECT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_len, 1000u);
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  for (demi_qtoken_t qt : pushes) CompletePush(qt);
  CloseQueues({client, server, listener});
}

TEST_F(LibosTest, FreeDuringPushIsDeferredUntilThePushCompletes) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  constexpr int kRounds = 300;
  uint64_t bytes = 0;
  for (int i = 0; i < kRounds && !HasFailure(); ++i) {
    // Above the inline limit: a push that goes inline is done (and its
    // memory free) as demi_push returns (push_completion_test).
    const uint32_t size = 1024 + (i * 37) % 7000;
    demi_sgarray_t sga = demi_sgaalloc(size);
    ASSERT_EQ(sga.sga_numsegs, 1u);
    auto* data = static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf);
    for (uint32_t j = 0; j < size; ++j) data[j] = static_cast<uint8_t>(i + j);
    demi_qtoken_t push = 0;
    ASSERT_EQ(demi_push(&push, client, &sga), 0);
    // Free it at once, then take new memory and fill it with other bytes
    // before anyone waits: the pushed bytes must arrive unchanged.
    ASSERT_EQ(demi_sgafree(&sga), 0);
    std::vector<demi_sgarray_t> others;
    for (int k = 0; k < 4; ++k) {
      demi_sgarray_t other = demi_sgaalloc(size);
      ASSERT_EQ(other.sga_numsegs, 1u);
      EXPECT_NE(other.sga_buf, sga.sga_buf) << "freed buffer reused early";
      std::memset(other.sga_segs[0].sgaseg_buf, 0xee, size);
      others.push_back(other);
    }
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    demi_qresult_t result = WaitResult(pop);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
    ASSERT_EQ(result.qr_value.sga.sga_numsegs, 1u);
    ASSERT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_len, size);
    auto* received =
        static_cast<const uint8_t*>(result.qr_value.sga.sga_segs[0].sgaseg_buf);
    for (uint32_t j = 0; j < size; ++j) {
      if (received[j] != static_cast<uint8_t>(i + j)) {
        ADD_FAILURE() << "round " << i << " byte " << j << " is stale";
        break;
      }
    }
    bytes += size;
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
    demi_qresult_t done = WaitResult(push);
    EXPECT_EQ(done.qr_opcode, DEMI_OPC_PUSH);
    // Already freed (the deferred free ran when the push completed).
    EXPECT_EQ(demi_sgafree(&done.qr_value.sga), EINVAL);
    for (demi_sgarray_t& other : others) EXPECT_EQ(demi_sgafree(&other), 0);
  }
  std::printf("free during push: %d rounds, %lu bytes verified\n", kRounds,
              static_cast<unsigned long>(bytes));
  CloseQueues({client, server, listener});
}

// A freed demi_sgaalloc buffer is kept in the freeing thread's stock and
// handed out again by its next demi_sgaalloc of that size class, with no
// lock. While it waits there it is still refused as freed: a second free
// and a push of the stale array are EINVAL; other threads allocate and free
// their own at the same time; a buffer freed by another thread is freed
// once.
TEST_F(LibosTest, FreedBuffersAreReusedByTheirThreadAndStillRefusedAsFreed) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  demi_sgarray_t first = demi_sgaalloc(100);
  ASSERT_EQ(first.sga_numsegs, 1u);
  demi_sgarray_t stale = first;
  ASSERT_EQ(demi_sgafree(&first), 0);
  EXPECT_EQ(demi_sgafree(&stale), EINVAL);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, client, &stale), EINVAL);
  demi_sgarray_t again = demi_sgaalloc(120);  // the same class (128 B)
  ASSERT_EQ(again.sga_numsegs, 1u);
  EXPECT_EQ(again.sga_buf, stale.sga_buf) << "not taken from the stock";
  // Usable again: pushed and received intact.
  std::memset(again.sga_segs[0].sgaseg_buf, 0x5c, 120);
  ASSERT_EQ(demi_push(&qt, client, &again), 0);
  EXPECT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_PUSH);
  ASSERT_EQ(demi_pop(&qt, server), 0);
  demi_qresult_t popped = WaitResult(qt);
  ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
  ASSERT_EQ(popped.qr_value.sga.sga_segs[0].sgaseg_len, 120u);
  EXPECT_EQ(static_cast<const uint8_t*>(
                popped.qr_value.sga.sga_segs[0].sgaseg_buf)[119],
            0x5c);
  EXPECT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
  EXPECT_EQ(demi_sgafree(&again), 0);

  // Threads churning their own stocks at once: every buffer they hold is
  // theirs alone (a pattern written and checked before each free).
  constexpr int kThreads = 3, kRounds = 20000;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &bad] {
      demi_sgarray_t held[4];
      for (int i = 0; i < kRounds; ++i) {
        const uint32_t size = 1 + static_cast<uint32_t>((i * 7 + t) % 600);
        demi_sgarray_t& slot = held[i % 4];
        if (i >= 4) {
          const auto* bytes =
              static_cast<const uint8_t*>(slot.sga_segs[0].sgaseg_buf);
          for (uint32_t j = 0; j < slot.sga_segs[0].sgaseg_len; ++j) {
            if (bytes[j] != static_cast<uint8_t>(t * 31 + i - 4)) ++bad;
          }
          if (demi_sgafree(&slot) != 0) ++bad;
        }
        slot = demi_sgaalloc(size);
        if (slot.sga_numsegs != 1) {
          ++bad;
          return;
        }
        std::memset(slot.sga_segs[0].sgaseg_buf,
                    static_cast<uint8_t>(t * 31 + i), size);
      }
      for (demi_sgarray_t& slot : held) {
        if (demi_sgafree(&slot) != 0) ++bad;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0);

  // A buffer may be freed by a thread other than its allocator's (it joins
  // that thread's stock, given back to the pool when the thread ends), and
  // only once.
  demi_sgarray_t handed = demi_sgaalloc(3000);
  ASSERT_EQ(handed.sga_numsegs, 1u);
  std::thread([&handed] { EXPECT_EQ(demi_sgafree(&handed), 0); }).join();
  EXPECT_EQ(demi_sgafree(&handed), EINVAL);
  CloseQueues({client, server, listener});
}

TEST_F(LibosTest, CloseCancelsPendingPops) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t result{};
  EXPECT_EQ(demi_wait(&result, pop, &kZero), ETIMEDOUT);
  EXPECT_EQ(demi_close(server), 0);
  result = WaitResult(pop);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECANCELED);
  EXPECT_EQ(demi_wait(&result, pop, &kZero), EINVAL);  // consumed
  // The client's pop ends: end of stream from the closed side.
  ASSERT_EQ(demi_pop(&pop, client), 0);
  result = WaitResult(pop);
  EXPECT_TRUE(
      result.qr_opcode == DEMI_OPC_POP ||
      (result.qr_opcode == DEMI_OPC_FAILED && result.qr_ret == ECONNRESET))
      << result.qr_opcode << " " << result.qr_ret;
  CloseQueues({client, listener});
}

TEST_F(LibosTest, CloseCancelsQueuedPushesAndResetsThePeer) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  // Use up the credits and fill the queue: the later pushes are waiting.
  std::vector<demi_qtoken_t> pushes = PushUntilEagain(client, 64);
  EXPECT_EQ(demi_close(client), 0);
  int cancelled = 0, completed = 0;
  for (demi_qtoken_t qt : pushes) {
    demi_qresult_t result = WaitResult(qt);
    if (result.qr_opcode == DEMI_OPC_FAILED) {
      EXPECT_EQ(result.qr_ret, ECANCELED);
      ++cancelled;
    } else {
      EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH);
      ++completed;
    }
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  EXPECT_GT(cancelled, 0);
  // Every push that completed reached the peer; then its pops fail.
  int delivered = 0;
  for (;;) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    demi_qresult_t result = WaitResult(pop);
    if (result.qr_opcode != DEMI_OPC_POP ||
        result.qr_value.sga.sga_numsegs == 0) {
      EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
      EXPECT_EQ(result.qr_ret, ECONNRESET);
      break;
    }
    EXPECT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_len, 64u);
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
    ++delivered;
  }
  EXPECT_EQ(delivered, completed);
  std::printf("close: %d pushes delivered, %d cancelled\n", completed,
              cancelled);
  CloseQueues({server, listener});
}

// Closes `qd` with SO_LINGER on for `seconds`; returns how long the close
// took, in seconds.
double CloseLingering(int qd, int seconds) {
  const linger option = {1, seconds};
  EXPECT_EQ(demi_setsockopt(qd, SOL_SOCKET, SO_LINGER, &option, sizeof(option)),
            0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(demi_close(qd), 0);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

// SO_LINGER on: demi_close waits until what was pushed (including pushes
// still waiting for credits) and the end of stream are acknowledged, so a
// program may exit right after it. Here the peer pops from another thread.
TEST_F(LibosTest, LingeringCloseDeliversQueuedPushesThenEndOfStream) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  std::vector<demi_qtoken_t> pushes = PushUntilEagain(client, 64);
  const int pushed = static_cast<int>(pushes.size());
  ASSERT_GT(pushed, 0);
  std::atomic<int> popped{0};
  std::atomic<bool> ended{false};
  std::thread consumer([&] {
    // Starts popping only once the close is under way.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (;;) {
      demi_qtoken_t pop = 0;
      if (demi_pop(&pop, server) != 0) return;
      demi_qresult_t result = WaitResult(pop);
      if (result.qr_opcode != DEMI_OPC_POP) return;
      if (result.qr_value.sga.sga_numsegs == 0) {
        ended = true;
        return;
      }
      (void)demi_sgafree(&result.qr_value.sga);
      ++popped;
    }
  });
  const double took = CloseLingering(client, 30);
  consumer.join();
  EXPECT_TRUE(ended);
  EXPECT_EQ(popped, pushed);
  EXPECT_LT(took, 20.0);  // returned when acknowledged, not at the limit
  for (demi_qtoken_t qt : pushes) {
    demi_qresult_t result = WaitResult(qt);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH) << result.qr_ret;
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  std::printf(
      "lingering close: %d pushes delivered, then end of stream, "
      "in %.3f s\n",
      pushed, took);
  CloseQueues({server, listener});
}

// A lingering close whose pushes never get credits gives up after its time:
// what waited is cancelled and the peer is reset.
TEST_F(LibosTest, LingeringCloseGivesUpAfterItsTime) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  std::vector<demi_qtoken_t> pushes = PushUntilEagain(client, 64);
  const double took = CloseLingering(client, 1);
  EXPECT_GE(took, 0.9);
  EXPECT_LT(took, 10.0);
  int cancelled = 0;
  for (demi_qtoken_t qt : pushes) {
    demi_qresult_t result = WaitResult(qt);
    if (result.qr_opcode == DEMI_OPC_FAILED) {
      EXPECT_EQ(result.qr_ret, ECANCELED);
      ++cancelled;
    }
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  EXPECT_GT(cancelled, 0);
  for (;;) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    demi_qresult_t result = WaitResult(pop);
    if (result.qr_opcode != DEMI_OPC_POP) {
      EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
      EXPECT_EQ(result.qr_ret, ECONNRESET);
      break;
    }
    ASSERT_GT(result.qr_value.sga.sga_numsegs, 0u)
        << "end of stream, not a reset";
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  }
  CloseQueues({server, listener});
}

// SO_LINGER on with time 0: an abortive close; the peer is reset even with
// nothing queued.
TEST_F(LibosTest, LingerZeroResetsThePeer) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  const linger option = {1, 0};
  ASSERT_EQ(
      demi_setsockopt(client, SOL_SOCKET, SO_LINGER, &option, sizeof(option)),
      0);
  EXPECT_EQ(demi_close(client), 0);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t result = WaitResult(pop);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNRESET);
  CloseQueues({server, listener});
}

TEST_F(LibosTest, ConnectToNobodyIsRefused) {
  absl::StatusOr<sockaddr_in> address = RdmaTestAddress(9);
  ASSERT_TRUE(address.ok());
  int qd = -1;
  ASSERT_EQ(demi_socket(&qd, AF_INET, SOCK_STREAM, 0), 0);
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_connect(&qt, qd, reinterpret_cast<sockaddr*>(&*address),
                         sizeof(*address)),
            0);
  demi_qresult_t result = WaitResult(qt);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_TRUE(result.qr_ret == ECONNREFUSED || result.qr_ret == ETIMEDOUT)
      << result.qr_ret;
  EXPECT_EQ(demi_close(qd), 0);
}

TEST_F(LibosTest, InvalidArguments) {
  int qd = -1;
  demi_qtoken_t qt = 0;
  demi_qresult_t result{};
  EXPECT_EQ(demi_socket(&qd, AF_INET6, SOCK_STREAM, 0), ENOTSUP);
  EXPECT_EQ(demi_socket(&qd, AF_INET, SOCK_RAW, 0), ENOTSUP);
  EXPECT_EQ(demi_socket(nullptr, AF_INET, SOCK_STREAM, 0), EINVAL);
  EXPECT_EQ(demi_close(12345), EBADF);
  EXPECT_EQ(demi_pop(&qt, 12345), EBADF);
  EXPECT_EQ(demi_listen(12345, 1), EBADF);
  EXPECT_EQ(demi_accept(&qt, 12345), EBADF);

  ASSERT_EQ(demi_socket(&qd, AF_INET, SOCK_STREAM, 0), 0);
  EXPECT_EQ(demi_listen(qd, 4), EDESTADDRREQ);
  EXPECT_EQ(demi_listen(qd, 0), EINVAL);
  EXPECT_EQ(demi_accept(&qt, qd), EINVAL);
  EXPECT_EQ(demi_bind(qd, nullptr, sizeof(sockaddr_in)), EINVAL);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  EXPECT_EQ(demi_bind(qd, reinterpret_cast<sockaddr*>(&address), 3), EINVAL);
  EXPECT_EQ(demi_connect(&qt, qd, nullptr, sizeof(address)), EINVAL);
  EXPECT_EQ(demi_pop(&qt, qd), ENOTCONN);
  sockaddr_in peer{};
  socklen_t peer_size = sizeof(peer);
  EXPECT_EQ(
      demi_getpeername(qd, reinterpret_cast<sockaddr*>(&peer), &peer_size),
      ENOTCONN);
  linger option{1, 5};
  EXPECT_EQ(demi_setsockopt(qd, SOL_SOCKET, SO_LINGER, &option, sizeof(option)),
            0);
  linger read_back{};
  socklen_t size = sizeof(read_back);
  EXPECT_EQ(demi_getsockopt(qd, SOL_SOCKET, SO_LINGER, &read_back, &size), 0);
  EXPECT_EQ(read_back.l_linger, 5);
  EXPECT_EQ(demi_setsockopt(qd, SOL_SOCKET, SO_LINGER, &option, 1), EINVAL);
  EXPECT_EQ(demi_setsockopt(qd, SOL_SOCKET, SO_RCVBUF, &option, 4),
            ENOPROTOOPT);
  EXPECT_EQ(demi_setsockopt(qd, IPPROTO_TCP, 1, &option, 4), ENOTSUP);

  // Scatter-gather arrays.
  demi_sgarray_t sga = demi_sgaalloc(100);
  ASSERT_EQ(sga.sga_numsegs, 1u);
  EXPECT_EQ(demi_push(&qt, qd, nullptr), EINVAL);
  demi_sgarray_t bad = sga;
  bad.sga_numsegs = 0;
  EXPECT_EQ(demi_push(&qt, qd, &bad), EINVAL);
  bad.sga_numsegs = DEMI_SGARRAY_MAXSIZE + 1;
  EXPECT_EQ(demi_push(&qt, qd, &bad), EINVAL);
  bad = sga;
  bad.sga_buf = nullptr;  // application memory: fine, but not connected
  EXPECT_EQ(demi_push(&qt, qd, &bad), ENOTCONN);
  bad = sga;
  bad.sga_segs[0].sgaseg_len = 0;
  EXPECT_EQ(demi_push(&qt, qd, &bad), EINVAL);
  bad = sga;
  bad.sga_segs[0].sgaseg_buf = nullptr;
  EXPECT_EQ(demi_push(&qt, qd, &bad), EINVAL);
  bad = sga;
  bad.sga_buf = &address;  // neither NULL nor from demi_sgaalloc
  EXPECT_EQ(demi_push(&qt, qd, &bad), EINVAL);
  EXPECT_EQ(demi_push(&qt, qd, &sga), ENOTCONN);
  EXPECT_EQ(demi_sgaalloc(0).sga_numsegs, 0u);
  EXPECT_EQ(demi_sgaalloc(size_t{5} << 30).sga_numsegs, 0u);  // > 32 bits
  EXPECT_EQ(demi_sgafree(nullptr), EINVAL);
  bad = sga;
  bad.sga_buf = &address;
  EXPECT_EQ(demi_sgafree(&bad), EINVAL);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  EXPECT_EQ(demi_sgafree(&sga), EINVAL);  // double free

  // Waits.
  EXPECT_EQ(demi_wait(&result, 0, &kZero), EINVAL);
  EXPECT_EQ(demi_wait(&result, 0xdeadbeef, &kZero), EINVAL);
  EXPECT_EQ(demi_wait(nullptr, 1, &kZero), EINVAL);
  timespec negative{-1, 0};
  EXPECT_EQ(demi_wait(&result, 1, &negative), EINVAL);
  int offset = -1;
  demi_qtoken_t tokens[1] = {0};
  EXPECT_EQ(demi_wait_any(&result, &offset, tokens, 0, &kZero), EINVAL);
  EXPECT_EQ(demi_wait_any(&result, &offset, tokens, 1, &kZero), EINVAL);
  EXPECT_EQ(demi_wait_any(&result, &offset, nullptr, 1, &kZero), EINVAL);
  int count = 0;
  EXPECT_EQ(demi_wait_next_n(&result, 0, &count, &kZero), EINVAL);
  // pushto on a stream socket checks the address (datagram_test has more).
  EXPECT_EQ(demi_pushto(&qt, qd, &sga, nullptr, 0), EINVAL);
  EXPECT_EQ(demi_close(qd), 0);
  EXPECT_EQ(demi_close(qd), EBADF);
}

}  // namespace
}  // namespace demi::testing
