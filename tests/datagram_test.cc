// Datagram sockets end to end on the test device: pushto/pop across sizes up
// to the limit, several senders, the address-handle cache, connect, drops
// without receive buffers, resolution failures and invalid arguments. All in
// one process (one libOS), every socket on the same rxe address.

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/stats.h>
#include <demi/wait.h>
#include <fcntl.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rdma/datagram_wire.h"
#include "tests/libos_test_util.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

extern char** environ;

namespace demi::testing {
namespace {

// Message `index` of `size` bytes in `segments` segments of one
// demi_sgaalloc buffer.
demi_sgarray_t MessageArray(uint64_t index, uint32_t size, uint32_t segments) {
  demi_sgarray_t sga = demi_sgaalloc(size);
  EXPECT_EQ(sga.sga_numsegs, 1u) << "demi_sgaalloc(" << size << ")";
  if (sga.sga_numsegs != 1) return sga;
  auto* data = static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf);
  FillPattern(data, size, index);
  segments = std::min(segments, size);
  sga.sga_numsegs = segments;
  uint32_t offset = 0;
  for (uint32_t s = 0; s < segments; ++s) {
    sga.sga_segs[s].sgaseg_buf = data + offset;
    sga.sga_segs[s].sgaseg_len =
        s + 1 == segments ? size - offset : size / segments;
    offset += sga.sga_segs[s].sgaseg_len;
  }
  return sga;
}

demi_qtoken_t PushTo(int qd, uint64_t index, uint32_t size, uint32_t segments,
                     const sockaddr_in& destination) {
  demi_sgarray_t sga = MessageArray(index, size, segments);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_pushto(&qt, qd, &sga, Sa(destination), sizeof(destination)),
            0);
  return qt;
}

// Checks that `result` is a pop of message `index` of `size` bytes in
// `segments` segments from `sender`; frees it.
void CheckDatagram(demi_qresult_t& result, uint64_t index, uint32_t size,
                   uint32_t segments, const sockaddr_in& sender) {
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP) << result.qr_ret;
  demi_sgarray_t& sga = result.qr_value.sga;
  EXPECT_EQ(sga.sga_addr.sin_family, AF_INET);
  EXPECT_EQ(sga.sga_addr.sin_addr.s_addr, sender.sin_addr.s_addr);
  EXPECT_EQ(ntohs(sga.sga_addr.sin_port), ntohs(sender.sin_port));
  segments = std::min(segments, size);
  EXPECT_EQ(sga.sga_numsegs, segments);
  EXPECT_EQ(ExpectPatternIn(sga, index), size);
  EXPECT_EQ(demi_sgafree(&sga), 0);
}

// Pops one datagram and checks it as CheckDatagram does.
void PopAndCheck(int qd, uint64_t index, uint32_t size, uint32_t segments,
                 const sockaddr_in& sender) {
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_pop(&qt, qd), 0);
  demi_qresult_t result = WaitResult(qt);
  ASSERT_NO_FATAL_FAILURE(CheckDatagram(result, index, size, segments, sender));
}

demi_dgram_stats_t Stats() {
  demi_dgram_stats_t stats{};
  EXPECT_EQ(demi_dgram_stats(&stats), 0);
  return stats;
}

class DatagramTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(demi_init(nullptr), 0); }
};

TEST_F(DatagramTest, EchoEverySizeUpToTheLimit) {
  sockaddr_in server_address, client_address;
  const int server = BoundDatagramSocket(&server_address);
  const int client = BoundDatagramSocket(&client_address);
  const uint32_t limit = Stats().max_payload;
  ASSERT_GT(limit, 0u);
  std::printf("datagram payload limit: %u bytes\n", limit);
  std::vector<uint32_t> sizes = {1,  2,   3,   15,  16,  17,  63,        64,
                                 65, 255, 256, 257, 511, 512, limit - 1, limit};
  for (uint32_t size = 1; size <= limit; size += 29) sizes.push_back(size);
  uint64_t index = 0, bytes = 0;
  for (uint32_t size : sizes) {
    for (uint32_t segments : {1u, 1 + size % 16, 16u}) {
      ++index;
      demi_qtoken_t push =
          PushTo(client, index, size, segments, server_address);
      ASSERT_NO_FATAL_FAILURE(
          PopAndCheck(server, index, size, segments, client_address));
      CompletePush(push);
      // Echo, as message index + 1e6, to the address the pop reported.
      push = PushTo(server, index + 1000000, size, segments, client_address);
      ASSERT_NO_FATAL_FAILURE(
          PopAndCheck(client, index + 1000000, size, segments, server_address));
      CompletePush(push);
      bytes += 2 * size;
      if (HasFailure()) return;
    }
  }
  std::printf("datagram echo: %lu round trips, %lu bytes verified\n",
              static_cast<unsigned long>(index),
              static_cast<unsigned long>(bytes));

  // Application memory (sga_buf == NULL) goes the same way.
  std::vector<uint8_t> heap(limit);
  FillPattern(heap.data(), limit, 7777);
  demi_sgarray_t app{};
  app.sga_numsegs = 1;
  app.sga_segs[0] = {heap.data(), limit};
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_pushto(&qt, client, &app, Sa(server_address),
                        sizeof(server_address)),
            0);
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(server, 7777, limit, 1, client_address));
  EXPECT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_PUSH);

  // One byte more does not fit one datagram, however it is split.
  for (uint32_t segments : {1u, 16u}) {
    demi_sgarray_t sga = MessageArray(0, limit + 1, segments);
    EXPECT_EQ(demi_pushto(&qt, client, &sga, Sa(server_address),
                          sizeof(server_address)),
              EMSGSIZE);
    EXPECT_EQ(demi_sgafree(&sga), 0);
  }
  CloseQueues({client, server});
}

