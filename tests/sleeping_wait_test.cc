// Waits that sleep: once a wait has polled for its spin budget (DEMI_SPIN_US,
// default 1 ms) it sleeps on its worker's completion and rdma_cm channels.
// These tests check that a sleeping wait costs (almost) no CPU, that every
// kind of completion wakes it, that two threads asleep on one worker each
// get their own result, and that DEMI_SPIN_US is checked at demi_init.
//
// The waiter's peer is another thread (so another worker) that acts only
// after kPause, long after the waiter has gone to sleep.

#include <arpa/inet.h>
#include <demi/event.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

constexpr auto kPause = std::chrono::milliseconds(200);

double ThreadCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) /
             1e6;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

// Runs `body` in a child process with DEMI_SPIN_US=`spin` (its own libOS);
// returns the child's exit status (0: body passed).
int InChild(const char* spin, int (*body)()) {
  pid_t child = fork();
  if (child == 0) {
    setenv("DEMI_SPIN_US", spin, 1);
    _exit(body());
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// Child bodies (no gtest in the child: exit codes say what failed).
int InitOnly() { return demi_init(nullptr); }

int PingPongWithoutSpinning() {
  if (demi_init(nullptr) != 0) return 1;
  int client, server, listener;
  ConnectPair(&client, &server, &listener);
  for (uint64_t i = 0; i < 200; ++i) {
    demi_qtoken_t push = PushMessage(client, i, 64 + i, 1);
    demi_qtoken_t pop = 0;
    if (push == 0 || demi_pop(&pop, server) != 0) return 2;
    demi_qresult_t popped{};
    if (demi_wait(&popped, pop, &kTenSeconds) != 0) return 3;
    if (popped.qr_opcode != DEMI_OPC_POP ||
        popped.qr_value.sga.sga_segs[0].sgaseg_len != 64 + i) {
      return 4;
    }
    demi_sgafree(&popped.qr_value.sga);
    demi_qresult_t pushed{};
    if (demi_wait(&pushed, push, &kTenSeconds) != 0) return 5;
    demi_sgafree(&pushed.qr_value.sga);
  }
  return 0;
}

// First in the file: the children start their libOS before this process
// has one.
TEST(SleepingWaitSettingTest, DemiInitChecksSpinMicros) {
  EXPECT_EQ(InChild("abc", InitOnly), EINVAL);
  EXPECT_EQ(InChild("12us", InitOnly), EINVAL);
  EXPECT_EQ(InChild("", InitOnly), EINVAL);
  EXPECT_EQ(InChild("50", InitOnly), 0);
  EXPECT_EQ(InChild("inf", InitOnly), 0);
  EXPECT_EQ(InChild("-1", InitOnly), 0);
  // 0: every wait sleeps as soon as a round finds nothing.
  EXPECT_EQ(InChild("0", PingPongWithoutSpinning), 0);
}

class SleepingWaitTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    unsetenv("DEMI_SPIN_US");  // the default budget
    ASSERT_EQ(demi_init(nullptr), 0);
  }

  // Waits for `qt` from this thread, expecting it to sleep; returns the
  // result and checks the wait ended within `limit` seconds.
  static demi_qresult_t SleepFor(demi_qtoken_t qt, double limit = 5.0) {
    const auto start = std::chrono::steady_clock::now();
    demi_qresult_t result = WaitResult(qt);
    EXPECT_LT(SecondsSince(start), limit);
    return result;
  }
};

TEST_F(SleepingWaitTest, AnIdleWaitBurnsNoCpuAndTimesOutOnTime) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server), 0);
  const double cpu_before = ThreadCpuSeconds();
  const auto start = std::chrono::steady_clock::now();
  demi_qresult_t result{};
  const timespec two_seconds = {2, 0};
  EXPECT_EQ(demi_wait(&result, pop, &two_seconds), ETIMEDOUT);
  const double elapsed = SecondsSince(start);
  const double cpu = ThreadCpuSeconds() - cpu_before;
  std::printf("idle 2 s wait: %.3f s elapsed, %.4f s CPU (%.2f%% of a core)\n",
              elapsed, cpu, 100 * cpu / elapsed);
  EXPECT_GE(elapsed, 1.99);
  EXPECT_LT(elapsed, 2.5);
  EXPECT_LT(cpu, 0.02 * elapsed);  // today 100% when spinning
  // The pop is still pending and completes when a message comes.
  std::thread peer([client] {
    std::this_thread::sleep_for(kPause);
    demi_qtoken_t push = PushMessage(client, 7, 300, 2);
    CompletePush(push);
  });
  result = SleepFor(pop);
  peer.join();
  CheckMessage(result, 7, 300, 2);
  CloseQueues({client, server, listener});
}

