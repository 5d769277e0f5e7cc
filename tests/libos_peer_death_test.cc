// A peer process killed with SIGKILL: the survivor's pending pop fails with
// ECONNRESET within 2 s, and its other connections keep working.

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

// The child: connects to `address`, pushes one message, then waits to die.
[[noreturn]] void RunDoomedPeer(const sockaddr_in& address, int start_fd) {
  char go;
  if (read(start_fd, &go, 1) != 1) _exit(10);
  if (demi_init(nullptr) != 0) _exit(11);
  int qd = -1;
  demi_qtoken_t qt = 0;
  if (demi_socket(&qd, AF_INET, SOCK_STREAM, 0) != 0) _exit(12);
  if (demi_connect(&qt, qd, reinterpret_cast<const sockaddr*>(&address),
                   sizeof(address)) != 0) {
    _exit(13);
  }
  demi_qresult_t result{};
  if (demi_wait(&result, qt, &kTenSeconds) != 0 ||
      result.qr_opcode != DEMI_OPC_CONNECT) {
    _exit(14);
  }
  demi_qtoken_t push = PushMessage(qd, 1, 100, 2);
  if (push == 0 || demi_wait(&result, push, &kTenSeconds) != 0) _exit(15);
  for (;;) pause();  // SIGKILL ends it
}

TEST(LibosPeerDeathTest, KilledPeerFailsPendingPopsWithinTwoSeconds) {
  sockaddr_in address = NextTestAddress();
  int start[2];
  ASSERT_EQ(pipe(start), 0);
  // Fork before this process touches RDMA: the child starts its own libOS.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) RunDoomedPeer(address, start[0]);

  ASSERT_EQ(demi_init(nullptr), 0);
  int listener = -1;
  ASSERT_EQ(demi_socket(&listener, AF_INET, SOCK_STREAM, 0), 0);
  ASSERT_EQ(demi_bind(listener, reinterpret_cast<sockaddr*>(&address),
                      sizeof(address)),
            0);
  ASSERT_EQ(demi_listen(listener, 4), 0);
  demi_qtoken_t accept = 0;
  ASSERT_EQ(demi_accept(&accept, listener), 0);
  ASSERT_EQ(write(start[1], "g", 1), 1);
  demi_qresult_t accepted = WaitResult(accept);
  ASSERT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT);
  const int doomed = accepted.qr_value.ares.qd;

  // Another connection, inside this process, that must survive.
  int client, server, other_listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &other_listener));

  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, doomed), 0);
  demi_qresult_t first = WaitResult(pop);
  CheckMessage(first, 1, 100, 2);
  ASSERT_EQ(demi_pop(&pop, doomed), 0);  // pending: the peer sends no more

  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status))
      << "child exited early with " << WEXITSTATUS(status);
  auto killed_at = std::chrono::steady_clock::now();
  demi_qresult_t result{};
  timespec two_seconds{2, 0};
  ASSERT_EQ(demi_wait(&result, pop, &two_seconds), 0)
      << "the pending pop did not fail within 2 s";
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNRESET);
  std::printf("pending pop failed %lld ms after SIGKILL\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - killed_at)
                      .count()));
  // Later operations fail the same way.
  ASSERT_EQ(demi_pop(&pop, doomed), 0);
  result = WaitResult(pop);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNRESET);

  // The other connection still works.
  demi_qtoken_t push = PushMessage(client, 5, 500, 3);
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t survived = WaitResult(pop);
  CheckMessage(survived, 5, 500, 3);
  CompletePush(push);

  CloseQueues({doomed, client, server, other_listener, listener});
}

}  // namespace
}  // namespace demi::testing