TEST_F(DatagramTest, PingPongLatencyAt64Bytes) {
  sockaddr_in a_address, b_address;
  const int a = BoundDatagramSocket(&a_address);
  const int b = BoundDatagramSocket(&b_address);
  // The pushed arrays are never written, so several pushes of each may be in
  // flight: push tokens are collected behind the ping-pong, as perftest
  // polls its send completions. (rxe reports UD send completions from a
  // tasklet, which under emulation can lag by milliseconds; a round trip
  // that waited for them would measure the guest's scheduler.)
  demi_sgarray_t ping = MessageArray(1, 64, 1);
  demi_sgarray_t pong = MessageArray(2, 64, 1);
  std::deque<demi_qtoken_t> pushes;
  auto pop_one = [](int qd) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, qd), 0);
    demi_qresult_t result = WaitResult(pop);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
    ASSERT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  };
  auto round_trip = [&]() {
    demi_qtoken_t push = 0;
    ASSERT_EQ(demi_pushto(&push, a, &ping, Sa(b_address), sizeof(b_address)),
              0);
    pushes.push_back(push);
    ASSERT_NO_FATAL_FAILURE(pop_one(b));
    ASSERT_EQ(demi_pushto(&push, b, &pong, Sa(a_address), sizeof(a_address)),
              0);
    pushes.push_back(push);
    ASSERT_NO_FATAL_FAILURE(pop_one(a));
    while (pushes.size() > 32) {
      ASSERT_EQ(WaitResult(pushes.front()).qr_opcode, DEMI_OPC_PUSH);
      pushes.pop_front();
    }
  };
  for (int i = 0; i < 100; ++i) ASSERT_NO_FATAL_FAILURE(round_trip());
  constexpr int kRounds = 2000;
  std::vector<double> micros;
  micros.reserve(kRounds);
  for (int i = 0; i < kRounds; ++i) {
    auto start = std::chrono::steady_clock::now();
    ASSERT_NO_FATAL_FAILURE(round_trip());
    micros.push_back(std::chrono::duration<double, std::micro>(
                         std::chrono::steady_clock::now() - start)
                         .count());
  }
  for (demi_qtoken_t qt : pushes) {
    EXPECT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_PUSH);
  }
  std::sort(micros.begin(), micros.end());
  // Half a round trip, as ib_send_lat reports.
  std::printf(
      "datagram ping-pong 64 B over %d round trips, one process: one-way "
      "median %.2f us, p99 %.2f us (round trip median %.2f us; a test "
      "build: rdma_bench, optimized, measures)\n",
      kRounds, micros[kRounds / 2] / 2, micros[kRounds * 99 / 100] / 2,
      micros[kRounds / 2]);
  EXPECT_EQ(demi_sgafree(&ping), 0);
  EXPECT_EQ(demi_sgafree(&pong), 0);
  CloseQueues({a, b});
}

TEST_F(DatagramTest, SeveralSendersEachIdentifiedBySgaAddr) {
  sockaddr_in receiver_address;
  const int receiver = BoundDatagramSocket(&receiver_address);
  constexpr int kSenders = 4, kEach = 50;  // 200 < the 256 receive buffers
  int senders[kSenders];
  sockaddr_in sender_addresses[kSenders];
  for (int s = 0; s < kSenders; ++s) {
    senders[s] = BoundDatagramSocket(&sender_addresses[s]);
  }
  std::vector<demi_qtoken_t> pushes;
  for (int i = 0; i < kEach; ++i) {
    for (int s = 0; s < kSenders; ++s) {
      // Message s * 1000 + i, 40 + i bytes, so content names the sender.
      pushes.push_back(PushTo(senders[s], s * 1000 + i, 40 + i, 1 + i % 4,
                              receiver_address));
    }
  }
  for (demi_qtoken_t qt : pushes) CompletePush(qt);
  int next[kSenders] = {};
  for (int n = 0; n < kSenders * kEach && !HasFailure(); ++n) {
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_pop(&qt, receiver), 0);
    demi_qresult_t result = WaitResult(qt);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
    demi_sgarray_t& sga = result.qr_value.sga;
    int s = 0;
    while (s < kSenders &&
           sga.sga_addr.sin_port != sender_addresses[s].sin_port) {
      ++s;
    }
    ASSERT_LT(s, kSenders) << "unknown sender port "
                           << ntohs(sga.sga_addr.sin_port);
    EXPECT_EQ(sga.sga_addr.sin_addr.s_addr,
              sender_addresses[s].sin_addr.s_addr);
    // Each sender's datagrams arrive in its order here (one rxe device).
    const int i = next[s]++;
    ASSERT_GT(sga.sga_numsegs, 0u);
    auto* first = static_cast<const uint8_t*>(sga.sga_segs[0].sgaseg_buf);
    EXPECT_EQ(first[0], PatternByte(s * 1000 + i, 0)) << "sender " << s;
    uint32_t total = 0;
    for (uint32_t k = 0; k < sga.sga_numsegs; ++k) {
      total += sga.sga_segs[k].sgaseg_len;
    }
    EXPECT_EQ(total, 40u + i);
    EXPECT_EQ(demi_sgafree(&sga), 0);
  }
  for (int s = 0; s < kSenders; ++s) EXPECT_EQ(next[s], kEach);
  for (int s = 0; s < kSenders; ++s) EXPECT_EQ(demi_close(senders[s]), 0);
  EXPECT_EQ(demi_close(receiver), 0);
}

