// A hostile peer against a demi server: a client of our own on raw
// rdma_cm and verbs (not the library) that connects as the library would,
// then sends what an honest peer never does. Each case: that connection
// alone fails (EPROTO on its tokens; a push it lied about never completes
// as done), and a second, honest connection to the same listener keeps
// working.

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <fcntl.h>
#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "rdma/wire.h"
#include "tests/libos_test_util.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

namespace wire = demi::rdma::wire;

// The hostile client. Not thread-safe. Construction blocks until the
// server accepts (run it beside the thread that accepts).
class HostilePeer {
 public:
  // Connects to `server` with the library's connection parameters, keeping
  // `receives` receive buffers of the library's size posted, offering to
  // serve `responder_resources` RDMA READs at once and to take
  // `rendezvous_quota` bytes of rendezvous messages. Null, and *error, if it
  // cannot.
  static std::unique_ptr<HostilePeer> Connect(
      const sockaddr_in& server, uint16_t receives, std::string* error,
      uint8_t responder_resources = 1,
      uint64_t rendezvous_quota = uint64_t{1} << 30) {
    std::unique_ptr<HostilePeer> peer(new HostilePeer(receives));
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &server.sin_addr, host, sizeof(host));
    const std::string port = std::to_string(ntohs(server.sin_port));
    rdma_addrinfo hints{};
    hints.ai_port_space = RDMA_PS_TCP;
    hints.ai_qp_type = IBV_QPT_RC;
    rdma_addrinfo* info = nullptr;
    if (rdma_getaddrinfo(host, port.c_str(), &hints, &info) != 0) {
      *error = std::string("rdma_getaddrinfo: ") + std::strerror(errno);
      return nullptr;
    }
    ibv_qp_init_attr attr{};
    attr.cap.max_send_wr = 8;
    attr.cap.max_recv_wr = receives;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 1;
    const int made = rdma_create_ep(&peer->id_, info, nullptr, &attr);
    rdma_freeaddrinfo(info);
    if (made != 0) {
      *error = std::string("rdma_create_ep: ") + std::strerror(errno);
      return nullptr;
    }
    peer->receive_mr_ =
        rdma_reg_msgs(peer->id_, peer->receive_.data(), peer->receive_.size());
    peer->send_mr_ =
        rdma_reg_msgs(peer->id_, peer->send_.data(), peer->send_.size());
    peer->read_mr_ =
        rdma_reg_msgs(peer->id_, peer->read_.data(), peer->read_.size());
    if (peer->receive_mr_ == nullptr || peer->send_mr_ == nullptr ||
        peer->read_mr_ == nullptr) {
      *error = std::string("rdma_reg_msgs: ") + std::strerror(errno);
      return nullptr;
    }
    for (uint16_t i = 0; i < receives; ++i) {
      if (!peer->PostReceive(i)) {
        *error = std::string("rdma_post_recv: ") + std::strerror(errno);
        return nullptr;
      }
    }
    uint8_t params[wire::kConnectionParamsSize];
    wire::EncodeConnectionParams({.receive_buffers = receives,
                                  .receive_buffer_size = kReceiveSize,
                                  .rendezvous = true,
                                  .rendezvous_quota = rendezvous_quota},
                                 params);
    rdma_conn_param param{};
    param.private_data = params;
    param.private_data_len = sizeof(params);
    param.responder_resources = responder_resources;
    param.initiator_depth = 1;
    param.retry_count = 6;
    if (rdma_connect(peer->id_, &param) != 0) {
      *error = std::string("rdma_connect: ") + std::strerror(errno);
      return nullptr;
    }
    peer->connected_ = true;
    return peer;
  }

  ~HostilePeer() {
    if (id_ == nullptr) return;
    if (connected_) (void)rdma_disconnect(id_);
    if (send_mr_ != nullptr) (void)rdma_dereg_mr(send_mr_);
    if (read_mr_ != nullptr) (void)rdma_dereg_mr(read_mr_);
    if (receive_mr_ != nullptr) (void)rdma_dereg_mr(receive_mr_);
    rdma_destroy_ep(id_);
  }

  // One SEND of `bytes`; true once it completed successfully.
  bool Send(const std::vector<uint8_t>& bytes) {
    if (bytes.size() > send_.size()) return false;
    std::memcpy(send_.data(), bytes.data(), bytes.size());
    if (rdma_post_send(id_, nullptr, send_.data(), bytes.size(), send_mr_,
                       IBV_SEND_SIGNALED) != 0) {
      return false;
    }
    std::optional<ibv_wc> wc = Poll(id_->send_cq, [] {});
    return wc.has_value() && wc->status == IBV_WC_SUCCESS;
  }

  // One RDMA READ of `length` bytes at `address` with `rkey`: the bytes if
  // it succeeded; nullopt if it failed (and its queue pair with it).
  std::optional<std::vector<uint8_t>> Read(uint64_t address, uint32_t rkey,
                                           uint32_t length) {
    if (length > read_.size()) return std::nullopt;
    ibv_sge sge{reinterpret_cast<uintptr_t>(read_.data()), length,
                read_mr_->lkey};
    ibv_send_wr wr{};
    wr.opcode = IBV_WR_RDMA_READ;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = address;
    wr.wr.rdma.rkey = rkey;
    ibv_send_wr* bad = nullptr;
    if (ibv_post_send(id_->qp, &wr, &bad) != 0) return std::nullopt;
    std::optional<ibv_wc> wc = Poll(id_->send_cq, [] {});
    if (!wc.has_value() || wc->status != IBV_WC_SUCCESS) return std::nullopt;
    return std::vector<uint8_t>(read_.begin(), read_.begin() + length);
  }

  // The next message the server sent (within 10 s), its receive buffer
  // posted again; nullopt if none came. `idle` runs between looks (the
  // server's progress: the library sends only while it is called).
  std::optional<std::vector<uint8_t>> Receive(
      const std::function<void()>& idle) {
    std::optional<ibv_wc> wc = Poll(id_->recv_cq, idle);
    if (!wc.has_value() || wc->status != IBV_WC_SUCCESS) return std::nullopt;
    const uint8_t* buffer = receive_.data() + wc->wr_id * kReceiveSize;
    std::vector<uint8_t> message(buffer, buffer + wc->byte_len);
    if (!PostReceive(static_cast<uint16_t>(wc->wr_id))) return std::nullopt;
    return message;
  }

  // The size of each receive buffer, as the library's (eager limit and the
  // largest header).
  static constexpr uint32_t kReceiveSize = 8192 + 72;

 private:
  explicit HostilePeer(uint16_t receives)
      : receive_(size_t{receives} * kReceiveSize),
        send_(4096),
        read_(64 << 10) {}

  bool PostReceive(uint16_t index) {
    return rdma_post_recv(id_, reinterpret_cast<void*>(uintptr_t{index}),
                          receive_.data() + size_t{index} * kReceiveSize,
                          kReceiveSize, receive_mr_) == 0;
  }

  static std::optional<ibv_wc> Poll(ibv_cq* cq,
                                    const std::function<void()>& idle) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    ibv_wc wc{};
    while (std::chrono::steady_clock::now() < deadline) {
      const int n = ibv_poll_cq(cq, 1, &wc);
      if (n < 0) return std::nullopt;
      if (n == 1) return wc;
      idle();
    }
    return std::nullopt;
  }

  rdma_cm_id* id_ = nullptr;
  bool connected_ = false;
  ibv_mr* receive_mr_ = nullptr;
  ibv_mr* send_mr_ = nullptr;
  ibv_mr* read_mr_ = nullptr;
  std::vector<uint8_t> receive_;
  std::vector<uint8_t> send_;
  std::vector<uint8_t> read_;  // RDMA READ target
};

