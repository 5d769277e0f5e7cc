// Pushing popped arrays (the zero-copy echo and relay every Demikernel
// server does), on the test device: whole or changed as applications change
// them, on the queue they came from and on others, stream and datagram,
// eager and rendezvous; and free protection for them (freeing during the
// push, freeing then pushing, closing the source queue, credits).

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "tests/libos_test_util.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

constexpr timespec kShort = {0, 200 * 1000 * 1000};

uint64_t CacheLookups() {
  demi_mr_cache_stats_t stats{};
  EXPECT_EQ(demi_mr_cache_stats(&stats), 0);
  return stats.hits + stats.misses + stats.uncached;
}

demi_qresult_t PopResult(int qd) {
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_pop(&qt, qd), 0);
  return WaitResult(qt);
}

// Pushes `sga` on `qd` and waits for the push; the result's array is the
// pushed one (not freed here).
void PushAndWait(int qd, const demi_sgarray_t& sga) {
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_push(&qt, qd, &sga), 0);
  demi_qresult_t pushed = WaitResult(qt);
  ASSERT_EQ(pushed.qr_opcode, DEMI_OPC_PUSH) << pushed.qr_ret;
  EXPECT_EQ(pushed.qr_value.sga.sga_buf, sga.sga_buf);
}

// Pushes 64 B messages on `qd` (whose peer does not pop) one at a time
// until one stays pending: the peer's receive buffers are full. Returns the
// tokens; the last one is pending.
std::vector<demi_qtoken_t> FillPeer(int qd, uint64_t first_index) {
  std::vector<demi_qtoken_t> tokens;
  for (int i = 0; i < 1000; ++i) {
    demi_qtoken_t qt = PushMessage(qd, first_index + i, 64, 1);
    tokens.push_back(qt);
    demi_qresult_t result{};
    int rc = demi_wait(&result, qt, &kShort);
    if (rc == ETIMEDOUT) return tokens;
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH);
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
    tokens.back() = 0;  // done
  }
  ADD_FAILURE() << "the peer never ran out of receive buffers";
  return tokens;
}

class PoppedPushTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }
};

TEST_F(PoppedPushTest, EchoPushesThePoppedArrayBackZeroCopy) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  const uint32_t sizes[] = {1, 7, 64, 255, 1000, 4096, 8192};
  const uint64_t lookups = CacheLookups();
  uint64_t bytes = 0;
  for (uint64_t i = 0; i < 300 && !HasFailure(); ++i) {
    const uint32_t size = sizes[i % 7];
    const uint32_t segments = 1 + i % 4;
    CompletePush(PushMessage(client, i, size, segments));
    demi_qresult_t popped = PopResult(server);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
    ASSERT_NO_FATAL_FAILURE(PushAndWait(server, popped.qr_value.sga));
    ASSERT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
    demi_qresult_t echoed = PopResult(client);
    bytes += CheckMessage(echoed, i, size, segments);
  }
  // Popped memory went by its own keys: nothing was looked up in the cache.
  EXPECT_EQ(CacheLookups(), lookups);
  printf("echoed zero-copy: %llu bytes\n",
         static_cast<unsigned long long>(bytes));
  CloseQueues({client, server, listener});
}

