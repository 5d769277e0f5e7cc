// Two endpoints connect over rdma_cm on the test device and exchange 1000
// messages with SEND/RECV, using only the rdma/ wrappers. The client sends
// messages of varied sizes with a pattern derived from their index; the server
// checks every byte and echoes the message from its receive buffer; the client
// checks every byte of the echo. Queue pairs use rnr_retry_count = 0, so a
// send that finds no receive posted is an error the test sees.

#include <infiniband/verbs.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/completion_queue.h"
#include "rdma/memory_region.h"
#include "rdma/protection_domain.h"
#include "rdma/queue_pair.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::rdma {
namespace {

using ::demi::testing::PatternByte;

constexpr int kMessages = 1000;
constexpr size_t kMaxMessage = 4096;
constexpr int kBuffers = 4;  // receive buffers per side, all kept posted
constexpr absl::Duration kStepTimeout = absl::Seconds(10);

size_t MessageSize(int message) { return 1 + (message * 977) % kMaxMessage; }

// One side of the connection. Members are declared so that destruction runs
// queue pair, memory, completion queue, protection domain, id, channel.
struct Endpoint {
  std::optional<EventChannel> channel;
  std::optional<CmId> listener;
  std::optional<CmId> id;
  std::optional<ProtectionDomain> pd;
  // Separate queues: an echo may arrive before the ack of its send.
  std::optional<CompletionQueue> send_cq;
  std::optional<CompletionQueue> recv_cq;
  std::vector<uint8_t> memory =
      std::vector<uint8_t>(kBuffers * 2 * kMaxMessage);
  std::optional<MemoryRegion> mr;
  std::optional<QueuePair> qp;
  uint64_t bytes_verified = 0;

  uint8_t* RecvBuffer(int i) { return memory.data() + i * kMaxMessage; }
  uint8_t* SendBuffer() { return memory.data() + kBuffers * kMaxMessage; }

  // Allocates the verbs resources on the id's device and posts receives.
  absl::Status SetUp() {
    DEMI_ASSIGN_OR_RETURN(auto pd_new, ProtectionDomain::Create(id->verbs()));
    pd.emplace(std::move(pd_new));
    DEMI_ASSIGN_OR_RETURN(auto send_cq_new,
                          CompletionQueue::Create(id->verbs(), 16));
    send_cq.emplace(std::move(send_cq_new));
    DEMI_ASSIGN_OR_RETURN(auto recv_cq_new,
                          CompletionQueue::Create(id->verbs(), kBuffers));
    recv_cq.emplace(std::move(recv_cq_new));
    DEMI_ASSIGN_OR_RETURN(
        auto mr_new,
        MemoryRegion::Register(pd->get(), memory.data(), memory.size(),
                               IBV_ACCESS_LOCAL_WRITE));
    mr.emplace(std::move(mr_new));
    ibv_qp_init_attr attr{};
    attr.send_cq = send_cq->get();
    attr.recv_cq = recv_cq->get();
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = 16;
    attr.cap.max_recv_wr = kBuffers;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    DEMI_ASSIGN_OR_RETURN(auto qp_new, QueuePair::Create(*id, pd->get(), attr));
    qp.emplace(std::move(qp_new));
    for (int i = 0; i < kBuffers; ++i) {
      DEMI_RETURN_IF_ERROR(PostRecv(i));
    }
    return absl::OkStatus();
  }

  absl::Status PostRecv(int buffer) {
    ibv_sge sge{.addr = reinterpret_cast<uintptr_t>(RecvBuffer(buffer)),
                .length = kMaxMessage,
                .lkey = mr->lkey()};
    ibv_recv_wr wr{};
    wr.wr_id = buffer;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    return qp->PostRecv(&wr);
  }

  absl::Status PostSend(const uint8_t* data, size_t length) {
    ibv_sge sge{.addr = reinterpret_cast<uintptr_t>(data),
                .length = static_cast<uint32_t>(length),
                .lkey = mr->lkey()};
    ibv_send_wr wr{};
    wr.wr_id = kBuffers;  // not a receive buffer
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    return qp->PostSend(&wr);
  }