// A message header as the wire encodes it.
std::vector<uint8_t> Encoded(const wire::MessageHeader& header) {
  uint8_t out[wire::kMaxEncodedSize];
  const size_t size = wire::EncodeHeader(header, out);
  return std::vector<uint8_t>(out, out + size);
}

std::vector<uint8_t> Done(uint32_t transfer_id) {
  wire::MessageHeader done{};
  done.type = wire::MessageType::kRendezvousDone;
  done.transfer_id = transfer_id;
  return Encoded(done);
}

class HostilePeerTest : public ::testing::Test {
 protected:
  // Closed connections whose peer never answers are reset after 1 s
  // (ClosedConnectionWhosePeerNeverAnswersIsReset), open ones that wait on
  // their peer fail after 1 s (the *TimesOut cases).
  static void SetUpTestSuite() {
    ASSERT_EQ(setenv("DEMI_CLOSE_TIMEOUT_MS", "1000", 1), 0);
    ASSERT_EQ(setenv("DEMI_STALL_TIMEOUT_MS", "1000", 1), 0);
    // The rendezvous cases push 64 KiB: announced, not sent in parts.
    ASSERT_EQ(setenv("DEMI_RENDEZVOUS_THRESHOLD", "8192", 1), 0);
    ASSERT_EQ(demi_init(nullptr), 0);
  }