TEST_F(PoppedPushTest, TrimmedAdvancedFewerAndMixedSegments) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  CompletePush(PushMessage(client, 5, 3000, 3));  // 1000 + 1000 + 1000
  demi_qresult_t popped = PopResult(server);
  ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
  ASSERT_EQ(popped.qr_value.sga.sga_numsegs, 3u);
  const demi_sgarray_t& in = popped.qr_value.sga;

  demi_sgarray_t library = demi_sgaalloc(100);
  ASSERT_EQ(library.sga_numsegs, 1u);
  std::memset(library.sga_segs[0].sgaseg_buf, 0xab, 100);
  std::vector<uint8_t> application(50, 0xcd);

  // A header of 10 bytes trimmed and 5 cut from the end of segment 0,
  // segment 1 dropped, segment 2 whole, then library and application memory.
  demi_sgarray_t out = in;
  out.sga_numsegs = 4;
  out.sga_segs[0].sgaseg_buf =
      static_cast<uint8_t*>(in.sga_segs[0].sgaseg_buf) + 10;
  out.sga_segs[0].sgaseg_len = in.sga_segs[0].sgaseg_len - 15;
  out.sga_segs[1] = in.sga_segs[2];
  out.sga_segs[2] = library.sga_segs[0];
  out.sga_segs[3].sgaseg_buf = application.data();
  out.sga_segs[3].sgaseg_len = 50;
  const uint64_t lookups = CacheLookups();
  ASSERT_NO_FATAL_FAILURE(PushAndWait(server, out));
  // Only the two segments outside the popped buffer went through the cache.
  EXPECT_EQ(CacheLookups(), lookups + 2);
  ASSERT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
  ASSERT_EQ(demi_sgafree(&library), 0);

  demi_qresult_t echoed = PopResult(client);
  ASSERT_EQ(echoed.qr_opcode, DEMI_OPC_POP);
  const demi_sgarray_t& got = echoed.qr_value.sga;
  ASSERT_EQ(got.sga_numsegs, 4u);
  const uint32_t lengths[] = {985, 1000, 100, 50};
  for (uint32_t s = 0; s < 4; ++s) {
    ASSERT_EQ(got.sga_segs[s].sgaseg_len, lengths[s]) << "segment " << s;
  }
  auto byte = [&](uint32_t s, uint32_t j) {
    return static_cast<const uint8_t*>(got.sga_segs[s].sgaseg_buf)[j];
  };
  for (uint32_t j = 0; j < 985; ++j)
    ASSERT_EQ(byte(0, j), PatternByte(5, 10 + j));
  for (uint32_t j = 0; j < 1000; ++j) {
    ASSERT_EQ(byte(1, j), PatternByte(5, 2000 + j));
  }
  for (uint32_t j = 0; j < 100; ++j) ASSERT_EQ(byte(2, j), 0xab);
  for (uint32_t j = 0; j < 50; ++j) ASSERT_EQ(byte(3, j), 0xcd);
  ASSERT_EQ(demi_sgafree(&echoed.qr_value.sga), 0);
  CloseQueues({client, server, listener});
}

// A relay: pops from one connection, pushes each popped array onto another,
// eager and rendezvous sizes, and the far end checks every byte in order.
TEST_F(PoppedPushTest, RelayForwardsPoppedArraysToAnotherConnection) {
  int a_client, a_server, a_listener, b_client, b_server, b_listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&a_client, &a_server, &a_listener));
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&b_client, &b_server, &b_listener));
  const uint32_t sizes[] = {1,     100,      8192,     8193,
                            65536, 1u << 20, 3u << 20, 16u << 20};
  const uint64_t lookups = CacheLookups();
  uint64_t bytes = 0;
  for (uint64_t i = 0; i < 24 && !HasFailure(); ++i) {
    const uint32_t size = sizes[i % 8];
    const uint32_t segments = size > 8192 ? 1 : 1 + i % 3;
    demi_qtoken_t sent = PushMessage(a_client, i, size, segments);
    demi_qresult_t popped = PopResult(a_server);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP) << popped.qr_ret;
    demi_qtoken_t relayed = 0;
    ASSERT_EQ(demi_push(&relayed, b_client, &popped.qr_value.sga), 0);
    demi_qresult_t arrived = PopResult(b_server);
    bytes += CheckMessage(arrived, i, size, segments);
    demi_qresult_t done = WaitResult(relayed);
    ASSERT_EQ(done.qr_opcode, DEMI_OPC_PUSH) << done.qr_ret;
    ASSERT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
    CompletePush(sent);
  }
  EXPECT_EQ(CacheLookups(), lookups);
  printf("relayed zero-copy: %llu bytes\n",
         static_cast<unsigned long long>(bytes));
  CloseQueues({a_client, a_server, a_listener, b_client, b_server, b_listener});
}