TEST_F(DatagramTest, AddressHandleCacheServesRepeatedDestinations) {
  sockaddr_in receiver_address, sender_address;
  const int receiver = BoundDatagramSocket(&receiver_address);
  const int sender = BoundDatagramSocket(&sender_address);
  const demi_dgram_stats_t before = Stats();
  // The first pushto resolves the destination (asynchronously).
  CompletePush(PushTo(sender, 0, 100, 1, receiver_address));
  const demi_dgram_stats_t first = Stats();
  EXPECT_EQ(first.ah_misses, before.ah_misses + 1);
  EXPECT_EQ(first.ah_entries, before.ah_entries + 1);
  constexpr int kMore = 20;
  for (int i = 1; i <= kMore; ++i) {
    CompletePush(PushTo(sender, i, 100, 1, receiver_address));
  }
  const demi_dgram_stats_t after = Stats();
  EXPECT_EQ(after.ah_hits, first.ah_hits + kMore);
  EXPECT_EQ(after.ah_misses, first.ah_misses);
  EXPECT_EQ(after.ah_entries, first.ah_entries);
  for (int i = 0; i <= kMore; ++i) {
    ASSERT_NO_FATAL_FAILURE(PopAndCheck(receiver, i, 100, 1, sender_address));
  }
  std::printf(
      "address handles: %lu hits, %lu misses, %lu entries, %lu sent, %lu "
      "received\n",
      static_cast<unsigned long>(after.ah_hits),
      static_cast<unsigned long>(after.ah_misses),
      static_cast<unsigned long>(after.ah_entries),
      static_cast<unsigned long>(after.sent),
      static_cast<unsigned long>(after.received));
  CloseQueues({sender, receiver});
}

// Small datagrams of application memory to a known peer go inline without
// a lease once the memory is known mapped (the first push registers it);
// after munmap the same push is EFAULT, not a crash, and nothing is sent.
TEST_F(DatagramTest, InlineDatagramOfUnmappedMemoryIsEfault) {
  sockaddr_in receiver_address, sender_address;
  const int receiver = BoundDatagramSocket(&receiver_address);
  const int sender = BoundDatagramSocket(&sender_address);
  CompletePush(PushTo(sender, 0, 100, 1, receiver_address));  // resolves
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(receiver, 0, 100, 1, sender_address));
  auto* page = static_cast<uint8_t*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(page, MAP_FAILED);
  // pushto of the page's first 48 bytes: its errno.
  auto push_page = [&](demi_qtoken_t* qt) {
    demi_sgarray_t sga{};
    sga.sga_numsegs = 1;
    sga.sga_segs[0] = {page, 48};
    return demi_pushto(qt, sender, &sga, Sa(receiver_address),
                       sizeof(receiver_address));
  };
  for (uint64_t i = 1; i <= 3; ++i) {
    FillPattern(page, 48, i);
    demi_qtoken_t qt = 0;
    ASSERT_EQ(push_page(&qt), 0);
    EXPECT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_PUSH);  // application memory
    ASSERT_NO_FATAL_FAILURE(PopAndCheck(receiver, i, 48, 1, sender_address));
  }
  ASSERT_EQ(munmap(page, 4096), 0);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(push_page(&qt), EFAULT);
  CompletePush(PushTo(sender, 9, 100, 1, receiver_address));
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(receiver, 9, 100, 1, sender_address));
  CloseQueues({sender, receiver});
}

TEST_F(DatagramTest, ConnectSetsTheDefaultDestination) {
  sockaddr_in server_address, client_address, other_address;
  const int server = BoundDatagramSocket(&server_address);
  const int client = BoundDatagramSocket(&client_address);
  const int other = BoundDatagramSocket(&other_address);
  demi_sgarray_t sga = MessageArray(1, 10, 1);
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, client, &sga), EDESTADDRREQ);
  sockaddr_in peer{};
  socklen_t peer_size = sizeof(peer);
  EXPECT_EQ(
      demi_getpeername(client, reinterpret_cast<sockaddr*>(&peer), &peer_size),
      ENOTCONN);
  // Connect resolves the destination; its token completes when that is done.
  ASSERT_EQ(
      demi_connect(&qt, client, Sa(server_address), sizeof(server_address)), 0);
  EXPECT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_CONNECT);
  ASSERT_EQ(
      demi_getpeername(client, reinterpret_cast<sockaddr*>(&peer), &peer_size),
      0);
  EXPECT_EQ(peer.sin_port, server_address.sin_port);
  ASSERT_EQ(demi_push(&qt, client, &sga), 0);
  CompletePush(qt);
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(server, 1, 10, 1, client_address));
  // pushto overrides the connected destination.
  CompletePush(PushTo(client, 2, 20, 2, other_address));
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(other, 2, 20, 2, client_address));
  // A connected socket only takes datagrams from its peer.
  CompletePush(PushTo(other, 3, 30, 1, client_address));
  CompletePush(PushTo(server, 4, 40, 1, client_address));
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(client, 4, 40, 1, server_address));
  EXPECT_GE(Stats().filtered, 1u);
  CloseQueues({client, server, other});
}

// A sender of our own on raw rdma_cm and verbs that finds a demi datagram
// socket as the library does (SIDR) and then sends datagrams whose header
// claims whatever source it likes. Not thread-safe.
class ForgingSender {
 public:
  // Resolves `destination`, calling `progress` while it waits (the demi
  // socket answers only while its process is in the library). Null, and
  // *error, if it cannot.
  static std::unique_ptr<ForgingSender> Resolve(
      const sockaddr_in& destination, const std::function<void()>& progress,
      std::string* error) {
    std::unique_ptr<ForgingSender> sender(new ForgingSender());
    if (!sender->Start(destination, progress, error)) return nullptr;
    return sender;
  }

  ~ForgingSender() {
    if (ah_ != nullptr) ibv_destroy_ah(ah_);
    if (id_ != nullptr && id_->qp != nullptr) rdma_destroy_qp(id_);
    if (mr_ != nullptr) ibv_dereg_mr(mr_);
    if (cq_ != nullptr) ibv_destroy_cq(cq_);
    if (pd_ != nullptr) ibv_dealloc_pd(pd_);
    if (id_ != nullptr) rdma_destroy_id(id_);
    if (channel_ != nullptr) rdma_destroy_event_channel(channel_);
  }