  // A listener, a hostile peer connected to it keeping `receives` receive
  // buffers posted (and advertising `rendezvous_quota`), and the server's
  // queue for it.
  void ConnectHostile(uint16_t receives,
                      uint64_t rendezvous_quota = uint64_t{1} << 30) {
    listener_ = ListenOnTestAddress(&address_);
    demi_qtoken_t accept = 0;
    ASSERT_EQ(demi_accept(&accept, listener_), 0);
    std::string error;
    std::thread connector([&] {
      peer_ = HostilePeer::Connect(address_, receives, &error,
                                   /*responder_resources=*/1, rendezvous_quota);
    });
    demi_qresult_t accepted = WaitResult(accept);
    connector.join();
    ASSERT_NE(peer_, nullptr) << error;
    ASSERT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT);
    qd_ = accepted.qr_value.ares.qd;
  }

  // An accept that never completes, on a listener of its own: something to
  // wait on while the hostile peer works (the library progresses, sends
  // what it queued and answers rdma_cm, only in waits).
  void SetUp() override {
    idle_listener_ = ListenOnTestAddress(&idle_address_);
    ASSERT_EQ(demi_accept(&idle_accept_, idle_listener_), 0);
  }

  // Lets the server's library make progress for about a millisecond.
  void Progress() {
    const timespec millisecond = {0, 1000000};
    demi_qresult_t ignored{};
    (void)demi_wait(&ignored, idle_accept_, &millisecond);
  }

  // Runs `work` (something of the hostile peer's that needs the server to
  // answer: connecting, disconnecting) on a thread of its own while this
  // one lets the server progress.
  void WhileProgressing(const std::function<void()>& work) {
    std::atomic<bool> done{false};
    std::thread worker([&] {
      work();
      done = true;
    });
    while (!done) Progress();
    worker.join();
  }

  // The hostile peer's next message, the server progressing meanwhile.
  std::optional<std::vector<uint8_t>> ReceiveFromServer() {
    return peer_->Receive([this] { Progress(); });
  }

  // Pushes a 64 KiB demi_sgaalloc array (a rendezvous message) into *sga
  // and returns its token once the hostile peer received the announcement.
  demi_qtoken_t PushAnnounced(demi_sgarray_t* sga) {
    *sga = demi_sgaalloc(64 << 10);
    EXPECT_EQ(sga->sga_numsegs, 1u);
    demi_qtoken_t push = 0;
    EXPECT_EQ(demi_push(&push, qd_, sga), 0);
    EXPECT_TRUE(ReceiveFromServer().has_value());
    return push;
  }

  // Byte i of the arrays PushPattern pushes.

  // Pushes a demi_sgaalloc array of `size` bytes (one segment, byte i
  // PatternByte(0, i)) on qd_ into *sga and *push, and decodes into *announced
  // the rendezvous announcement the hostile peer received for it. False (with
  // the failure reported) if any step failed.
  bool PushPattern(uint32_t size, demi_sgarray_t* sga, demi_qtoken_t* push,
                   wire::MessageHeader* announced) {
    *sga = demi_sgaalloc(size);
    if (sga->sga_numsegs != 1) {
      ADD_FAILURE() << "demi_sgaalloc gave " << sga->sga_numsegs << " segments";
      return false;
    }
    auto* bytes = static_cast<uint8_t*>(sga->sga_segs[0].sgaseg_buf);
    FillPattern(bytes, size, 0);
    if (demi_push(push, qd_, sga) != 0) {
      ADD_FAILURE() << "demi_push failed";
      return false;
    }
    std::optional<std::vector<uint8_t>> message = ReceiveFromServer();
    if (!message.has_value() ||
        !wire::DecodeHeader(message->data(), message->size(), announced).ok() ||
        announced->type != wire::MessageType::kRendezvous ||
        announced->segment_lengths[0] != size) {
      ADD_FAILURE() << "no rendezvous announcement of " << size << " bytes";
      return false;
    }
    return true;
  }

  // `qt` fails with `errnum`, between 0.9 and 5 s after `since` (a 1 s
  // timeout of this suite's settings).
  static void ExpectFailsAfterASecond(
      demi_qtoken_t qt, int errnum,
      std::chrono::steady_clock::time_point since) {
    demi_qresult_t result = WaitResult(qt);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
    EXPECT_EQ(result.qr_ret, errnum) << std::strerror(result.qr_ret);
    ExpectAboutASecondSince(since);
  }

  static void ExpectAboutASecondSince(
      std::chrono::steady_clock::time_point since) {
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
            .count();
    EXPECT_GE(waited, 0.9);
    EXPECT_LT(waited, 5.0);
  }

  // `qt` completes as a failure with EPROTO (the connection's error).
  static void ExpectProtocolFailure(demi_qtoken_t qt) {
    demi_qresult_t result = WaitResult(qt);
    EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
    EXPECT_EQ(result.qr_ret, EPROTO) << std::strerror(result.qr_ret);
  }

  // A second, honest connection to the same listener carries a checked
  // message each way.
  // On a hostile connection of its own (and its own listener): sends
  // `messages` in order, expects the server's pending pop to fail with
  // EPROTO, then closes both.
  void ExpectMessagesFailTheirConnection(
      const std::vector<std::vector<uint8_t>>& messages) {
    ConnectHostile(8);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, qd_), 0);
    for (const std::vector<uint8_t>& message : messages) {
      ASSERT_TRUE(peer_->Send(message));
    }
    ExpectProtocolFailure(pop);
    EXPECT_EQ(demi_close(qd_), 0);
    qd_ = -1;
    WhileProgressing([this] { peer_.reset(); });
    EXPECT_EQ(demi_close(listener_), 0);
    listener_ = -1;
  }

  void ExpectHonestConnectionWorks() {
    int client = -1, server = -1;
    ConnectTo(address_, listener_, &client, &server);
    for (auto [from, to] : {std::pair{client, server}, {server, client}}) {
      demi_qtoken_t push = PushMessage(from, 7, 3000, 2);
      ASSERT_NE(push, 0);
      demi_qtoken_t pop = 0;
      ASSERT_EQ(demi_pop(&pop, to), 0);
      demi_qresult_t popped = WaitResult(pop);
      ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP);
      EXPECT_EQ(CheckMessage(popped, 7, 3000, 2), 3000u);
      CompletePush(push);
    }
    CloseQueues({client, server});
  }

  // The peer's (synchronous) rdma_disconnect waits for the server's
  // answer, so the server progresses meanwhile.
  void TearDown() override {
    if (qd_ >= 0) {
      EXPECT_EQ(demi_close(qd_), 0);
    }
    WhileProgressing([this] { peer_.reset(); });
    EXPECT_EQ(demi_close(idle_listener_), 0);
    if (listener_ >= 0) {
      EXPECT_EQ(demi_close(listener_), 0);
    }
  }

  sockaddr_in address_{};
  int listener_ = -1;
  int qd_ = -1;
  std::unique_ptr<HostilePeer> peer_;
  sockaddr_in idle_address_{};
  int idle_listener_ = -1;
  demi_qtoken_t idle_accept_ = 0;
};