// The peer thread's queues are its own worker's; the waiter's are this
// thread's.
TEST_F(SleepingWaitTest, AcceptConnectPopAndPushEachWakeASleeper) {
  sockaddr_in address{};
  const int listener = ListenOnTestAddress(&address);
  demi_qtoken_t accept = 0;
  ASSERT_EQ(demi_accept(&accept, listener), 0);
  std::atomic<int> peer_qd{-1};
  std::thread connecter([&] {
    std::this_thread::sleep_for(kPause);
    int qd = -1;
    ASSERT_NO_FATAL_FAILURE(Connect(address, &qd));
    peer_qd = qd;
  });
  demi_qresult_t accepted = SleepFor(accept);  // an rdma_cm event
  connecter.join();
  ASSERT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT);
  const int server = accepted.qr_value.ares.qd;
  const int client = peer_qd;

  // A small pop and a rendezvous (1 MiB) pop.
  for (uint32_t size : {100u, 1u << 20}) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server), 0);
    std::thread pusher([&] {
      std::this_thread::sleep_for(kPause);
      CompletePush(PushMessage(client, size, size, 1));
    });
    demi_qresult_t popped = SleepFor(pop);
    pusher.join();
    EXPECT_EQ(CheckMessage(popped, size, size, 1), size);
  }

  // A rendezvous push completes when the peer has read it: the pusher
  // sleeps until the peer pops, long after.
  demi_qtoken_t push = PushMessage(server, 9, 1 << 20, 1);
  ASSERT_NE(push, 0u);
  std::thread popper([&] {
    std::this_thread::sleep_for(kPause);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, client), 0);
    demi_qresult_t popped = WaitResult(pop);
    EXPECT_EQ(CheckMessage(popped, 9, 1 << 20, 1), 1u << 20);
  });
  demi_qresult_t pushed = SleepFor(push);
  popper.join();
  EXPECT_EQ(pushed.qr_opcode, DEMI_OPC_PUSH);
  demi_sgafree(&pushed.qr_value.sga);
  CloseQueues({client, server, listener});
}

TEST_F(SleepingWaitTest, ARefusedConnectWakesTheSleeper) {
  sockaddr_in address = NextTestAddress();
  int qd = -1;
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_socket(&qd, AF_INET, SOCK_STREAM, 0), 0);
  ASSERT_EQ(demi_connect(&qt, qd, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address)),
            0);
  demi_qresult_t result = SleepFor(qt);  // nobody listens there
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNREFUSED);
  EXPECT_EQ(demi_close(qd), 0);
}

TEST_F(SleepingWaitTest, ADatagramWakesTheSleeper) {
  sockaddr_in to = NextTestAddress();
  const sockaddr_in from_address = NextTestAddress();
  int receiver = -1;
  ASSERT_EQ(demi_socket(&receiver, AF_INET, SOCK_DGRAM, 0), 0);
  ASSERT_EQ(demi_bind(receiver, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
            0);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, receiver), 0);
  std::thread sender([&] {
    sockaddr_in from = from_address;
    int qd = -1;
    ASSERT_EQ(demi_socket(&qd, AF_INET, SOCK_DGRAM, 0), 0);
    ASSERT_EQ(demi_bind(qd, reinterpret_cast<sockaddr*>(&from), sizeof(from)),
              0);
    std::this_thread::sleep_for(kPause);
    demi_sgarray_t sga = demi_sgaalloc(200);
    ASSERT_EQ(sga.sga_numsegs, 1u);
    std::memset(sga.sga_segs[0].sgaseg_buf, 0x5a, 200);
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pushto(&qt, qd, &sga, reinterpret_cast<sockaddr*>(&to),
                          sizeof(to)),
              0);
    demi_qresult_t pushed = WaitResult(qt);
    EXPECT_EQ(pushed.qr_opcode, DEMI_OPC_PUSH);
    demi_sgafree(&sga);
    EXPECT_EQ(demi_close(qd), 0);
  });
  demi_qresult_t popped = SleepFor(pop);
  sender.join();
  ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
  ASSERT_EQ(popped.qr_value.sga.sga_segs[0].sgaseg_len, 200u);
  EXPECT_EQ(
      static_cast<uint8_t*>(popped.qr_value.sga.sga_segs[0].sgaseg_buf)[0],
      0x5a);
  demi_sgafree(&popped.qr_value.sga);
  EXPECT_EQ(demi_close(receiver), 0);
}