  // One datagram of `payload` whose header names `claimed` as its sender;
  // true once the device sent it.
  bool Send(const sockaddr_in& claimed, const std::string& payload) {
    namespace dw = demi::rdma::datagram_wire;
    dw::DatagramHeader header;
    header.num_segments = 1;
    header.source_ipv4 = claimed.sin_addr.s_addr;
    header.source_port = ntohs(claimed.sin_port);
    header.segment_lengths[0] = static_cast<uint32_t>(payload.size());
    const size_t size = dw::EncodeHeader(header, buffer_);
    std::memcpy(buffer_ + size, payload.data(), payload.size());
    ibv_sge sge{reinterpret_cast<uintptr_t>(buffer_),
                static_cast<uint32_t>(size + payload.size()), mr_->lkey};
    ibv_send_wr wr{};
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.ud.ah = ah_;
    wr.wr.ud.remote_qpn = qp_num_;
    wr.wr.ud.remote_qkey = qkey_;
    ibv_send_wr* bad = nullptr;
    if (ibv_post_send(id_->qp, &wr, &bad) != 0) return false;
    ibv_wc wc{};
    for (int spins = 0; spins < 10000000; ++spins) {
      const int n = ibv_poll_cq(cq_, 1, &wc);
      if (n < 0) return false;
      if (n == 1) return wc.status == IBV_WC_SUCCESS;
    }
    return false;
  }

 private:
  ForgingSender() = default;

  bool Start(const sockaddr_in& destination,
             const std::function<void()>& progress, std::string* error) {
    auto fail = [error](const char* what) {
      *error = std::string(what) + ": " + std::strerror(errno);
      return false;
    };
    channel_ = rdma_create_event_channel();
    if (channel_ == nullptr) return fail("rdma_create_event_channel");
    if (fcntl(channel_->fd, F_SETFL,
              fcntl(channel_->fd, F_GETFL) | O_NONBLOCK) != 0) {
      return fail("fcntl");
    }
    if (rdma_create_id(channel_, &id_, nullptr, RDMA_PS_UDP) != 0) {
      return fail("rdma_create_id");
    }
    sockaddr_in to = destination;
    if (rdma_resolve_addr(id_, nullptr, reinterpret_cast<sockaddr*>(&to),
                          2000) != 0 ||
        !Await(RDMA_CM_EVENT_ADDR_RESOLVED, progress, error)) {
      return error->empty() ? fail("rdma_resolve_addr") : false;
    }
    if (rdma_resolve_route(id_, 2000) != 0 ||
        !Await(RDMA_CM_EVENT_ROUTE_RESOLVED, progress, error)) {
      return error->empty() ? fail("rdma_resolve_route") : false;
    }
    pd_ = ibv_alloc_pd(id_->verbs);
    cq_ = pd_ == nullptr ? nullptr
                         : ibv_create_cq(id_->verbs, 8, nullptr, nullptr, 0);
    mr_ =
        cq_ == nullptr ? nullptr : ibv_reg_mr(pd_, buffer_, sizeof(buffer_), 0);
    if (mr_ == nullptr) return fail("verbs resources");
    ibv_qp_init_attr attr{};
    attr.send_cq = attr.recv_cq = cq_;
    attr.qp_type = IBV_QPT_UD;
    attr.cap.max_send_wr = 4;
    attr.cap.max_recv_wr = 1;
    attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
    if (rdma_create_qp(id_, pd_, &attr) != 0) return fail("rdma_create_qp");
    rdma_conn_param param{};
    if (rdma_connect(id_, &param) != 0 ||
        !Await(RDMA_CM_EVENT_ESTABLISHED, progress, error)) {
      return error->empty() ? fail("rdma_connect (SIDR)") : false;
    }
    ah_ = ibv_create_ah(pd_, &ud_.ah_attr);
    if (ah_ == nullptr) return fail("ibv_create_ah");
    qp_num_ = ud_.qp_num;
    qkey_ = ud_.qkey;
    return true;
  }

  // The next event on the channel, which must be `expected` (within 10 s).
  bool Await(rdma_cm_event_type expected, const std::function<void()>& progress,
             std::string* error) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      rdma_cm_event* event = nullptr;
      if (rdma_get_cm_event(channel_, &event) != 0) {
        progress();
        continue;
      }
      const rdma_cm_event_type type = event->event;
      if (type == RDMA_CM_EVENT_ESTABLISHED) ud_ = event->param.ud;
      rdma_ack_cm_event(event);
      if (type == expected) return true;
      *error = std::string("unexpected rdma_cm event ") + rdma_event_str(type);
      return false;
    }
    *error = std::string("no ") + rdma_event_str(expected) + " within 10 s";
    return false;
  }

  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* id_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_cq* cq_ = nullptr;
  ibv_mr* mr_ = nullptr;
  ibv_ah* ah_ = nullptr;
  rdma_ud_param ud_{};
  uint32_t qp_num_ = 0;
  uint32_t qkey_ = 0;
  uint8_t buffer_[1024] = {};
};

// A ForgingSender resolving `destination`; *idle is a socket of its own
// whose pop never completes, waited on (1 ms at a time) to let the library
// answer the resolution. Null (and a test failure) if it cannot.
std::unique_ptr<ForgingSender> ResolveWithIdleSocket(
    const sockaddr_in& destination, int* idle) {
  sockaddr_in idle_address;
  *idle = BoundDatagramSocket(&idle_address);
  demi_qtoken_t idle_pop = 0;
  EXPECT_EQ(demi_pop(&idle_pop, *idle), 0);
  auto progress = [idle_pop] {
    const timespec millisecond = {0, 1000000};
    demi_qresult_t ignored{};
    (void)demi_wait(&ignored, idle_pop, &millisecond);
  };
  std::string error;
  std::unique_ptr<ForgingSender> sender =
      ForgingSender::Resolve(destination, progress, &error);
  EXPECT_NE(sender, nullptr) << error;
  return sender;
}