// Malformed messages of each kind, each on a connection of its own: every
// one fails that connection's pending pop with EPROTO, and an honest
// connection to the same listener keeps working.
TEST_F(HostilePeerTest, MalformedHeaderFailsOnlyItsConnection) {
  // The fixed header: version, type, credits returned (2 bytes),
  // num_segments, 3 reserved bytes; then what the type carries.
  constexpr uint8_t kV = wire::kVersion;
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> cases = {
      {"another version",
       {0xee, 1, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 'a', 'b', 'c', 'd'}},
      {"an unknown type", {kV, 9, 0, 0, 0, 0, 0, 0}},
      {"shorter than the fixed header", {kV, 1, 0}},
      {"data with no segment", {kV, 1, 0, 0, 0, 0, 0, 0}},
      {"data with 17 segments", {kV, 1, 0, 0, 17, 0, 0, 0}},
      {"data longer than what arrived",
       {kV, 1, 0, 0, 1, 0, 0, 0, 100, 0, 0, 0, 'a', 'b', 'c', 'd'}},
      {"data with reserved bytes set",
       {kV, 1, 0, 0, 1, 0, 1, 0, 4, 0, 0, 0, 'a', 'b', 'c', 'd'}},
      {"a credit update with a segment",
       {kV, 2, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 'a', 'b', 'c', 'd'}},
      {"a batch of one",
       {kV, 6, 0, 0, 1, 0, 0, 0, 4, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 'a'}},
      {"a rendezvous cut short", {kV, 4, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0}},
      {"a done cut short", {kV, 5, 0, 0, 0, 0, 0, 0, 1, 0}},
      {"a part of no message", {kV, 8, 0, 0, 0, 0, 0, 0, 'a'}},
      {"an empty part", {kV, 8, 0, 0, 0, 0, 0, 0}},
      {"a first part holding the whole message",
       {kV, 7, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 'a', 'b', 'c', 'd'}},
  };
  for (const auto& [what, message] : cases) {
    SCOPED_TRACE(what);
    ExpectMessagesFailTheirConnection({message});
  }
  ConnectHostile(8);
  ExpectHonestConnectionWorks();
}

// Messages in parts that break the rules: each sequence (a first part of
// a 64-byte message, then what it sends next) fails that connection's pop
// with EPROTO, and an honest connection keeps working.
TEST_F(HostilePeerTest, BrokenMessageInPartsFailsOnlyItsConnection) {
  constexpr uint8_t kV = wire::kVersion;
  const std::vector<uint8_t> first = {kV, 7, 0, 0, 1,   0,   0,   0,
                                      64, 0, 0, 0, 'a', 'b', 'c', 'd'};
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> cases = {
      {"data inside it",
       {kV, 1, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 'a', 'b', 'c', 'd'}},
      {"another first part inside it", first},
      {"an end of stream inside it", {kV, 3, 0, 0, 0, 0, 0, 0}},
      {"a part past its end",
       [] {
         std::vector<uint8_t> part = {kV, 8, 0, 0, 0, 0, 0, 0};
         part.resize(part.size() + 61, 'x');  // 4 + 61 > 64
         return part;
       }()},
  };
  for (const auto& [what, next] : cases) {
    SCOPED_TRACE(what);
    ExpectMessagesFailTheirConnection({first, next});
  }
  // The same first part, completed as the rules say, is one message.
  ConnectHostile(8);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, qd_), 0);
  ASSERT_TRUE(peer_->Send(first));
  std::vector<uint8_t> rest = {kV, 8, 0, 0, 0, 0, 0, 0};
  for (int i = 4; i < 64; ++i)
    rest.push_back(static_cast<uint8_t>('a' + i % 26));
  ASSERT_TRUE(peer_->Send(rest));
  demi_qresult_t popped = WaitResult(pop);
  ASSERT_EQ(popped.qr_opcode, DEMI_OPC_POP) << popped.qr_ret;
  ASSERT_EQ(popped.qr_value.sga.sga_numsegs, 1u);
  ASSERT_EQ(popped.qr_value.sga.sga_segs[0].sgaseg_len, 64u);
  const auto* bytes =
      static_cast<const uint8_t*>(popped.qr_value.sga.sga_segs[0].sgaseg_buf);
  EXPECT_EQ(std::string(bytes, bytes + 4), "abcd");
  for (int i = 4; i < 64; ++i) {
    EXPECT_EQ(bytes[i], static_cast<uint8_t>('a' + i % 26)) << i;
  }
  EXPECT_EQ(demi_sgafree(&popped.qr_value.sga), 0);
  ExpectHonestConnectionWorks();
}

TEST_F(HostilePeerTest, DoneForNoTransferFailsOnlyItsConnection) {
  ConnectHostile(8);
  demi_qtoken_t pop = 0;
  ASSERT_EQ(demi_pop(&pop, qd_), 0);
  ASSERT_TRUE(peer_->Send(Done(0x12340005)));
  ExpectProtocolFailure(pop);
  ExpectHonestConnectionWorks();
}