// Freeing popped arrays while their pushes wait (the target's peer does not
// pop) keeps their receive buffers: nothing new lands in them, and the
// source's sender gets no credit for them until the pushes completed.
TEST_F(PoppedPushTest, FreeDuringPushKeepsBufferAndCreditUntilDone) {
  int a_client, a_server, a_listener, b_client, b_server, b_listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&a_client, &a_server, &a_listener));
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&b_client, &b_server, &b_listener));
  std::vector<demi_qtoken_t> fill = FillPeer(b_client, 1000);
  ASSERT_FALSE(HasFailure());

  constexpr int kRelayed = 32;
  std::vector<demi_qtoken_t> relays;
  for (int i = 0; i < kRelayed; ++i) {
    CompletePush(PushMessage(a_client, i, 64, 1));
    demi_qresult_t popped = PopResult(a_server);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
    demi_sgarray_t sga = popped.qr_value.sga;
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_push(&qt, b_client, &sga), 0);
    relays.push_back(qt);
    ASSERT_EQ(demi_sgafree(&sga), 0);       // while the push waits
    EXPECT_EQ(demi_sgafree(&sga), EINVAL);  // twice
    demi_qtoken_t again = 0;
    EXPECT_EQ(demi_push(&again, a_server, &sga), EINVAL);  // freed
  }
  demi_qresult_t result{};
  EXPECT_EQ(demi_wait(&result, relays.front(), &kZero), ETIMEDOUT);

  // The sender may now fill only the receive buffers no push holds. (512
  // bytes: too large to be staged and batched, so one buffer per message.)
  constexpr int kMore = 64;
  constexpr uint32_t kMoreSize = 512;
  std::vector<demi_qtoken_t> more;
  for (int j = 0; j < kMore; ++j) {
    more.push_back(PushMessage(a_client, 100 + j, kMoreSize, 1));
  }
  int completed = 0;
  for (demi_qtoken_t& qt : more) {
    if (demi_wait(&result, qt, &kShort) != 0) continue;
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH);
    EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
    qt = 0;
    ++completed;
  }
  EXPECT_GE(completed, 1);
  EXPECT_LE(completed, 64 - kRelayed) << "credits came back for buffers that "
                                         "pushes still read";

  // The target's peer pops: the fill, then the relayed bytes as they were.
  for (size_t k = 0; k < fill.size(); ++k) {
    demi_qresult_t arrived = PopResult(b_server);
    CheckMessage(arrived, 1000 + k, 64, 1);
  }
  for (int i = 0; i < kRelayed; ++i) {
    demi_qresult_t arrived = PopResult(b_server);
    CheckMessage(arrived, i, 64, 1);
  }
  for (demi_qtoken_t qt : relays) {
    demi_qresult_t done = WaitResult(qt);
    EXPECT_EQ(done.qr_opcode, DEMI_OPC_PUSH) << done.qr_ret;
  }
  CompletePush(fill.back());
  // Now the buffers are back and the sender's other pushes go.
  for (int j = 0; j < kMore; ++j) {
    demi_qresult_t arrived = PopResult(a_server);
    CheckMessage(arrived, 100 + j, kMoreSize, 1);
  }
  for (demi_qtoken_t qt : more) {
    if (qt != 0) CompletePush(qt);
  }
  CloseQueues({a_client, a_server, a_listener, b_client, b_server, b_listener});
}