// Two threads asleep on two queues of one worker (made by this thread):
// one sleeps in epoll, the other on the futex word; each must wake for its
// own message, whichever comes first.
TEST_F(SleepingWaitTest, TwoThreadsAsleepOnOneWorkerEachGetTheirOwn) {
  int client1, server1, listener1, client2, server2, listener2;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client1, &server1, &listener1));
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client2, &server2, &listener2));
  for (int round = 0; round < 3; ++round) {
    demi_qresult_t got1{}, got2{};
    std::thread waiter1([&] {
      demi_qtoken_t pop = 0;
      ASSERT_EQ(demi_pop(&pop, server1), 0);
      got1 = SleepFor(pop);
    });
    std::thread waiter2([&] {
      demi_qtoken_t pop = 0;
      ASSERT_EQ(demi_pop(&pop, server2), 0);
      got2 = SleepFor(pop);
    });
    std::this_thread::sleep_for(kPause);  // both asleep by now
    // Alternate which queue gets its message first.
    const int first = round % 2 == 0 ? client2 : client1;
    const int second = round % 2 == 0 ? client1 : client2;
    CompletePush(PushMessage(first, 100 + round, 500, 1));
    std::this_thread::sleep_for(kPause);
    CompletePush(PushMessage(second, 100 + round, 500, 1));
    waiter1.join();
    waiter2.join();
    EXPECT_EQ(CheckMessage(got1, 100 + round, 500, 1), 500u);
    EXPECT_EQ(CheckMessage(got2, 100 + round, 500, 1), 500u);
  }
  CloseQueues({client1, server1, listener1, client2, server2, listener2});
}

// demi_event_fd in an application's own epoll loop, beside a pipe: the loop
// accepts a connection and pops kMessages messages, all through the event
// descriptor, while the peer thread writes a byte to the pipe before each
// message. The loop sleeps in epoll_wait only (never in demi_wait) and must
// not spin: a descriptor left readable would make it go round thousands of
// times.
TEST_F(SleepingWaitTest, TheEventDescriptorDrivesAnEpollLoopBesideAPipe) {
  constexpr int kMessages = 20;
  sockaddr_in address{};
  const int listener = ListenOnTestAddress(&address);
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  int event_fd = -1;
  ASSERT_EQ(demi_event_fd(&event_fd), 0);
  EXPECT_EQ(demi_event_fd(nullptr), EINVAL);
  int again = -1;
  ASSERT_EQ(demi_event_fd(&again), 0);
  EXPECT_EQ(again, event_fd);  // one descriptor for the process

  const int epoll_fd = epoll_create1(0);
  ASSERT_GE(epoll_fd, 0);
  for (int fd : {pipe_fds[0], event_fd}) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    ASSERT_EQ(epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event), 0);
  }

  std::thread peer([&] {
    int qd = -1;
    ASSERT_NO_FATAL_FAILURE(Connect(address, &qd));
    for (int i = 0; i < kMessages; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ASSERT_EQ(write(pipe_fds[1], "p", 1), 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      CompletePush(PushMessage(qd, i, 64 + 1000 * i, 1));
    }
    // Wait for the loop's goodbye before closing.
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, qd), 0);
    demi_qresult_t bye = WaitResult(pop);
    EXPECT_EQ(bye.qr_opcode, DEMI_OPC_POP);
    demi_sgafree(&bye.qr_value.sga);
    EXPECT_EQ(demi_close(qd), 0);
  });

  std::vector<demi_qtoken_t> tokens;
  demi_qtoken_t accept = 0;
  ASSERT_EQ(demi_accept(&accept, listener), 0);
  tokens.push_back(accept);
  int server = -1, popped = 0, pipe_bytes = 0, sleeps = 0, looks = 0;
  // One result per look, as the header's rule allows: a result left
  // waiting must make the next demi_event_arm say EAGAIN.
  auto take_results = [&] {
    ++looks;
    if (tokens.empty()) return;
    demi_qresult_t result{};
    int offset = -1;
    const timespec zero = {0, 0};
    const int rc = demi_wait_any(&result, &offset, tokens.data(),
                                 static_cast<int>(tokens.size()), &zero);
    if (rc == ETIMEDOUT) return;
    ASSERT_EQ(rc, 0);
    tokens.erase(tokens.begin() + offset);
    demi_qtoken_t next = 0;
    if (result.qr_opcode == DEMI_OPC_ACCEPT) {
      server = result.qr_value.ares.qd;
    } else {
      ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
      CheckMessage(result, popped, 64 + 1000 * popped, 1);
      ++popped;
    }
    if (popped < kMessages) {
      ASSERT_EQ(demi_pop(&next, server), 0);
      tokens.push_back(next);
    }
  };
  while (popped < kMessages || pipe_bytes < kMessages) {
    const int armed = demi_event_arm();
    if (armed == EAGAIN) {
      ASSERT_NO_FATAL_FAILURE(take_results());
      continue;
    }
    ASSERT_EQ(armed, 0);
    epoll_event events[2];
    const int n = epoll_wait(epoll_fd, events, 2, 5000);
    ASSERT_GT(n, 0) << "the loop slept 5 s: a completion was lost";
    ++sleeps;
    for (int e = 0; e < n; ++e) {
      if (events[e].data.fd == pipe_fds[0]) {
        char byte;
        ASSERT_EQ(read(pipe_fds[0], &byte, 1), 1);
        ++pipe_bytes;
      } else {
        ASSERT_NO_FATAL_FAILURE(take_results());
      }
    }
  }
  std::printf("event loop: %d messages, %d pipe bytes, %d sleeps, %d looks\n",
              popped, pipe_bytes, sleeps, looks);
  EXPECT_LT(sleeps, 20 * kMessages);
  EXPECT_LT(looks, 40 * kMessages);
  CompletePush(PushMessage(server, 99, 10, 1));  // goodbye
  peer.join();
  close(epoll_fd);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  CloseQueues({server, listener});
}