// Three rendezvous pushes to a peer that keeps the fewest receives: two
// announcements go out, the third waits for a credit. A done for the third
// (slot 2, with the id the old sequential scheme would have given it) is
// for a transfer the peer has not been told of: the connection fails and
// the push never completes as done.
TEST_F(HostilePeerTest, DoneBeforeItsAnnouncementFailsTheConnection) {
  ConnectHostile(3);
  std::vector<demi_qtoken_t> pushes;
  std::vector<demi_sgarray_t> arrays;
  for (int i = 0; i < 3; ++i) {
    arrays.push_back(demi_sgaalloc(64 << 10));
    ASSERT_EQ(arrays.back().sga_numsegs, 1u);
    demi_qtoken_t push = 0;
    ASSERT_EQ(demi_push(&push, qd_, &arrays.back()), 0);
    pushes.push_back(push);
  }
  for (int i = 0; i < 2; ++i) {
    std::optional<std::vector<uint8_t>> announced = ReceiveFromServer();
    ASSERT_TRUE(announced.has_value());
    wire::MessageHeader header;
    ASSERT_TRUE(
        wire::DecodeHeader(announced->data(), announced->size(), &header).ok());
    EXPECT_EQ(header.type, wire::MessageType::kRendezvous);
    EXPECT_EQ(header.transfer_id & 0xffff, static_cast<uint32_t>(i));
  }
  ASSERT_TRUE(peer_->Send(Done(2 | (1u << 16))));
  for (demi_qtoken_t push : pushes) ExpectProtocolFailure(push);
  for (demi_sgarray_t& sga : arrays) EXPECT_EQ(demi_sgafree(&sga), 0);
  ExpectHonestConnectionWorks();
}

// A done answered once completes its push; the same done again is a
// replay: the connection fails, the other push with it.
TEST_F(HostilePeerTest, ReplayedDoneFailsTheConnection) {
  ConnectHostile(8);
  std::vector<demi_qtoken_t> pushes;
  std::vector<demi_sgarray_t> arrays;
  std::vector<uint32_t> ids;
  for (int i = 0; i < 2; ++i) {
    arrays.push_back(demi_sgaalloc(64 << 10));
    demi_qtoken_t push = 0;
    ASSERT_EQ(demi_push(&push, qd_, &arrays.back()), 0);
    pushes.push_back(push);
    std::optional<std::vector<uint8_t>> announced = ReceiveFromServer();
    ASSERT_TRUE(announced.has_value());
    wire::MessageHeader header;
    ASSERT_TRUE(
        wire::DecodeHeader(announced->data(), announced->size(), &header).ok());
    ASSERT_EQ(header.type, wire::MessageType::kRendezvous);
    ids.push_back(header.transfer_id);
  }
  EXPECT_NE(ids[0] >> 16, 0u);  // a nonce, never 0
  ASSERT_TRUE(peer_->Send(Done(ids[0])));
  demi_qresult_t first = WaitResult(pushes[0]);
  EXPECT_EQ(first.qr_opcode, DEMI_OPC_PUSH);
  ASSERT_TRUE(peer_->Send(Done(ids[0])));
  ExpectProtocolFailure(pushes[1]);
  for (demi_sgarray_t& sga : arrays) EXPECT_EQ(demi_sgafree(&sga), 0);
  ExpectHonestConnectionWorks();
}

// A rendezvous push the peer never reads nor answers, then demi_close: the
// closed connection is kept for its push only until DEMI_CLOSE_TIMEOUT_MS
// (1 s here), then reset: the push fails (ECANCELED) and its memory is the
// application's again.
TEST_F(HostilePeerTest, ClosedConnectionWhosePeerNeverAnswersIsReset) {
  ConnectHostile(8);
  demi_sgarray_t sga{};
  const demi_qtoken_t push = PushAnnounced(&sga);
  const auto closed = std::chrono::steady_clock::now();
  ASSERT_EQ(demi_close(qd_), 0);
  qd_ = -1;
  ExpectFailsAfterASecond(push, ECANCELED, closed);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  ExpectHonestConnectionWorks();
}

// The peer takes what its credits allow and never returns a credit: the
// pushes queued behind them fail with ETIMEDOUT once the connection has
// waited the stall timeout (1 s here), instead of waiting forever.
TEST_F(HostilePeerTest, PeerThatNeverReturnsCreditsTimesOut) {
  ConnectHostile(3);
  std::vector<demi_qtoken_t> pushes;
  for (int i = 0; i < 6; ++i) {
    const demi_qtoken_t push = PushMessage(qd_, i, 100, 1);
    ASSERT_NE(push, 0);
    pushes.push_back(push);
  }
  const auto pushed = std::chrono::steady_clock::now();
  int sent = 0, timed_out = 0;
  for (demi_qtoken_t push : pushes) {
    demi_qresult_t result = WaitResult(push);
    if (result.qr_opcode == DEMI_OPC_PUSH) {
      ++sent;
    } else {
      EXPECT_EQ(result.qr_opcode, DEMI_OPC_FAILED);
      EXPECT_EQ(result.qr_ret, ETIMEDOUT) << std::strerror(result.qr_ret);
      ++timed_out;
    }
    if (result.qr_value.sga.sga_numsegs > 0) {
      EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
    }
  }
  EXPECT_GE(sent, 1);
  EXPECT_GE(timed_out, 1);
  ExpectAboutASecondSince(pushed);
  // The peer did get what its credits allowed.
  EXPECT_TRUE(ReceiveFromServer().has_value());
  ExpectHonestConnectionWorks();
}

// A rendezvous push the peer neither reads nor answers, on a connection
// that stays open: it fails with ETIMEDOUT after the stall timeout, and its
// memory is the application's again.
TEST_F(HostilePeerTest, RendezvousNeverAnsweredOnAnOpenConnectionTimesOut) {
  ConnectHostile(8);
  const auto pushed = std::chrono::steady_clock::now();
  demi_sgarray_t sga{};
  const demi_qtoken_t push = PushAnnounced(&sga);
  ExpectFailsAfterASecond(push, ETIMEDOUT, pushed);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  ExpectHonestConnectionWorks();
}