// Closing the queue popped arrays came from while their pushes wait on
// another connection: the pushes complete with the bytes intact, and the
// arrays may still be freed after the close.
TEST_F(PoppedPushTest, CloseOfTheSourceDuringRelayPushIsSafe) {
  int a_client, a_server, a_listener, b_client, b_server, b_listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&a_client, &a_server, &a_listener));
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&b_client, &b_server, &b_listener));
  std::vector<demi_qtoken_t> fill = FillPeer(b_client, 2000);
  ASSERT_FALSE(HasFailure());
  const uint32_t sizes[] = {1000, 100000, 64};
  std::vector<demi_sgarray_t> kept;
  std::vector<demi_qtoken_t> relays;
  for (int i = 0; i < 3; ++i) {
    CompletePush(PushMessage(a_client, i, sizes[i], 1));
    demi_qresult_t popped = PopResult(a_server);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_push(&qt, b_client, &popped.qr_value.sga), 0);
    relays.push_back(qt);
    if (i == 0) {
      ASSERT_EQ(demi_sgafree(&popped.qr_value.sga), 0);  // before the close
    } else {
      kept.push_back(popped.qr_value.sga);
    }
  }
  CloseQueues({a_server, a_client, a_listener});
  ASSERT_EQ(demi_sgafree(&kept[0]), 0);  // after the close, push waiting

  for (size_t k = 0; k < fill.size(); ++k) {
    demi_qresult_t arrived = PopResult(b_server);
    CheckMessage(arrived, 2000 + k, 64, 1);
  }
  for (int i = 0; i < 3; ++i) {
    demi_qresult_t arrived = PopResult(b_server);
    CheckMessage(arrived, i, sizes[i], 1);
  }
  for (demi_qtoken_t qt : relays) {
    demi_qresult_t done = WaitResult(qt);
    EXPECT_EQ(done.qr_opcode, DEMI_OPC_PUSH) << done.qr_ret;
  }
  CompletePush(fill.back());
  ASSERT_EQ(demi_sgafree(&kept[1]), 0);  // after the close and the push
  EXPECT_EQ(demi_sgafree(&kept[1]), EINVAL);
  CloseQueues({b_client, b_server, b_listener});
}

// ---- Datagrams --------------------------------------------------------------

// Sends one datagram of `size` pattern bytes from `from` to `to` and returns
// its pop on `to_qd`, retrying (a datagram may be lost) up to 20 times.
demi_qresult_t SendDatagram(int from, int to_qd, const sockaddr_in& to,
                            uint64_t index, uint32_t size) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    demi_sgarray_t sga = demi_sgaalloc(size);
    EXPECT_EQ(sga.sga_numsegs, 1u);
    auto* data = static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf);
    FillPattern(data, size, index);
    demi_qtoken_t push = 0;
    EXPECT_EQ(demi_pushto(&push, from, &sga, Sa(to), sizeof(to)), 0);
    CompletePush(push);
    demi_qtoken_t pop = 0;
    EXPECT_EQ(demi_pop(&pop, to_qd), 0);
    demi_qresult_t result{};
    timespec second = {1, 0};
    if (demi_wait(&result, pop, &second) == 0) return result;
  }
  ADD_FAILURE() << "no datagram arrived in 20 attempts";
  return {};
}

TEST_F(PoppedPushTest, DatagramEchoAnswersWithThePoppedArray) {
  sockaddr_in client_address, server_address;
  int client = BoundDatagramSocket(&client_address);
  int server = BoundDatagramSocket(&server_address);
  demi_dgram_stats_t stats{};
  ASSERT_EQ(demi_dgram_stats(&stats), 0);
  const uint32_t max = stats.max_payload;
  ASSERT_GT(max, 64u);
  const uint32_t sizes[] = {1, 64, max / 2, max};
  const uint64_t lookups = CacheLookups();
  for (uint64_t i = 0; i < 40 && !HasFailure(); ++i) {
    const uint32_t size = sizes[i % 4];
    demi_qresult_t popped =
        SendDatagram(client, server, server_address, i, size);
    ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
    demi_sgarray_t& sga = popped.qr_value.sga;
    const sockaddr_in source = sga.sga_addr;
    ASSERT_EQ(source.sin_port, client_address.sin_port);
    // Echo to where it came from, with the popped array itself; the odd
    // ones without their first byte.
    demi_sgarray_t answer = sga;
    uint32_t skip = (i % 2 == 1 && size > 1) ? 1 : 0;
    answer.sga_segs[0].sgaseg_buf =
        static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf) + skip;
    answer.sga_segs[0].sgaseg_len -= skip;
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pushto(&qt, server, &answer, Sa(source), sizeof(source)), 0);
    ASSERT_EQ(demi_sgafree(&sga), 0);  // during the push
    demi_qtoken_t again = 0;
    EXPECT_EQ(demi_pushto(&again, server, &answer, Sa(client_address),
                          sizeof(client_address)),
              EINVAL);  // freed
    demi_qresult_t done = WaitResult(qt);
    ASSERT_EQ(done.qr_opcode, DEMI_OPC_PUSH) << done.qr_ret;
    demi_qresult_t echoed = PopResult(client);
    ASSERT_EQ(echoed.qr_opcode, DEMI_OPC_POP);
    ASSERT_EQ(echoed.qr_value.sga.sga_segs[0].sgaseg_len, size - skip);
    auto* data =
        static_cast<const uint8_t*>(echoed.qr_value.sga.sga_segs[0].sgaseg_buf);
    for (uint32_t j = 0; j + skip < size; ++j) {
      ASSERT_EQ(data[j], PatternByte(i, j + skip)) << "datagram " << i;
    }
    ASSERT_EQ(demi_sgafree(&echoed.qr_value.sga), 0);
  }
  EXPECT_EQ(CacheLookups(), lookups);
  CloseQueues({client, server});
}