// The event loop and a thread asleep in demi_wait on the same worker: the
// sleeper (the watcher) may take the completion that was the loop's and
// complete the loop's token; the loop must still wake (its own eventfd),
// and the sleeper for its own.
TEST_F(SleepingWaitTest, AnEventLoopAndASleeperOnOneWorkerBothWake) {
  int client1, server1, listener1, client2, server2, listener2;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client1, &server1, &listener1));
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client2, &server2, &listener2));
  int event_fd = -1;
  ASSERT_EQ(demi_event_fd(&event_fd), 0);
  for (int round = 0; round < 3; ++round) {
    demi_qresult_t slept{};
    std::thread sleeper([&] {
      demi_qtoken_t pop = 0;
      ASSERT_EQ(demi_pop(&pop, server2), 0);
      slept = SleepFor(pop);
    });
    std::thread pusher([&] {
      std::this_thread::sleep_for(kPause);
      CompletePush(PushMessage(client1, 200 + round, 300, 1));
      std::this_thread::sleep_for(kPause);
      CompletePush(PushMessage(client2, 300 + round, 300, 1));
    });
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, server1), 0);
    demi_qresult_t mine{};
    int armed_sleeps = 0;
    for (;;) {
      demi_qresult_t result{};
      const timespec zero = {0, 0};
      const int rc = demi_wait(&result, pop, &zero);
      if (rc == 0) {
        mine = result;
        break;
      }
      ASSERT_EQ(rc, ETIMEDOUT);
      const int armed = demi_event_arm();
      if (armed == EAGAIN) continue;
      ASSERT_EQ(armed, 0);
      pollfd ready = {event_fd, POLLIN, 0};
      ASSERT_EQ(poll(&ready, 1, 5000), 1) << "the loop was not woken";
      ++armed_sleeps;
    }
    pusher.join();
    sleeper.join();
    EXPECT_GE(armed_sleeps, 1);
    EXPECT_EQ(CheckMessage(mine, 200 + round, 300, 1), 300u);
    EXPECT_EQ(CheckMessage(slept, 300 + round, 300, 1), 300u);
  }
  CloseQueues({client1, server1, listener1, client2, server2, listener2});
}

}  // namespace
}  // namespace demi::testing