// The peer sends more messages than it has credits for (the server keeps
// 64 receive buffers posted; nothing is popped meanwhile): the one past the
// last posted receive finds none, and with no RNR retries (the library's
// rule, which the peer's own parameters also ask for) it is the peer's
// queue pair that fails. The server got every message it had room for,
// intact, and an honest connection keeps working.
TEST_F(HostilePeerTest, SendingBeyondCreditsFailsOnlyThePeer) {
  ConnectHostile(8);
  constexpr int kServerReceives = 64;  // the library's default
  int delivered = 0;
  for (int i = 0; i <= kServerReceives; ++i) {
    wire::MessageHeader header{};
    header.type = wire::MessageType::kData;
    header.num_segments = 1;
    header.segment_lengths[0] = 4;
    std::vector<uint8_t> message = Encoded(header);
    for (uint8_t b = 0; b < 4; ++b)
      message.push_back(static_cast<uint8_t>(i + b));
    if (!peer_->Send(message)) break;
    ++delivered;
  }
  EXPECT_EQ(delivered, kServerReceives);
  for (int i = 0; i < delivered; ++i) {
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, qd_), 0);
    demi_qresult_t result = WaitResult(pop);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_POP) << std::strerror(result.qr_ret);
    demi_sgarray_t& sga = result.qr_value.sga;
    ASSERT_EQ(sga.sga_numsegs, 1u);
    ASSERT_EQ(sga.sga_segs[0].sgaseg_len, 4u);
    EXPECT_EQ(static_cast<const uint8_t*>(sga.sga_segs[0].sgaseg_buf)[0],
              static_cast<uint8_t>(i));
    EXPECT_EQ(demi_sgafree(&sga), 0);
  }
  ExpectHonestConnectionWorks();
}

// A rendezvous announcement above the server's quota (2 GiB, with a bogus
// key, against the default 1 GiB), on three connections one after the
// other: each fails at once with EPROTO, before anything is allocated or
// read for it (before: the server mapped and registered 2 GiB, then its
// READ with the bogus key failed).
TEST_F(HostilePeerTest, AnnouncementAboveTheQuotaFailsAtOnce) {
  for (int round = 0; round < 3; ++round) {
    if (round > 0) {
      EXPECT_EQ(demi_close(qd_), 0);
      qd_ = -1;
      WhileProgressing([this] { peer_.reset(); });
      EXPECT_EQ(demi_close(listener_), 0);
      listener_ = -1;
    }
    ConnectHostile(8);
    demi_qtoken_t pop = 0;
    ASSERT_EQ(demi_pop(&pop, qd_), 0);
    wire::MessageHeader header{};
    header.type = wire::MessageType::kRendezvous;
    header.num_segments = 1;
    header.segment_lengths[0] = 1u << 31;
    header.transfer_id = 0x00010001;
    header.remote[0] = {.address = 0x10000, .rkey = 0xbad};
    const auto announced = std::chrono::steady_clock::now();
    ASSERT_TRUE(peer_->Send(Encoded(header)));
    ExpectProtocolFailure(pop);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                            announced)
                  .count(),
              0.5);
  }
  ExpectHonestConnectionWorks();
}

// The peer advertises a rendezvous quota of 1 MiB: a larger push to it
// fails at once with EMSGSIZE (nothing sent), one within it is announced.
TEST_F(HostilePeerTest, PushAboveThePeersQuotaIsEmsgsize) {
  ConnectHostile(8, /*rendezvous_quota=*/1 << 20);
  demi_sgarray_t big = demi_sgaalloc((1 << 20) + 1);
  ASSERT_EQ(big.sga_numsegs, 1u);
  demi_qtoken_t push = 0;
  EXPECT_EQ(demi_push(&push, qd_, &big), EMSGSIZE);
  EXPECT_EQ(demi_sgafree(&big), 0);
  demi_sgarray_t within{};
  const demi_qtoken_t announced = PushAnnounced(&within);
  EXPECT_NE(announced, 0u);
  EXPECT_EQ(demi_close(qd_), 0);  // the peer never reads it: reset after 1 s
  qd_ = -1;
  EXPECT_EQ(WaitResult(announced).qr_ret, ECANCELED);
  EXPECT_EQ(demi_sgafree(&within), 0);
  ExpectHonestConnectionWorks();
}

