// DEMI_MAX_CONNECTIONS on the test device: a worker holding as many
// connections as the cap (4 here: two pairs, both ends in this process)
// refuses the next request before building anything for it; once a pair is
// closed and gone, requests are taken again.

#include <demi/libos.h>
#include <demi/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"

namespace demi::testing {
namespace {

// A client's connect to `address`: 0 once connected (its qd in *client),
// else the errno its token failed with. The listener's accept stays posted.
int TryConnect(const sockaddr_in& address, int* client) {
  EXPECT_EQ(demi_socket(client, AF_INET, SOCK_STREAM, 0), 0);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(
      demi_connect(&qt, *client, reinterpret_cast<const sockaddr*>(&address),
                   sizeof(address)),
      0);
  demi_qresult_t result = WaitResult(qt);
  if (result.qr_opcode == DEMI_OPC_CONNECT) return 0;
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(demi_close(*client), 0);
  return result.qr_ret;
}

TEST(ConnectionCapTest, RequestsBeyondTheCapAreRefused) {
  ASSERT_EQ(setenv("DEMI_MAX_CONNECTIONS", "4", 1), 0);
  ASSERT_EQ(demi_init(nullptr), 0);
  sockaddr_in address{};
  const int listener = ListenOnTestAddress(&address);
  int clients[2], servers[2];
  for (int i = 0; i < 2; ++i) {
    ASSERT_NO_FATAL_FAILURE(
        ConnectTo(address, listener, &clients[i], &servers[i]));
  }
  // A fifth connection (this client's own is the fifth): refused.
  demi_qtoken_t accept = 0;
  ASSERT_EQ(demi_accept(&accept, listener), 0);
  int refused = -1;
  EXPECT_EQ(TryConnect(address, &refused), ECONNREFUSED);
  // One pair closed: once both ends are gone, a request is taken again.
  CloseQueues({clients[0], servers[0]});
  int client = -1, rc = ECONNREFUSED;
  for (int attempt = 0; attempt < 50 && rc == ECONNREFUSED; ++attempt) {
    rc = TryConnect(address, &client);
  }
  ASSERT_EQ(rc, 0) << std::strerror(rc);
  demi_qresult_t accepted = WaitResult(accept);
  ASSERT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT);
  CloseQueues(
      {client, accepted.qr_value.ares.qd, clients[1], servers[1], listener});
}

}  // namespace
}  // namespace demi::testing