// Pops one datagram from `qd` and returns its payload and sender; frees it.
std::string PopPayload(int qd, sockaddr_in* sender) {
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_pop(&qt, qd), 0);
  demi_qresult_t result = WaitResult(qt);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_POP);
  if (result.qr_opcode != DEMI_OPC_POP) return "";
  demi_sgarray_t& sga = result.qr_value.sga;
  std::string payload;
  for (uint32_t s = 0; s < sga.sga_numsegs; ++s) {
    payload.append(static_cast<const char*>(sga.sga_segs[s].sgaseg_buf),
                   sga.sga_segs[s].sgaseg_len);
  }
  *sender = sga.sga_addr;
  EXPECT_EQ(demi_sgafree(&sga), 0);
  return payload;
}

// The library takes a datagram's source address from the packet (its GRH),
// not from the header: a header naming another address is dropped and
// counted as forged; sga_addr carries the packet's address.
TEST_F(DatagramTest, HeaderNamingAnotherSourceAddressIsDropped) {
  sockaddr_in target_address;
  const int target = BoundDatagramSocket(&target_address);
  int idle = -1;
  std::unique_ptr<ForgingSender> sender =
      ResolveWithIdleSocket(target_address, &idle);
  ASSERT_NE(sender, nullptr);
  const uint64_t forged_before = Stats().forged;
  sockaddr_in elsewhere = target_address;
  elsewhere.sin_addr.s_addr = inet_addr("10.9.9.9");
  elsewhere.sin_port = htons(4242);
  ASSERT_TRUE(sender->Send(elsewhere, "forged"));
  sockaddr_in honest = target_address;  // the packet's own address
  honest.sin_port = htons(4243);
  ASSERT_TRUE(sender->Send(honest, "honest"));
  sockaddr_in from{};
  EXPECT_EQ(PopPayload(target, &from), "honest");
  EXPECT_EQ(from.sin_addr.s_addr, target_address.sin_addr.s_addr);
  EXPECT_EQ(ntohs(from.sin_port), 4243);
  EXPECT_EQ(Stats().forged, forged_before + 1);
  sender.reset();
  CloseQueues({target, idle});
}

// A connected socket takes datagrams only from its peer's queue pair once
// the peer is resolved: another sender on the peer's host that writes the
// peer's port into its header is filtered out.
TEST_F(DatagramTest, ConnectedSocketTakesOnlyItsPeersQueuePair) {
  sockaddr_in client_address, peer_address;
  const int client = BoundDatagramSocket(&client_address);
  const int peer = BoundDatagramSocket(&peer_address);
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_connect(&qt, client, Sa(peer_address), sizeof(peer_address)),
            0);
  ASSERT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_CONNECT);
  int idle = -1;
  std::unique_ptr<ForgingSender> impostor =
      ResolveWithIdleSocket(client_address, &idle);
  ASSERT_NE(impostor, nullptr);
  const uint64_t filtered_before = Stats().filtered;
  ASSERT_TRUE(impostor->Send(peer_address, "impostor"));
  CompletePush(PushTo(peer, 5, 50, 1, client_address));
  ASSERT_NO_FATAL_FAILURE(PopAndCheck(client, 5, 50, 1, peer_address));
  EXPECT_EQ(Stats().filtered, filtered_before + 1);
  impostor.reset();
  CloseQueues({client, peer, idle});
}

TEST_F(DatagramTest, ResolutionFailureFailsTheToken) {
  sockaddr_in sender_address, nobody;
  const int sender = BoundDatagramSocket(&sender_address);
  const int closed = BoundDatagramSocket(&nobody);
  ASSERT_EQ(demi_close(closed), 0);  // nobody listens on that port now
  const demi_dgram_stats_t before = Stats();
  demi_qtoken_t qt = PushTo(sender, 0, 10, 1, nobody);
  demi_qresult_t result = WaitResult(qt);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNREFUSED);
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  ASSERT_EQ(demi_connect(&qt, sender, Sa(nobody), sizeof(nobody)), 0);
  result = WaitResult(qt);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECONNREFUSED);
  EXPECT_EQ(Stats().resolution_failures, before.resolution_failures + 2);
  EXPECT_EQ(demi_close(sender), 0);
}