// As the receiver of a genuine rendezvous push (40,000 bytes of a
// demi_sgaalloc buffer), the peer reads exactly what was announced: the
// whole range, intact; one byte before it, one byte after it, and the same
// range after its done all fail at the device (each on a connection of its
// own, since a failed READ fails the queue pair). Before, all three reads
// were granted: the announcement carried the key of the whole pool chunk.
TEST_F(HostilePeerTest, RendezvousReadsAreScopedToTheAnnouncedBytes) {
  constexpr uint32_t kSize = 40000;
  enum class Try { kBefore, kAfter, kAgainAfterDone };
  for (Try attempt : {Try::kBefore, Try::kAfter, Try::kAgainAfterDone}) {
    ConnectHostile(8);
    demi_sgarray_t sga{};
    demi_qtoken_t push = 0;
    wire::MessageHeader announced{};
    ASSERT_TRUE(PushPattern(kSize, &sga, &push, &announced));
    const wire::RemoteSegment remote = announced.remote[0];
    if (attempt == Try::kBefore) {
      EXPECT_FALSE(peer_->Read(remote.address - 1, remote.rkey, 1));
    } else if (attempt == Try::kAfter) {
      EXPECT_FALSE(peer_->Read(remote.address + kSize, remote.rkey, 1));
    } else {
      std::optional<std::vector<uint8_t>> read =
          peer_->Read(remote.address, remote.rkey, kSize);
      ASSERT_TRUE(read.has_value());
      for (uint32_t i = 0; i < kSize; i += 997) {
        ASSERT_EQ((*read)[i], PatternByte(0, i)) << "byte " << i;
      }
      ASSERT_TRUE(peer_->Send(Done(announced.transfer_id)));
      EXPECT_EQ(WaitResult(push).qr_opcode, DEMI_OPC_PUSH);
      push = 0;
      EXPECT_FALSE(peer_->Read(remote.address, remote.rkey, kSize));
    }
    EXPECT_EQ(demi_close(qd_), 0);
    qd_ = -1;
    if (push != 0) (void)WaitResult(push);  // failed with the connection
    EXPECT_EQ(demi_sgafree(&sga), 0);
    WhileProgressing([this] { peer_.reset(); });
    EXPECT_EQ(demi_close(listener_), 0);
    listener_ = -1;
  }
  ConnectHostile(8);
  ExpectHonestConnectionWorks();
}

// A key announced on one connection opens nothing on another: a second
// connection from the same peer (a queue pair of its own, in the same
// protection domain on the server's side) reading the announced range with
// that key fails at the device, while the connection it was announced to
// reads it intact. (Rendezvous keys are type-2 memory windows bound on the
// announcing connection's queue pair; Soft-RoCE binds them.) Before, the key
// was the registration's own, valid on every queue pair of the domain.
TEST_F(HostilePeerTest, RendezvousKeysOpenNothingOnAnotherQueuePair) {
  ConnectHostile(8);
  demi_qtoken_t accept = 0;
  ASSERT_EQ(demi_accept(&accept, listener_), 0);
  std::unique_ptr<HostilePeer> other;
  std::string error;
  std::thread connector(
      [&] { other = HostilePeer::Connect(address_, 8, &error); });
  demi_qresult_t accepted = WaitResult(accept);
  connector.join();
  ASSERT_NE(other, nullptr) << error;
  ASSERT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT);
  const int other_qd = accepted.qr_value.ares.qd;

  constexpr uint32_t kSize = 40000;
  demi_sgarray_t sga{};
  demi_qtoken_t push = 0;
  wire::MessageHeader announced{};
  ASSERT_TRUE(PushPattern(kSize, &sga, &push, &announced));
  const wire::RemoteSegment remote = announced.remote[0];

  EXPECT_FALSE(other->Read(remote.address, remote.rkey, kSize));
  std::optional<std::vector<uint8_t>> read =
      peer_->Read(remote.address, remote.rkey, kSize);
  ASSERT_TRUE(read.has_value());
  for (uint32_t i = 0; i < kSize; i += 991) {
    ASSERT_EQ((*read)[i], PatternByte(0, i)) << "byte " << i;
  }
  ASSERT_TRUE(peer_->Send(Done(announced.transfer_id)));
  EXPECT_EQ(WaitResult(push).qr_opcode, DEMI_OPC_PUSH);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  EXPECT_EQ(demi_close(other_qd), 0);
  WhileProgressing([&] { other.reset(); });
  ExpectHonestConnectionWorks();
}

// Five connection requests to a listener with a backlog of 2 that does not
// accept: two are built and connect, three are refused (nothing built for
// them); once the application accepts, there is room again.
TEST_F(HostilePeerTest, RequestsPastTheBacklogAreRefused) {
  listener_ = ListenOnTestAddress(&address_, /*backlog=*/2);
  std::vector<std::unique_ptr<HostilePeer>> peers;
  std::vector<std::string> refusals;
  WhileProgressing([&] {
    for (int i = 0; i < 5; ++i) {
      std::string error;
      std::unique_ptr<HostilePeer> peer =
          HostilePeer::Connect(address_, 8, &error);
      if (peer != nullptr) {
        peers.push_back(std::move(peer));
      } else {
        refusals.push_back(error);
      }
    }
  });
  EXPECT_EQ(peers.size(), 2u);
  ASSERT_EQ(refusals.size(), 3u);
  for (const std::string& refusal : refusals) {
    EXPECT_NE(refusal.find(std::strerror(ECONNREFUSED)), std::string::npos)
        << refusal;
  }

  // The application takes the two; a new request is built again.
  std::vector<int> accepted;
  for (int i = 0; i < 2; ++i) {
    demi_qtoken_t accept = 0;
    ASSERT_EQ(demi_accept(&accept, listener_), 0);
    demi_qresult_t result = WaitResult(accept);
    ASSERT_EQ(result.qr_opcode, DEMI_OPC_ACCEPT);
    accepted.push_back(result.qr_value.ares.qd);
  }
  std::string error;
  WhileProgressing([&] { peer_ = HostilePeer::Connect(address_, 8, &error); });
  ASSERT_NE(peer_, nullptr) << error;
  demi_qtoken_t accept = 0;
  ASSERT_EQ(demi_accept(&accept, listener_), 0);
  demi_qresult_t result = WaitResult(accept);
  ASSERT_EQ(result.qr_opcode, DEMI_OPC_ACCEPT);
  qd_ = result.qr_value.ares.qd;
  for (int qd : accepted) EXPECT_EQ(demi_close(qd), 0);
  WhileProgressing([&] { peers.clear(); });
  ExpectHonestConnectionWorks();
}

