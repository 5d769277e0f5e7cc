// Many connections in one process, on the test device: every connection of
// a device shares a few completion queues (rdma::CompletionGroup), so each
// completion must reach the right queue whichever connection produced it.
// 128 connections carry messages of every kind (inline, eager, rendezvous)
// interleaved across connections, each checked byte for byte and in order at
// its own server queue; idle connections stay healthy beside busy ones; half
// the clients close mid-way and only their own server queues see the end of
// stream.

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"

namespace demi::testing {
namespace {

constexpr int kConnections = 128;
constexpr int kMessages = 6;  // per connection, per round

// Message `m` of connection `c`: small (inline), eager, or rendezvous.
uint32_t SizeOf(int c, int m) {
  switch ((c + m) % 3) {
    case 0:
      return 1 + (c * 7 + m) % 64;
    case 1:
      return 1000 + (c * 131 + m * 17) % 7000;
    default:
      return 20000 + (c * 977 + m * 311) % 40000;
  }
}

uint64_t IndexOf(int round, int c, int m) {
  return (uint64_t(round) * kConnections + c) * kMessages + m;
}

class ManyConnectionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }
};

// Pushes kMessages on each connection in `senders` (interleaved across
// connections), then pops them on the server side with demi_wait_any over
// every server queue at once, checking each queue gets its own messages in
// order.
void Exchange(int round, const std::vector<int>& senders,
              const std::vector<int>& clients,
              const std::vector<int>& servers) {
  std::vector<demi_qtoken_t> pushes;
  for (int m = 0; m < kMessages; ++m) {
    for (int c : senders) {
      const uint32_t size = SizeOf(c, m);
      demi_qtoken_t qt =
          PushMessage(clients[c], IndexOf(round, c, m), size, 1 + (c + m) % 4);
      ASSERT_NE(qt, 0u);
      pushes.push_back(qt);
    }
  }
  std::vector<demi_qtoken_t> pops;
  std::vector<int> owner, next(kConnections, 0);
  for (int c : senders) {
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pop(&qt, servers[c]), 0);
    pops.push_back(qt);
    owner.push_back(c);
  }
  size_t left = senders.size() * kMessages;
  while (left > 0) {
    demi_qresult_t result{};
    int offset = -1;
    ASSERT_EQ(demi_wait_any(&result, &offset, pops.data(),
                            static_cast<int>(pops.size()), &kTenSeconds),
              0)
        << left << " messages missing";
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP) << result.qr_ret;
    const int c = owner[offset];
    ASSERT_EQ(result.qr_qd, servers[c]);
    const int m = next[c]++;
    ASSERT_LT(m, kMessages) << "connection " << c << " got too much";
    ASSERT_EQ(CheckMessage(result, IndexOf(round, c, m), SizeOf(c, m),
                           1 + (c + m) % 4),
              SizeOf(c, m))
        << "connection " << c << " message " << m;
    --left;
    if (next[c] < kMessages) {
      ASSERT_EQ(demi_pop(&pops[offset], servers[c]), 0);
    } else {
      // Done: this slot waits on nothing new; swap it out.
      pops[offset] = pops.back();
      owner[offset] = owner.back();
      pops.pop_back();
      owner.pop_back();
    }
  }
  for (demi_qtoken_t qt : pushes) CompletePush(qt);
}

TEST_F(ManyConnectionsTest, EveryCompletionReachesItsOwnQueue) {
  sockaddr_in address;
  const int listener = ListenOnTestAddress(&address);
  std::vector<int> clients(kConnections), servers(kConnections);
  for (int c = 0; c < kConnections; ++c) {
    ASSERT_NO_FATAL_FAILURE(
        ConnectTo(address, listener, &clients[c], &servers[c]));
  }
  // Round 0: every connection at once. Round 1: one in eight, the rest idle.
  std::vector<int> all, some;
  for (int c = 0; c < kConnections; ++c) {
    all.push_back(c);
    if (c % 8 == 3) some.push_back(c);
  }
  ASSERT_NO_FATAL_FAILURE(Exchange(0, all, clients, servers));
  ASSERT_NO_FATAL_FAILURE(Exchange(1, some, clients, servers));

  // The even clients close: their servers see the end of stream; the odd
  // ones still carry traffic both ways.
  std::vector<int> odd;
  for (int c = 0; c < kConnections; ++c) {
    if (c % 2 == 0) {
      ASSERT_EQ(demi_close(clients[c]), 0);
    } else {
      odd.push_back(c);
    }
  }
  for (int c = 0; c < kConnections; c += 2) {
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pop(&qt, servers[c]), 0);
    demi_qresult_t result = WaitResult(qt);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP) << "connection " << c;
    EXPECT_EQ(result.qr_value.sga.sga_numsegs, 0u) << "connection " << c;
    ASSERT_EQ(demi_close(servers[c]), 0);
  }
  ASSERT_NO_FATAL_FAILURE(Exchange(2, odd, clients, servers));
  // And back: the servers push to their clients.
  ASSERT_NO_FATAL_FAILURE(Exchange(3, odd, servers, clients));
  for (int c : odd) CloseQueues({clients[c], servers[c]});
  CloseQueues({listener});
}

}  // namespace
}  // namespace demi::testing