TEST_F(DatagramTest, NoReceiveBufferDropsDatagramsNeverBlocks) {
  sockaddr_in receiver_address, sender_address;
  const int receiver = BoundDatagramSocket(&receiver_address);
  const int sender = BoundDatagramSocket(&sender_address);
  // The receiver does not pop: past its 256 buffers, datagrams are dropped,
  // and every push still completes.
  constexpr int kSent = 600;
  for (int i = 0; i < kSent; ++i) {
    CompletePush(PushTo(sender, i, 64, 1, receiver_address));
  }
  // Popped arrays are held until the end: no receive is re-posted while
  // the device may still deliver, so the library sees the queue run empty.
  std::vector<demi_sgarray_t> held;
  demi_qtoken_t qt = 0;
  for (;;) {
    ASSERT_EQ(demi_pop(&qt, receiver), 0);
    demi_qresult_t result{};
    timespec wait = {0, 200000000};
    int rc = demi_wait(&result, qt, &wait);
    if (rc == ETIMEDOUT) break;  // the pop stays pending
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
    held.push_back(result.qr_value.sga);
  }
  const int popped = static_cast<int>(held.size());
  for (demi_sgarray_t& sga : held) EXPECT_EQ(demi_sgafree(&sga), 0);
  const demi_dgram_stats_t stats = Stats();
  std::printf(
      "no-buffer drops: %d sent, %d received, receive queue ran empty %lu "
      "times, device drop counter %s (%lu)\n",
      kSent, popped, static_cast<unsigned long>(stats.receive_queue_empty),
      stats.device_drops_reported ? "reported" : "not kept by this device",
      static_cast<unsigned long>(stats.device_dropped));
  EXPECT_GT(popped, 0);
  EXPECT_LT(popped, kSent);  // dropped, and no push blocked
  EXPECT_GE(stats.receive_queue_empty, 1u);
  // Once buffers are back, datagrams arrive again: to the pending pop.
  CompletePush(PushTo(sender, 9999, 64, 1, receiver_address));
  demi_qresult_t result = WaitResult(qt);
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
  EXPECT_EQ(result.qr_value.sga.sga_addr.sin_port, sender_address.sin_port);
  ASSERT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_len, 64u);
  EXPECT_EQ(
      static_cast<uint8_t*>(result.qr_value.sga.sga_segs[0].sgaseg_buf)[63],
      PatternByte(9999, 63));
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  CloseQueues({sender, receiver});
}

TEST_F(DatagramTest, CloseCancelsPendingPopsAndKeepsPoppedMemory) {
  sockaddr_in a_address, b_address;
  const int a = BoundDatagramSocket(&a_address);
  const int b = BoundDatagramSocket(&b_address);
  CompletePush(PushTo(a, 5, 300, 3, b_address));
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, b), 0);
  demi_qresult_t kept = WaitResult(pop);
  ASSERT_EQ(kept.qr_opcode, DEMI_OPC_POP);
  ASSERT_EQ(demi_pop(&pop, b), 0);
  demi_qresult_t result{};
  EXPECT_EQ(demi_wait(&result, pop, &kZero), ETIMEDOUT);
  EXPECT_EQ(demi_close(b), 0);
  result = WaitResult(pop);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
  EXPECT_EQ(result.qr_ret, ECANCELED);
  // The popped datagram stays readable until freed, after close too.
  auto* data =
      static_cast<const uint8_t*>(kept.qr_value.sga.sga_segs[0].sgaseg_buf);
  EXPECT_EQ(data[0], PatternByte(5, 0));
  EXPECT_EQ(demi_sgafree(&kept.qr_value.sga), 0);
  EXPECT_EQ(demi_sgafree(&kept.qr_value.sga), EINVAL);  // twice
  EXPECT_EQ(demi_close(a), 0);
}

TEST_F(DatagramTest, PushToOnAStreamSocketIgnoresTheAddress) {
  int client, server, listener;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(&client, &server, &listener));
  sockaddr_in elsewhere{};
  elsewhere.sin_family = AF_INET;
  elsewhere.sin_addr.s_addr = inet_addr("192.0.2.1");
  elsewhere.sin_port = htons(9);
  demi_sgarray_t sga = MessageArray(3, 50, 2);
  demi_qtoken_t qt = 0;
  ASSERT_EQ(demi_pushto(&qt, client, &sga, Sa(elsewhere), sizeof(elsewhere)),
            0);
  CompletePush(qt);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, server), 0);
  demi_qresult_t result = WaitResult(pop);
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP);
  EXPECT_EQ(result.qr_value.sga.sga_segs[0].sgaseg_len, 25u);
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
  // The address must still be one.
  sga = MessageArray(3, 50, 2);
  EXPECT_EQ(demi_pushto(&qt, client, &sga, nullptr, sizeof(elsewhere)), EINVAL);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  CloseQueues({client, server, listener});
}