// A peer that takes and announces rendezvous messages but offers to serve
// no RDMA READs (its announcements could never be read) is refused at once,
// before anything is built for it; the listener goes on.
TEST_F(HostilePeerTest, PeerServingNoReadsIsRefused) {
  listener_ = ListenOnTestAddress(&address_);
  std::string error;
  WhileProgressing([&] {
    peer_ = HostilePeer::Connect(address_, 8, &error,
                                 /*responder_resources=*/0);
  });
  EXPECT_EQ(peer_, nullptr);
  EXPECT_NE(error.find(std::strerror(ECONNREFUSED)), std::string::npos)
      << error;
  ExpectHonestConnectionWorks();
}

// A client that stops half way through connecting: it sends the request
// with the library's parameters, gets the server's accept (CONNECT_RESPONSE:
// it has no queue pair of librdmacm's, so librdmacm leaves the last step to
// it) and holds back its "ready to use" until Establish(). Not thread-safe.
class HalfOpenPeer {
 public:
  static std::unique_ptr<HalfOpenPeer> Connect(
      const sockaddr_in& server, const std::function<void()>& progress,
      std::string* error) {
    std::unique_ptr<HalfOpenPeer> peer(new HalfOpenPeer());
    peer->channel_ = rdma_create_event_channel();
    if (peer->channel_ == nullptr ||
        fcntl(peer->channel_->fd, F_SETFL, O_NONBLOCK) != 0 ||
        rdma_create_id(peer->channel_, &peer->id_, nullptr, RDMA_PS_TCP) != 0) {
      *error = std::string("rdma_cm: ") + std::strerror(errno);
      return nullptr;
    }
    sockaddr_in target = server;
    if (rdma_resolve_addr(peer->id_, nullptr,
                          reinterpret_cast<sockaddr*>(&target), 2000) != 0 ||
        peer->Next(progress) != RDMA_CM_EVENT_ADDR_RESOLVED ||
        rdma_resolve_route(peer->id_, 2000) != 0 ||
        peer->Next(progress) != RDMA_CM_EVENT_ROUTE_RESOLVED) {
      *error = "address or route resolution failed";
      return nullptr;
    }
    uint8_t params[wire::kConnectionParamsSize];
    wire::EncodeConnectionParams({.receive_buffers = 8,
                                  .receive_buffer_size = 8192 + 72,
                                  .rendezvous = true,
                                  .rendezvous_quota = uint64_t{1} << 20},
                                 params);
    rdma_conn_param param{};
    param.private_data = params;
    param.private_data_len = sizeof(params);
    param.responder_resources = 1;
    param.initiator_depth = 1;
    param.retry_count = 6;
    param.qp_num = 0x4242;  // no queue pair: nothing will be sent on it
    if (rdma_connect(peer->id_, &param) != 0) {
      *error = std::string("rdma_connect: ") + std::strerror(errno);
      return nullptr;
    }
    const int response = peer->Next(progress);
    if (response != RDMA_CM_EVENT_CONNECT_RESPONSE) {
      *error =
          std::string("no accept: ") +
          (response < 0
               ? "nothing within 5 s"
               : rdma_event_str(static_cast<rdma_cm_event_type>(response)));
      return nullptr;
    }
    return peer;
  }

  ~HalfOpenPeer() {
    if (id_ != nullptr) rdma_destroy_id(id_);
    if (channel_ != nullptr) rdma_destroy_event_channel(channel_);
  }

  // The last step of connecting (the server's ESTABLISHED); false if the
  // server already gave up on the connection.
  bool Establish() { return rdma_establish(id_) == 0; }

  // The type of the next event within 5 s (`progress` called while none is
  // there), or -1.
  int Next(const std::function<void()>& progress) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      rdma_cm_event* event = nullptr;
      if (rdma_get_cm_event(channel_, &event) == 0) {
        const int type = event->event;
        rdma_ack_cm_event(event);
        return type;
      }
      progress();
    }
    return -1;
  }

 private:
  HalfOpenPeer() = default;
  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* id_ = nullptr;
};

// A listener closed while a connection to it is being accepted takes that
// connection with it (as it does those accepted and not handed out): the
// peer hears that the server gave up, at once or when it completes the
// connection, instead of a connection that stays open on the server with a
// qd nobody knows.
TEST_F(HostilePeerTest, ListenerClosedWhileAcceptingTakesTheConnection) {
  listener_ = ListenOnTestAddress(&address_);
  std::string error;
  std::unique_ptr<HalfOpenPeer> peer = HalfOpenPeer::Connect(
      address_, [this] { Progress(); }, &error);
  ASSERT_NE(peer, nullptr) << error;
  ASSERT_EQ(demi_close(listener_), 0);
  listener_ = -1;
  for (int i = 0; i < 20; ++i) Progress();
  (void)peer->Establish();  // may already be refused
  const int ended = peer->Next([this] { Progress(); });
  EXPECT_TRUE(ended == RDMA_CM_EVENT_REJECTED ||
              ended == RDMA_CM_EVENT_DISCONNECTED ||
              ended == RDMA_CM_EVENT_CONNECT_ERROR)
      << "the peer heard "
      << (ended < 0 ? "nothing within 5 s"
                    : rdma_event_str(static_cast<rdma_cm_event_type>(ended)));
  // The library goes on: a new listener takes an honest connection.
  listener_ = ListenOnTestAddress(&address_);
  ExpectHonestConnectionWorks();
}

}  // namespace
}  // namespace demi::testing