  // Waits for the next completion of `opcode` (IBV_WC_SEND or IBV_WC_RECV);
  // fails on a completion error or an unexpected opcode.
  absl::StatusOr<ibv_wc> WaitFor(ibv_wc_opcode opcode) {
    CompletionQueue& cq = opcode == IBV_WC_RECV ? *recv_cq : *send_cq;
    absl::Time deadline = absl::Now() + kStepTimeout;
    ibv_wc wc{};
    while (absl::Now() < deadline) {
      const int n = cq.Poll(absl::MakeSpan(&wc, 1));
      if (n < 0) return CompletionQueue::PollError(n);
      if (n == 0) continue;
      if (wc.status != IBV_WC_SUCCESS) {
        return absl::InternalError(
            absl::StrCat("completion failed: ", ibv_wc_status_str(wc.status)));
      }
      if (wc.opcode != opcode) {
        return absl::InternalError(
            absl::StrCat("unexpected completion opcode ", wc.opcode));
      }
      return wc;
    }
    return absl::DeadlineExceededError("no completion within 10 s");
  }

  // Checks message `index` in receive buffer `wc.wr_id`.
  absl::Status Verify(const ibv_wc& wc, int index) {
    size_t expected = MessageSize(index);
    if (wc.byte_len != expected) {
      return absl::DataLossError(absl::StrCat("message ", index, " has ",
                                              wc.byte_len, " bytes, expected ",
                                              expected));
    }
    const uint8_t* data = RecvBuffer(static_cast<int>(wc.wr_id));
    for (size_t j = 0; j < expected; ++j) {
      if (data[j] != PatternByte(index, j)) {
        return absl::DataLossError(absl::StrCat("message ", index, " byte ", j,
                                                " is ", data[j], ", expected ",
                                                PatternByte(index, j)));
      }
    }
    bytes_verified += expected;
    return absl::OkStatus();
  }
};

rdma_conn_param ConnectionParameters() {
  rdma_conn_param param{};
  param.responder_resources = 1;
  param.initiator_depth = 1;
  param.retry_count = 7;
  param.rnr_retry_count = 0;  // a send without a posted receive is an error
  return param;
}

absl::Status Listen(Endpoint& server, const sockaddr_in& address) {
  DEMI_ASSIGN_OR_RETURN(auto channel, EventChannel::Create());
  server.channel.emplace(std::move(channel));
  DEMI_ASSIGN_OR_RETURN(auto listener,
                        CmId::Create(*server.channel, RDMA_PS_TCP));
  server.listener.emplace(std::move(listener));
  DEMI_RETURN_IF_ERROR(server.listener->Bind(address));
  return server.listener->Listen(4);
}

// Accepts one connection, then echoes kMessages messages.
absl::Status Serve(Endpoint& server) {
  {
    DEMI_ASSIGN_OR_RETURN(
        auto request,
        server.channel->Expect(RDMA_CM_EVENT_CONNECT_REQUEST, kStepTimeout));
    server.id.emplace(CmId::Adopt(request.id()));
  }
  DEMI_RETURN_IF_ERROR(server.SetUp());
  DEMI_RETURN_IF_ERROR(server.id->Accept(ConnectionParameters()));
  DEMI_RETURN_IF_ERROR(
      server.channel->Expect(RDMA_CM_EVENT_ESTABLISHED, kStepTimeout).status());
  for (int i = 0; i < kMessages; ++i) {
    DEMI_ASSIGN_OR_RETURN(auto recv, server.WaitFor(IBV_WC_RECV));
    DEMI_RETURN_IF_ERROR(server.Verify(recv, i));
    // Echo straight from the receive buffer, then give the buffer back.
    int buffer = static_cast<int>(recv.wr_id);
    DEMI_RETURN_IF_ERROR(
        server.PostSend(server.RecvBuffer(buffer), recv.byte_len));
    DEMI_RETURN_IF_ERROR(server.WaitFor(IBV_WC_SEND).status());
    DEMI_RETURN_IF_ERROR(server.PostRecv(buffer));
  }
  DEMI_RETURN_IF_ERROR(
      server.channel->Expect(RDMA_CM_EVENT_DISCONNECTED, kStepTimeout)
          .status());
  // Answer the client's disconnect request, or it waits for a CM timeout.
  return server.id->Disconnect();
}

absl::Status Connect(Endpoint& client, const sockaddr_in& server_address) {
  DEMI_ASSIGN_OR_RETURN(auto channel, EventChannel::Create());
  client.channel.emplace(std::move(channel));
  DEMI_ASSIGN_OR_RETURN(auto id, CmId::Create(*client.channel, RDMA_PS_TCP));
  client.id.emplace(std::move(id));
  DEMI_RETURN_IF_ERROR(
      client.id->ResolveAddress(server_address, absl::Seconds(2)));
  DEMI_RETURN_IF_ERROR(
      client.channel->Expect(RDMA_CM_EVENT_ADDR_RESOLVED, kStepTimeout)
          .status());
  DEMI_RETURN_IF_ERROR(client.id->ResolveRoute(absl::Seconds(2)));
  DEMI_RETURN_IF_ERROR(
      client.channel->Expect(RDMA_CM_EVENT_ROUTE_RESOLVED, kStepTimeout)
          .status());
  DEMI_RETURN_IF_ERROR(client.SetUp());
  DEMI_RETURN_IF_ERROR(client.id->Connect(ConnectionParameters()));
  DEMI_RETURN_IF_ERROR(
      client.channel->Expect(RDMA_CM_EVENT_ESTABLISHED, kStepTimeout).status());
  return absl::OkStatus();
}

absl::Status PingPong(Endpoint& client) {
  for (int i = 0; i < kMessages; ++i) {
    size_t size = MessageSize(i);
    demi::testing::FillPattern(client.SendBuffer(), size, i);
    DEMI_RETURN_IF_ERROR(client.PostSend(client.SendBuffer(), size));
    DEMI_RETURN_IF_ERROR(client.WaitFor(IBV_WC_SEND).status());
    // Scribble over the send buffer: the echo must come from the server.
    std::memset(client.SendBuffer(), 0, size);
    DEMI_ASSIGN_OR_RETURN(auto echo, client.WaitFor(IBV_WC_RECV));
    DEMI_RETURN_IF_ERROR(client.Verify(echo, i));
    DEMI_RETURN_IF_ERROR(client.PostRecv(static_cast<int>(echo.wr_id)));
  }
  DEMI_RETURN_IF_ERROR(client.id->Disconnect());
  DEMI_RETURN_IF_ERROR(
      client.channel->Expect(RDMA_CM_EVENT_DISCONNECTED, kStepTimeout)
          .status());
  return absl::OkStatus();
}

TEST(RdmaExchangeTest, ThousandMessagesSendRecvEveryByteChecked) {
  absl::StatusOr<sockaddr_in> address = testing::RdmaTestAddress();
  ASSERT_TRUE(address.ok()) << address.status();

  Endpoint server;
  ASSERT_TRUE(Listen(server, *address).ok());
  sockaddr_in server_address = server.listener->LocalAddress();
  ASSERT_NE(server_address.sin_port, 0);

  absl::Status server_status;
  std::thread server_thread([&] { server_status = Serve(server); });
  Endpoint client;
  absl::Status client_status = Connect(client, server_address);
  if (client_status.ok()) {
    const char* device = ibv_get_device_name(client.id->verbs()->device);
    std::printf("connected on device %s\n", device);
    if (!testing::RdmaTestDevice().empty()) {
      EXPECT_EQ(device, testing::RdmaTestDevice());
    }
    client_status = PingPong(client);
  }
  server_thread.join();
  EXPECT_TRUE(client_status.ok()) << client_status;
  EXPECT_TRUE(server_status.ok()) << server_status;

  uint64_t expected_bytes = 0;
  for (int i = 0; i < kMessages; ++i) expected_bytes += MessageSize(i);
  EXPECT_EQ(server.bytes_verified, expected_bytes);
  EXPECT_EQ(client.bytes_verified, expected_bytes);
  std::printf("verified %d messages, %lu bytes each way\n", kMessages,
              static_cast<unsigned long>(client.bytes_verified));
}

}  // namespace
}  // namespace demi::rdma