TEST_F(DatagramTest, InvalidArguments) {
  sockaddr_in bound_address, peer_address;
  const int bound = BoundDatagramSocket(&bound_address);
  const int peer = BoundDatagramSocket(&peer_address);
  demi_sgarray_t sga = MessageArray(0, 32, 1);
  demi_qtoken_t qt = 0;
  const socklen_t size = sizeof(peer_address);
  // Bad queue descriptors.
  EXPECT_EQ(demi_pushto(&qt, 987654, &sga, Sa(peer_address), size), EBADF);
  EXPECT_EQ(demi_pushto(&qt, -1, &sga, Sa(peer_address), size), EBADF);
  // Bad addresses.
  EXPECT_EQ(demi_pushto(&qt, bound, &sga, nullptr, size), EINVAL);
  EXPECT_EQ(demi_pushto(&qt, bound, &sga, Sa(peer_address), 4), EINVAL);
  EXPECT_EQ(demi_pushto(&qt, bound, &sga, Sa(peer_address), 0), EINVAL);
  sockaddr_in bad = peer_address;
  bad.sin_family = AF_INET6;
  EXPECT_EQ(demi_pushto(&qt, bound, &sga, Sa(bad), size), EINVAL);
  bad = peer_address;
  bad.sin_port = 0;
  EXPECT_EQ(demi_pushto(&qt, bound, &sga, Sa(bad), size), EINVAL);
  bad = peer_address;
  bad.sin_addr.s_addr = htonl(INADDR_ANY);
  EXPECT_EQ(demi_pushto(&qt, bound, &sga, Sa(bad), size), EINVAL);
  // Bad arrays.
  EXPECT_EQ(demi_pushto(&qt, bound, nullptr, Sa(peer_address), size), EINVAL);
  EXPECT_EQ(demi_pushto(nullptr, bound, &sga, Sa(peer_address), size), EINVAL);
  demi_sgarray_t bad_sga = sga;
  bad_sga.sga_numsegs = 0;
  EXPECT_EQ(demi_pushto(&qt, bound, &bad_sga, Sa(peer_address), size), EINVAL);
  bad_sga.sga_numsegs = DEMI_SGARRAY_MAXSIZE + 1;
  EXPECT_EQ(demi_pushto(&qt, bound, &bad_sga, Sa(peer_address), size), EINVAL);
  bad_sga = sga;
  bad_sga.sga_segs[0].sgaseg_len = 0;
  EXPECT_EQ(demi_pushto(&qt, bound, &bad_sga, Sa(peer_address), size), EINVAL);
  bad_sga = sga;
  bad_sga.sga_segs[0].sgaseg_buf = nullptr;
  EXPECT_EQ(demi_pushto(&qt, bound, &bad_sga, Sa(peer_address), size), EINVAL);
  bad_sga = sga;
  int not_a_handle = 0;
  bad_sga.sga_buf = &not_a_handle;
  EXPECT_EQ(demi_pushto(&qt, bound, &bad_sga, Sa(peer_address), size), EINVAL);
  // push without a destination; socket calls that datagrams do not have.
  EXPECT_EQ(demi_push(&qt, bound, &sga), EDESTADDRREQ);
  EXPECT_EQ(demi_listen(bound, 8), EOPNOTSUPP);
  EXPECT_EQ(demi_accept(&qt, bound), EOPNOTSUPP);
  // Unsupported protocol; binding twice; an address of no RDMA device.
  int qd = 0;
  EXPECT_EQ(demi_socket(&qd, AF_INET, SOCK_DGRAM, IPPROTO_TCP), ENOTSUP);
  EXPECT_EQ(demi_bind(bound, Sa(bound_address), sizeof(bound_address)), EINVAL);
  // An unbound datagram socket cannot send or receive (no implicit bind).
  int unbound = 0;
  ASSERT_EQ(demi_socket(&unbound, AF_INET, SOCK_DGRAM, 0), 0);
  EXPECT_EQ(demi_pushto(&qt, unbound, &sga, Sa(peer_address), size), EINVAL);
  EXPECT_EQ(demi_pop(&qt, unbound), EINVAL);
  EXPECT_EQ(demi_connect(&qt, unbound, Sa(peer_address), size), EINVAL);
  sockaddr_in any = bound_address;
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  EXPECT_EQ(demi_bind(unbound, Sa(any), sizeof(any)), EADDRNOTAVAIL);
  EXPECT_EQ(demi_close(unbound), 0);
  EXPECT_EQ(demi_close(unbound), EBADF);
  // Nothing above took a token or leaked: the array is still ours.
  EXPECT_EQ(demi_sgafree(&sga), 0);
  EXPECT_EQ(demi_dgram_stats(nullptr), EINVAL);
  CloseQueues({bound, peer});
}

// The peer process of PeerThatRebindsElsewhereIsFoundAgain: binds `port` on
// the test address, writes a byte to `ready_fd`, echoes one datagram to its
// sender and exits 0; 1 if anything fails or nothing comes in 30 s.
int RunEchoPeer(uint16_t port, int ready_fd) {
  if (demi_init(nullptr) != 0) return 1;
  absl::StatusOr<sockaddr_in> address = RdmaTestAddress(port);
  int qd = -1;
  if (!address.ok() || demi_socket(&qd, AF_INET, SOCK_DGRAM, 0) != 0 ||
      demi_bind(qd, Sa(*address), sizeof(*address)) != 0) {
    return 1;
  }
  if (write(ready_fd, "r", 1) != 1) return 1;
  close(ready_fd);
  demi_qtoken_t qt = 0;
  demi_qresult_t result{};
  const timespec thirty_seconds = {30, 0};
  if (demi_pop(&qt, qd) != 0 || demi_wait(&result, qt, &thirty_seconds) != 0 ||
      result.qr_opcode != DEMI_OPC_POP) {
    return 1;
  }
  const demi_sgarray_t& datagram = result.qr_value.sga;
  const uint32_t size = datagram.sga_segs[0].sgaseg_len;
  demi_sgarray_t echo = demi_sgaalloc(size);
  if (datagram.sga_numsegs != 1 || echo.sga_numsegs != 1) return 1;
  std::memcpy(echo.sga_segs[0].sgaseg_buf, datagram.sga_segs[0].sgaseg_buf,
              size);
  const sockaddr_in sender = datagram.sga_addr;
  if (demi_sgafree(&result.qr_value.sga) != 0 ||
      demi_pushto(&qt, qd, &echo, Sa(sender), sizeof(sender)) != 0 ||
      demi_wait(&result, qt, &thirty_seconds) != 0 ||
      result.qr_opcode != DEMI_OPC_PUSH) {
    return 1;
  }
  return demi_sgafree(&echo) == 0 && demi_close(qd) == 0 ? 0 : 1;
}

// Starts RunEchoPeer in a new process (this binary, --echo-peer) and waits
// until its socket is bound; its pid, or -1.
pid_t StartEchoPeer(uint16_t port) {
  int ready[2];
  if (pipe(ready) != 0) return -1;
  const std::string port_text = std::to_string(port);
  const std::string fd_text = std::to_string(ready[1]);
  char* argv[] = {const_cast<char*>("datagram_test"),
                  const_cast<char*>("--echo-peer"),
                  const_cast<char*>(port_text.c_str()),
                  const_cast<char*>(fd_text.c_str()), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, environ) !=
      0) {
    pid = -1;
  }
  close(ready[1]);
  pollfd wait_ready = {ready[0], POLLIN, 0};
  char byte = 0;
  if (pid > 0 &&
      (poll(&wait_ready, 1, 60000) != 1 || read(ready[0], &byte, 1) != 1)) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  close(ready[0]);
  return pid;
}