// A popped datagram forwarded on a stream connection, and a popped stream
// message forwarded as a datagram: one check says what the memory is.
TEST_F(PoppedPushTest, PoppedMemoryCrossesQueueKinds) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  sockaddr_in d1_address, d2_address;
  int d1 = BoundDatagramSocket(&d1_address);
  int d2 = BoundDatagramSocket(&d2_address);

  demi_qresult_t datagram = SendDatagram(d1, d2, d2_address, 7, 500);
  ASSERT_EQ(datagram.qr_opcode, DEMI_OPC_POP);
  ASSERT_NO_FATAL_FAILURE(PushAndWait(client, datagram.qr_value.sga));
  ASSERT_EQ(demi_sgafree(&datagram.qr_value.sga), 0);
  demi_qresult_t arrived = PopResult(server);
  CheckMessage(arrived, 7, 500, 1);

  CompletePush(PushMessage(client, 8, 300, 1));
  demi_qresult_t message = PopResult(server);
  ASSERT_EQ(message.qr_opcode, DEMI_OPC_POP);
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_pushto(&qt, d1, &message.qr_value.sga, Sa(d2_address),
                        sizeof(d2_address)),
            0);
  demi_qresult_t done = WaitResult(qt);
  ASSERT_EQ(done.qr_opcode, DEMI_OPC_PUSH) << done.qr_ret;
  ASSERT_EQ(demi_sgafree(&message.qr_value.sga), 0);
  demi_qresult_t forwarded = PopResult(d2);
  CheckMessage(forwarded, 8, 300, 1);
  CloseQueues({client, server, listener, d1, d2});
}

// Library memory too large for a datagram is EMSGSIZE, whatever the pool
// it came from.
TEST_F(PoppedPushTest, OversizedLibraryDatagramIsEmsgsize) {
  sockaddr_in a_address, b_address;
  int a = BoundDatagramSocket(&a_address);
  int b = BoundDatagramSocket(&b_address);
  for (uint32_t size : {4096u, 65536u}) {
    demi_sgarray_t sga = demi_sgaalloc(size);
    ASSERT_EQ(sga.sga_numsegs, 1u) << size;
    demi_qtoken_t qt = 0;
    EXPECT_EQ(demi_pushto(&qt, a, &sga, Sa(b_address), sizeof(b_address)),
              EMSGSIZE)
        << size;
    EXPECT_EQ(demi_sgafree(&sga), 0);
  }
  CloseQueues({a, b});
}

TEST_F(PoppedPushTest, ForeignSgaBufIsEinvalAndLosesNothing) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  uint8_t bytes[64] = {};
  demi_sgarray_t sga{};
  sga.sga_buf = bytes;  // not the library's
  sga.sga_numsegs = 1;
  sga.sga_segs[0].sgaseg_buf = bytes;
  sga.sga_segs[0].sgaseg_len = sizeof(bytes);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, client, &sga), EINVAL);
  EXPECT_EQ(demi_sgafree(&sga), EINVAL);
  // The connection is unharmed.
  CompletePush(PushMessage(client, 3, 64, 1));
  demi_qresult_t arrived = PopResult(server);
  CheckMessage(arrived, 3, 64, 1);
  CloseQueues({client, server, listener});
}

}  // namespace
}  // namespace demi::testing