TEST_F(DatagramTest, PeerThatRebindsElsewhereIsFoundAgain) {
  // A destination is cached with the queue pair of the process bound there.
  // When that process goes and another binds the same address, datagrams to
  // the cached queue pair are lost until the route is resolved again in the
  // background (DEMI_DGRAM_ROUTE_TTL_MS, 200 ms in this test: see main).
  sockaddr_in self_address;
  const int self = BoundDatagramSocket(&self_address);
  const sockaddr_in peer = NextTestAddress();
  const demi_dgram_stats_t before = Stats();
  constexpr uint32_t kSize = 100;
  int lost = 0;
  for (uint64_t generation = 0; generation < 2; ++generation) {
    const pid_t child = StartEchoPeer(ntohs(peer.sin_port));
    ASSERT_GT(child, 0) << "the echo peer did not start";
    demi_sgarray_t ping = MessageArray(generation, kSize, 1);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, self), 0);
    bool echoed = false;
    const auto give_up =
        std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!echoed && std::chrono::steady_clock::now() < give_up) {
      demi_qtoken_t push = 0;
      ASSERT_EQ(demi_pushto(&push, self, &ping, Sa(peer), sizeof(peer)), 0);
      // Sent, even when nobody receives it: datagrams are unreliable.
      ASSERT_EQ(WaitResult(push).qr_opcode, DEMI_OPC_PUSH);
      const timespec a_while = {0, 100 * 1000 * 1000};
      demi_qresult_t result{};
      const int rc = demi_wait(&result, pop, &a_while);
      if (rc == ETIMEDOUT) {
        ++lost;
        continue;
      }
      ASSERT_EQ(rc, 0);
      ASSERT_NO_FATAL_FAILURE(
          CheckDatagram(result, generation, kSize, 1, peer));
      echoed = true;
    }
    EXPECT_EQ(demi_sgafree(&ping), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(echoed) << "generation " << generation << ": no echo in 20 s ("
                        << lost << " lost)";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  const demi_dgram_stats_t after = Stats();
  std::printf(
      "rebound peer: %d datagrams lost to the old queue pair; %llu "
      "refreshes, %llu changes, %llu drops\n",
      lost,
      static_cast<unsigned long long>(after.route_refreshes -
                                      before.route_refreshes),
      static_cast<unsigned long long>(after.route_changes -
                                      before.route_changes),
      static_cast<unsigned long long>(after.route_drops - before.route_drops));
  // The second peer was reached through a new resolution: a refresh that
  // found another queue pair, or one that failed (the first peer gone, the
  // second not bound yet) and dropped the entry.
  EXPECT_GE(after.route_changes + after.route_drops,
            before.route_changes + before.route_drops + 1);
  // The retired routes' address handles go once no send can use them: the
  // stale list does not grow with every change.
  demi_qtoken_t idle_pop = 0;
  ASSERT_EQ(demi_pop(&idle_pop, self), 0);
  for (int i = 0; i < 200 && Stats().ah_stale != 0; ++i) {
    const timespec ten_ms = {0, 10 * 1000 * 1000};
    demi_qresult_t ignored{};
    ASSERT_EQ(demi_wait(&ignored, idle_pop, &ten_ms), ETIMEDOUT);
  }
  EXPECT_EQ(Stats().ah_stale, 0u);
  CloseQueues({self});
}

TEST_F(DatagramTest, ConnectFindsAPeerThatRestartedAtTheSameAddress) {
  // demi_connect resolves a cached destination again and completes when
  // that answers: after it, the first datagram reaches the process bound to
  // the address now, however young the cached route (pushto alone keeps
  // using it until its age, DEMI_DGRAM_ROUTE_TTL_MS, passes).
  sockaddr_in self_address;
  const int self = BoundDatagramSocket(&self_address);
  const sockaddr_in peer = NextTestAddress();
  constexpr uint32_t kSize = 64;
  for (uint64_t generation = 0; generation < 3; ++generation) {
    SCOPED_TRACE("generation " + std::to_string(generation));
    const pid_t child = StartEchoPeer(ntohs(peer.sin_port));
    ASSERT_GT(child, 0) << "the echo peer did not start";
    demi_qtoken_t qt = 0;
    ASSERT_EQ(demi_connect(&qt, self, Sa(peer), sizeof(peer)), 0);
    ASSERT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_CONNECT);
    // A second connect finds the destination cached: it is resolved again.
    const demi_dgram_stats_t cached = Stats();
    ASSERT_EQ(demi_connect(&qt, self, Sa(peer), sizeof(peer)), 0);
    ASSERT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_CONNECT);
    EXPECT_GT(Stats().route_refreshes, cached.route_refreshes);

    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, self), 0);
    demi_sgarray_t ping = MessageArray(generation, kSize, 1);
    ASSERT_EQ(demi_push(&qt, self, &ping), 0);
    ASSERT_EQ(WaitResult(qt).qr_opcode, DEMI_OPC_PUSH);
    EXPECT_EQ(demi_sgafree(&ping), 0);
    const timespec five_seconds = {5, 0};
    demi_qresult_t result{};
    ASSERT_EQ(demi_wait(&result, pop, &five_seconds), 0)
        << "the first datagram after the connect was lost";
    ASSERT_NO_FATAL_FAILURE(CheckDatagram(result, generation, kSize, 1, peer));
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  CloseQueues({self});
}

}  // namespace
}  // namespace demi::testing

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--echo-peer") {
    return demi::testing::RunEchoPeer(static_cast<uint16_t>(atoi(argv[2])),
                                      atoi(argv[3]));
  }
  // Cached destinations are refreshed quickly here (the default is 5 s), for
  // PeerThatRebindsElsewhereIsFoundAgain; an explicit setting wins.
  setenv("DEMI_DGRAM_ROUTE_TTL_MS", "200", 0);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
