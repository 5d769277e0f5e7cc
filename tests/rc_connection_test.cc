// RcConnection over rdma_cm on the test device: one process, one thread
// stepping both ends. A client streams messages of random sizes and segment
// counts to a server that checks every segment's length, every byte and the
// order; a server that stops releasing its buffers makes the client's sends
// queue (never an RNR error: rnr_retry_count is 0); bad arguments fail with
// EINVAL / EMSGSIZE; end of stream arrives after all data.

#include "rdma/rc_connection.h"

#include <errno.h>
#include <infiniband/verbs.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/errno_status.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/completion_group.h"
#include "rdma/large_buffer_pool.h"
#include "rdma/memory_region.h"
#include "rdma/protection_domain.h"
#include "rdma/registrar.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::rdma {
namespace {

using ::demi::testing::PatternByte;

// Checks that `message` is one segment of `length` bytes of the pattern of
// message `index`.
void ExpectOneSegmentOfPattern(const ReceivedMessage& message, uint64_t index,
                               uint32_t length) {
  ASSERT_EQ(message.num_segments, 1u);
  ASSERT_EQ(message.segment_lengths[0], length);
  EXPECT_EQ(demi::testing::FindPatternMismatch(message.segment_data[0], length,
                                               index),
            -1)
      << "message " << index;
}

constexpr absl::Duration kStepTimeout = absl::Seconds(10);
constexpr uint32_t kEagerLimit = 8192;

// Segment lengths of message `index`: 1..16 segments (each >= 1 byte)
// totalling 1..kEagerLimit bytes, derived from the index alone so both ends
// agree.
std::vector<uint32_t> Layout(uint64_t index) {
  std::mt19937_64 rng(index * 0x9e3779b97f4a7c15ull + 17);
  uint32_t total;
  switch (rng() % 4) {  // favour small messages and the extremes
    case 0:
      total = 1 + rng() % 64;
      break;
    case 1:
      total = kEagerLimit - rng() % 4;
      break;
    default:
      total = 1 + rng() % kEagerLimit;
  }
  uint32_t count = 1 + rng() % wire::kMaxSegments;
  if (count > total) count = total;
  std::vector<uint32_t> lengths(count, 1);
  for (uint32_t left = total - count; left > 0;) {
    uint32_t add = 1 + rng() % left;
    lengths[rng() % count] += add;
    left -= add;
  }
  return lengths;
}

// Records what a connection reports.
struct Sink : CompletionSink {
  std::deque<ReceivedMessage> messages;
  std::vector<uint64_t> completed;
  std::vector<absl::Status> errors;
  int end_of_stream = 0;
  uint64_t messages_at_end_of_stream = 0;
  uint64_t messages_total = 0;

  void OnSendComplete(uint64_t cookie, const absl::Status& status) override {
    completed.push_back(cookie);
    if (!status.ok()) errors.push_back(status);
  }
  void OnMessage(const ReceivedMessage& message) override {
    messages.push_back(message);
    ++messages_total;
  }
  void OnEndOfStream() override {
    ++end_of_stream;
    messages_at_end_of_stream = messages_total;
  }
  void OnFailed(const absl::Status& status) override {
    (void)status;
    ++failures;
  }
  int failures = 0;
};

struct Pair {
  std::optional<EventChannel> server_channel;
  std::optional<EventChannel> client_channel;
  std::optional<CmId> listener;
  std::unique_ptr<RcConnection> server;
  std::unique_ptr<RcConnection> client;
  Sink server_sink;
  Sink client_sink;

  ~Pair() {
    // Connections (and their ids) before the channels.
    client.reset();
    server.reset();
    listener.reset();
  }
};

// `server_options` (if not null) for the passive side, `options` otherwise.
// `before_established` (if set) runs once both connections exist, before
// either has seen ESTABLISHED.
absl::Status ConnectPair(
    Pair& p, const RcConnectionOptions& options,
    const RcConnectionOptions* server_options = nullptr,
    const std::function<absl::Status(Pair&)>& before_established = nullptr) {
  DEMI_ASSIGN_OR_RETURN(sockaddr_in address, testing::RdmaTestAddress());
  DEMI_ASSIGN_OR_RETURN(EventChannel server_channel, EventChannel::Create());
  p.server_channel.emplace(std::move(server_channel));
  DEMI_ASSIGN_OR_RETURN(EventChannel client_channel, EventChannel::Create());
  p.client_channel.emplace(std::move(client_channel));
  DEMI_ASSIGN_OR_RETURN(CmId listener,
                        CmId::Create(*p.server_channel, RDMA_PS_TCP));
  p.listener.emplace(std::move(listener));
  DEMI_RETURN_IF_ERROR(p.listener->Bind(address));
  DEMI_RETURN_IF_ERROR(p.listener->Listen(4));
  sockaddr_in server_address = p.listener->LocalAddress();

  DEMI_ASSIGN_OR_RETURN(CmId id, CmId::Create(*p.client_channel, RDMA_PS_TCP));
  DEMI_RETURN_IF_ERROR(id.ResolveAddress(server_address, absl::Seconds(2)));
  DEMI_RETURN_IF_ERROR(
      p.client_channel->Expect(RDMA_CM_EVENT_ADDR_RESOLVED, kStepTimeout)
          .status());
  DEMI_RETURN_IF_ERROR(id.ResolveRoute(absl::Seconds(2)));
  DEMI_RETURN_IF_ERROR(
      p.client_channel->Expect(RDMA_CM_EVENT_ROUTE_RESOLVED, kStepTimeout)
          .status());
  DEMI_ASSIGN_OR_RETURN(p.client,
                        RcConnection::Connect(std::move(id), options));
  DEMI_ASSIGN_OR_RETURN(
      CmEvent request,
      p.server_channel->Expect(RDMA_CM_EVENT_CONNECT_REQUEST, kStepTimeout));
  DEMI_ASSIGN_OR_RETURN(
      p.server,
      RcConnection::Accept(std::move(request),
                           server_options ? *server_options : options));
  if (before_established) DEMI_RETURN_IF_ERROR(before_established(p));
  {
    DEMI_ASSIGN_OR_RETURN(
        CmEvent established,
        p.client_channel->Expect(RDMA_CM_EVENT_ESTABLISHED, kStepTimeout));
    DEMI_RETURN_IF_ERROR(p.client->OnEstablished(established));
  }
  {
    DEMI_ASSIGN_OR_RETURN(
        CmEvent established,
        p.server_channel->Expect(RDMA_CM_EVENT_ESTABLISHED, kStepTimeout));
    DEMI_RETURN_IF_ERROR(p.server->OnEstablished(established));
  }
  return absl::OkStatus();
}

// A completion group of the test's own on the test device, which `probe`
// (a pair kept only for that, and alive as long as the group) tells.
struct OwnGroup {
  Pair probe;
  std::unique_ptr<CompletionGroup> group;
};
absl::Status MakeOwnGroup(OwnGroup& own,
                          const CompletionGroupOptions& group_options = {}) {
  DEMI_RETURN_IF_ERROR(ConnectPair(own.probe, RcConnectionOptions{}));
  DEMI_ASSIGN_OR_RETURN(
      own.group,
      CompletionGroup::Create(own.probe.client->id().verbs(), group_options));
  return absl::OkStatus();
}

// Connects `pair` with `options` on `group` (both ends), each end reporting
// to its own sink.
absl::Status ConnectOnGroup(Pair& pair, RcConnectionOptions options,
                            CompletionGroup& group) {
  options.completions = &group;
  DEMI_RETURN_IF_ERROR(ConnectPair(pair, options));
  pair.client->set_sink(&pair.client_sink);
  pair.server->set_sink(&pair.server_sink);
  return absl::OkStatus();
}

// Drives a client streaming to a server; checks everything the server gets.
// The client disconnects, the server answers, and both connections fail
// what they still hold with ECONNRESET, as the libOS does on DISCONNECTED.
absl::Status DisconnectBoth(Pair& pair) {
  DEMI_RETURN_IF_ERROR(pair.client->id().Disconnect());
  DEMI_RETURN_IF_ERROR(
      pair.server_channel->Expect(RDMA_CM_EVENT_DISCONNECTED, kStepTimeout)
          .status());
  DEMI_RETURN_IF_ERROR(pair.server->id().Disconnect());
  DEMI_RETURN_IF_ERROR(
      pair.client_channel->Expect(RDMA_CM_EVENT_DISCONNECTED, kStepTimeout)
          .status());
  pair.client->FailAll(ECONNRESET, pair.client_sink);
  pair.server->FailAll(ECONNRESET, pair.server_sink);
  return absl::OkStatus();
}

class Stream {
 public:
  Stream(Pair& pair, uint32_t send_queue_depth)
      : pair_(pair),
        slots_(2 * send_queue_depth + 1),
        memory_(static_cast<size_t>(slots_) * kEagerLimit) {}

  absl::Status Register() {
    DEMI_ASSIGN_OR_RETURN(
        MemoryRegion mr,
        MemoryRegion::Register(pair_.client->pd(), memory_.data(),
                               memory_.size(), IBV_ACCESS_LOCAL_WRITE));
    mr_.emplace(std::move(mr));
    return absl::OkStatus();
  }

  // Tries to send the next message. Returns false (and OK) if it must wait:
  // no free send memory, or Send said EAGAIN.
  absl::StatusOr<bool> TrySendNext() {
    uint64_t index = sent_;
    if (index - pair_.client_sink.completed.size() >= slots_) return false;
    uint8_t* slot = memory_.data() + (index % slots_) * kEagerLimit;
    std::vector<uint32_t> lengths = Layout(index);
    Segment segments[wire::kMaxSegments];
    size_t offset = 0;
    for (size_t s = 0; s < lengths.size(); ++s) {
      segments[s] = Segment{slot + offset, lengths[s], mr_->lkey(), 0};
      offset += lengths[s];
    }
    if (prepared_ != index + 1) {
      demi::testing::FillPattern(slot, offset, index);
      prepared_ = index + 1;
    }
    absl::Status status = pair_.client->Send(
        absl::MakeConstSpan(segments, lengths.size()), index);
    if (ErrnoFromStatus(status) == EAGAIN) {
      ++eagain_;
      return false;
    }
    DEMI_RETURN_IF_ERROR(status);
    ++sent_;
    return true;
  }

  // Sends up to `limit` messages in total, as far as possible now.
  absl::Status SendUpTo(uint64_t limit) {
    while (sent_ < limit) {
      DEMI_ASSIGN_OR_RETURN(bool sent, TrySendNext());
      if (!sent) break;
    }
    return absl::OkStatus();
  }

  // Polls both ends once, checks completions and what the server got, and
  // releases the received buffers if `release`.
  absl::Status Step(bool release) {
    DEMI_RETURN_IF_ERROR(pair_.client->Poll(pair_.client_sink));
    DEMI_RETURN_IF_ERROR(pair_.server->Poll(pair_.server_sink));
    Sink& client = pair_.client_sink;
    if (!client.errors.empty()) return client.errors.front();
    for (; checked_completions_ < client.completed.size();
         ++checked_completions_) {
      if (client.completed[checked_completions_] != checked_completions_) {
        return absl::InternalError(
            absl::StrCat("completion ", checked_completions_, " has cookie ",
                         client.completed[checked_completions_]));
      }
    }
    Sink& server = pair_.server_sink;
    while (!server.messages.empty()) {
      ReceivedMessage message = server.messages.front();
      server.messages.pop_front();
      DEMI_RETURN_IF_ERROR(Verify(message));
      held_.push_back(message.buffer_index);
    }
    if (release) {
      for (uint32_t buffer : held_) {
        DEMI_RETURN_IF_ERROR(pair_.server->Release(buffer));
      }
      held_.clear();
    }
    return absl::OkStatus();
  }

  // Streams until `count` more messages have been sent, received and
  // completed.
  absl::Status Run(uint64_t count) {
    uint64_t limit = sent_ + count;
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (received_ < limit || pair_.client_sink.completed.size() < limit) {
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("stream stuck at ", received_, " received"));
      }
      DEMI_RETURN_IF_ERROR(SendUpTo(limit));
      DEMI_RETURN_IF_ERROR(Step(/*release=*/true));
    }
    return absl::OkStatus();
  }

  uint64_t sent() const { return sent_; }
  uint64_t received() const { return received_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t eagain() const { return eagain_; }
  size_t held() const { return held_.size(); }

 private:
  absl::Status Verify(const ReceivedMessage& message) {
    uint64_t index = received_;
    std::vector<uint32_t> lengths = Layout(index);
    if (message.num_segments != lengths.size()) {
      return absl::DataLossError(
          absl::StrCat("message ", index, " has ", message.num_segments,
                       " segments, expected ", lengths.size()));
    }
    size_t offset = 0;
    for (size_t s = 0; s < lengths.size(); ++s) {
      if (message.segment_lengths[s] != lengths[s]) {
        return absl::DataLossError(absl::StrCat(
            "message ", index, " segment ", s, " has ",
            message.segment_lengths[s], " bytes, expected ", lengths[s]));
      }
      for (uint32_t j = 0; j < lengths[s]; ++j, ++offset) {
        if (message.segment_data[s][j] != PatternByte(index, offset)) {
          return absl::DataLossError(
              absl::StrCat("message ", index, " byte ", offset, " is wrong"));
        }
      }
    }
    bytes_ += offset;
    ++received_;
    return absl::OkStatus();
  }

  Pair& pair_;
  const uint32_t slots_;
  std::vector<uint8_t> memory_;
  std::optional<MemoryRegion> mr_;
  uint64_t sent_ = 0;
  uint64_t prepared_ = 0;
  uint64_t received_ = 0;
  uint64_t bytes_ = 0;
  uint64_t eagain_ = 0;
  size_t checked_completions_ = 0;
  std::vector<uint32_t> held_;
};

TEST(RcConnectionTest, StreamBackpressureErrorsEndOfStream) {
  RcConnectionOptions options;  // 64 receive buffers, 8 KiB, 64 sends
  ASSERT_EQ(options.eager_limit, kEagerLimit);
  Pair pair;
  absl::Status connected = ConnectPair(pair, options);
  ASSERT_TRUE(connected.ok()) << connected;
  std::printf("connected on %s; max_inline_data %u\n",
              ibv_get_device_name(pair.client->id().verbs()->device),
              pair.client->max_inline_data());
  Stream stream(pair, options.send_queue_depth);
  ASSERT_TRUE(stream.Register().ok());

  // (3) Argument errors, before anything else.
  {
    uint8_t byte = 0;
    Segment one{&byte, 1, 0, 0};
    EXPECT_EQ(ErrnoFromStatus(pair.client->Send({}, 1)), EINVAL);
    Segment seventeen[17];
    for (Segment& s : seventeen) s = one;
    EXPECT_EQ(ErrnoFromStatus(
                  pair.client->Send(absl::MakeConstSpan(seventeen, 17), 1)),
              EINVAL);
    Segment big[2] = {{&byte, kEagerLimit, 0, 0}, {&byte, 1, 0, 0}};
    EXPECT_EQ(ErrnoFromStatus(pair.client->Send(big, 1)), EMSGSIZE);
    EXPECT_TRUE(pair.client->status().ok());
    EXPECT_TRUE(pair.client->idle());
    std::printf("argument errors: EINVAL (0 and 17 segments), EMSGSIZE\n");
  }

  // (1) 10000 messages, every segment and byte checked, in order.
  absl::Status run = stream.Run(10000);
  ASSERT_TRUE(run.ok()) << run;
  std::printf("stream: %lu messages, %lu bytes verified\n",
              static_cast<unsigned long>(stream.received()),
              static_cast<unsigned long>(stream.bytes()));

  // (2) The server stops releasing: the client's sends queue, then fail
  // with EAGAIN once the FIFO is full; nothing is lost and no RNR happens.
  {
    uint64_t target = stream.sent() + 1000;
    uint64_t eagain_before = stream.eagain();
    absl::Time until = absl::Now() + absl::Milliseconds(500);
    while (absl::Now() < until) {
      ASSERT_TRUE(stream.SendUpTo(target).ok());
      absl::Status step = stream.Step(/*release=*/false);
      ASSERT_TRUE(step.ok()) << step;
    }
    std::printf(
        "stalled: server holds %zu buffers, client has %u queued and %u "
        "posted sends, %lu EAGAIN\n",
        stream.held(), pair.client->queued_sends(), pair.client->posted_sends(),
        static_cast<unsigned long>(stream.eagain() - eagain_before));
    EXPECT_LT(stream.held(), options.receive_buffers);
    EXPECT_GT(stream.held(), 0u);
    // The FIFO's last place is kept for the end of stream.
    EXPECT_EQ(pair.client->queued_sends(), options.send_queue_depth - 1);
    EXPECT_GT(stream.eagain(), eagain_before);
    EXPECT_TRUE(pair.client->status().ok());
    EXPECT_TRUE(pair.server->status().ok());
    // Releases restart: everything arrives.
    uint64_t received_before = stream.received();
    absl::Status resumed = stream.Run(target - stream.sent());
    ASSERT_TRUE(resumed.ok()) << resumed;
    std::printf("backpressure: %lu messages after resuming, %lu in total\n",
                static_cast<unsigned long>(stream.received() - received_before),
                static_cast<unsigned long>(stream.received()));
  }

  // (4) End of stream after all data, even when queued behind it.
  {
    ASSERT_TRUE(stream.SendUpTo(stream.sent() + 200).ok());
    uint64_t total = stream.sent();
    // Right behind the data, queued if the FIFO has room (retry on EAGAIN).
    absl::Status eos = pair.client->SendEndOfStream();
    bool eos_queued = eos.ok() && pair.client->queued_sends() > 0;
    while (ErrnoFromStatus(eos) == EAGAIN) {
      absl::Status step = stream.Step(/*release=*/true);
      ASSERT_TRUE(step.ok()) << step;
      eos = pair.client->SendEndOfStream();
      eos_queued = eos.ok() && pair.client->queued_sends() > 0;
    }
    ASSERT_TRUE(eos.ok()) << eos;
    EXPECT_TRUE(eos_queued);
    uint8_t byte = 0;
    Segment one{&byte, 1, 0, 0};
    EXPECT_EQ(ErrnoFromStatus(pair.client->Send({&one, 1}, 1)), EPIPE);
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (pair.server_sink.end_of_stream == 0 || !pair.client->idle()) {
      ASSERT_LT(absl::Now(), deadline) << "no end of stream";
      absl::Status step = stream.Step(/*release=*/true);
      ASSERT_TRUE(step.ok()) << step;
    }
    EXPECT_EQ(pair.server_sink.end_of_stream, 1);
    EXPECT_EQ(pair.server_sink.messages_at_end_of_stream, total);
    EXPECT_EQ(stream.received(), total);
    std::printf("end of stream after %lu messages (queued behind data)\n",
                static_cast<unsigned long>(total));
  }

  const CreditAccount& server_credits = *pair.server->credits();
  const CreditAccount& client_credits = *pair.client->credits();
  std::printf(
      "client: %lu data sent, %lu credit updates; server: %lu received, %lu "
      "credit updates\n",
      static_cast<unsigned long>(client_credits.data_messages_sent()),
      static_cast<unsigned long>(client_credits.credit_updates_sent()),
      static_cast<unsigned long>(server_credits.messages_received()),
      static_cast<unsigned long>(server_credits.credit_updates_sent()));
  // Queued sends went out in chains: fewer doorbells than messages.
  std::printf("client: %lu doorbells for %lu sends\n",
              static_cast<unsigned long>(pair.client->doorbells()),
              static_cast<unsigned long>(client_credits.data_messages_sent()));
  EXPECT_LT(pair.client->doorbells(), client_credits.data_messages_sent());

  // Disconnect; the passive side answers. Then both fail cleanly.
  absl::Status disconnected = DisconnectBoth(pair);
  ASSERT_TRUE(disconnected.ok()) << disconnected;
  (void)pair.client->Poll(pair.client_sink);
  (void)pair.server->Poll(pair.server_sink);
  EXPECT_TRUE(pair.client->idle());
  EXPECT_TRUE(pair.client_sink.errors.empty());
  EXPECT_EQ(pair.client_sink.completed.size(), stream.sent());
  uint8_t byte = 0;
  Segment one{&byte, 1, 0, 0};
  EXPECT_EQ(ErrnoFromStatus(pair.client->Send({&one, 1}, 1)), ECONNRESET);

  std::printf("verified %lu messages, %lu bytes\n",
              static_cast<unsigned long>(stream.received()),
              static_cast<unsigned long>(stream.bytes()));
}

// A disconnect while sends wait for credits: every cookie is reported exactly
// once, the delivered ones OK and the queued ones with ECONNRESET.
TEST(RcConnectionTest, DisconnectFailsQueuedSendsOnce) {
  RcConnectionOptions options;
  options.receive_buffers = 4;
  options.send_queue_depth = 8;
  Pair pair;
  absl::Status connected = ConnectPair(pair, options);
  ASSERT_TRUE(connected.ok()) << connected;
  Stream stream(pair, options.send_queue_depth);
  ASSERT_TRUE(stream.Register().ok());
  absl::Time until = absl::Now() + absl::Milliseconds(200);
  while (absl::Now() < until) {
    ASSERT_TRUE(stream.SendUpTo(1000).ok());
    absl::Status step = stream.Step(/*release=*/false);
    ASSERT_TRUE(step.ok()) << step;
  }
  uint32_t queued = pair.client->queued_sends();
  EXPECT_EQ(queued, options.send_queue_depth - 1);  // the last is EOS's
  EXPECT_EQ(stream.received() + queued, stream.sent());

  absl::Status disconnected = DisconnectBoth(pair);
  ASSERT_TRUE(disconnected.ok()) << disconnected;
  absl::Time deadline = absl::Now() + kStepTimeout;
  while (!pair.client->idle() && absl::Now() < deadline) {
    (void)pair.client->Poll(pair.client_sink);
  }
  (void)pair.server->Poll(pair.server_sink);
  EXPECT_TRUE(pair.client->idle());
  EXPECT_EQ(ErrnoFromStatus(pair.client->status()), ECONNRESET);

  // Cookies 0..sent-1, each once, in order; errors only for the queued ones.
  const Sink& sink = pair.client_sink;
  ASSERT_EQ(sink.completed.size(), stream.sent());
  for (uint64_t i = 0; i < sink.completed.size(); ++i) {
    EXPECT_EQ(sink.completed[i], i);
  }
  EXPECT_EQ(sink.errors.size(), queued);
  for (const absl::Status& error : sink.errors) {
    EXPECT_EQ(ErrnoFromStatus(error), ECONNRESET) << error;
  }
  uint8_t byte = 0;
  Segment one{&byte, 1, 0, 0};
  EXPECT_EQ(ErrnoFromStatus(pair.client->Send({&one, 1}, 1)), ECONNRESET);
  std::printf("disconnect: %lu delivered, %zu queued sends failed once\n",
              static_cast<unsigned long>(stream.received()),
              sink.errors.size());
}

}  // namespace
}  // namespace demi::rdma

namespace demi::rdma {
namespace {

using ::demi::testing::PatternByte;

// A message that fits max_inline_data is done when Send returns (its memory
// copied into the work request): done_at_post is set, the cookie is never
// reported, and the bytes arrive as they were at Send although the memory is
// rewritten at once. Larger ones are reported as before.
// The ACK timeout and retry count of the options are what the queue pairs
// run with (rdma_cm applies the timeout as it moves them to RTS; its own
// default on RoCE is 18 or more).
TEST(RcConnectionTest, AckTimeoutAndRetryCountReachTheQueuePairs) {
  RcConnectionOptions client_options;
  client_options.ack_timeout = 12;
  client_options.retry_count = 5;
  RcConnectionOptions server_options;
  server_options.ack_timeout = 15;
  Pair pair;
  absl::Status connected = ConnectPair(pair, client_options, &server_options);
  ASSERT_TRUE(connected.ok()) << connected;
  auto query = [](RcConnection& connection) {
    ibv_qp_attr attr{};
    ibv_qp_init_attr init{};
    EXPECT_EQ(
        ibv_query_qp(connection.id().qp(), &attr,
                     IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_STATE, &init),
        0);
    EXPECT_EQ(attr.qp_state, IBV_QPS_RTS);
    return attr;
  };
  const ibv_qp_attr client = query(*pair.client);
  EXPECT_EQ(client.timeout, 12);
  EXPECT_EQ(client.retry_cnt, 5);
  const ibv_qp_attr server = query(*pair.server);
  EXPECT_EQ(server.timeout, 15);

  // Out of range: refused before anything is created (a Pair each: a
  // Pair's channels and listener are made once).
  RcConnectionOptions bad;
  bad.ack_timeout = 32;
  {
    Pair refused;
    EXPECT_EQ(ErrnoFromStatus(ConnectPair(refused, bad)), EINVAL);
  }
  bad.ack_timeout = 14;
  bad.retry_count = 8;
  {
    Pair refused;
    EXPECT_EQ(ErrnoFromStatus(ConnectPair(refused, bad)), EINVAL);
  }
}

// A keepalive probe on a healthy connection completes quietly (no report,
// the connection stays healthy and carries messages after it); once the
// peer's queue pair is gone (its process died without a word, its host is
// down) the probe exhausts its retries and fails the connection with
// ETIMEDOUT, reported once.
TEST(RcConnectionTest, KeepaliveFindsAPeerThatIsGone) {
  RcConnectionOptions options;
  options.ack_timeout = 10;  // 4 ms a retry: the test takes tens of ms
  options.retry_count = 2;
  Pair pair;
  absl::Status connected = ConnectPair(pair, options);
  ASSERT_TRUE(connected.ok()) << connected;

  pair.client->SendKeepalive(absl::Now());
  EXPECT_EQ(pair.client->keepalives(), 1u);
  pair.client->SendKeepalive(absl::Now());  // one out already: nothing more
  EXPECT_EQ(pair.client->keepalives(), 1u);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!pair.client->idle() && absl::Now() < deadline) {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
  }
  ASSERT_TRUE(pair.client->idle()) << "the probe never completed";
  EXPECT_TRUE(pair.client->status().ok());
  EXPECT_TRUE(pair.client_sink.completed.empty());
  EXPECT_EQ(pair.client_sink.failures, 0);

  // The peer's queue pair goes away without a disconnect (its connection
  // object is destroyed; the client is not told).
  pair.server.reset();
  pair.client->SendKeepalive(absl::Now());
  EXPECT_EQ(pair.client->keepalives(), 2u);
  absl::Status status;
  while (status.ok() && absl::Now() < deadline) {
    status = pair.client->Poll(pair.client_sink);
  }
  EXPECT_EQ(ErrnoFromStatus(status), ETIMEDOUT) << status;
  EXPECT_EQ(pair.client_sink.failures, 1);
  pair.client->SendKeepalive(absl::Now());  // failed: nothing more is posted
  EXPECT_EQ(pair.client->keepalives(), 2u);
}

// A probe that never completes (rxe retries forever with retry_count 7;
// on other devices the retries run out first, with the same result): the
// next SendKeepalive past StuckAfter() fails the connection with ETIMEDOUT
// instead of leaving it pending forever.
TEST(RcConnectionTest, KeepaliveFailsAConnectionWhoseProbeNeverCompletes) {
  RcConnectionOptions options;
  options.ack_timeout = 10;
  options.retry_count = 7;
  Pair pair;
  absl::Status connected = ConnectPair(pair, options);
  ASSERT_TRUE(connected.ok()) << connected;
  pair.server.reset();
  const absl::Time start = absl::Now();
  pair.client->SendKeepalive(start);
  absl::Status status;
  while (status.ok() && absl::Now() < start + absl::Milliseconds(300)) {
    status = pair.client->Poll(pair.client_sink);
  }
  if (status.ok()) {  // still out: the watchdog's turn
    EXPECT_EQ(pair.client->keepalives(), 1u);
    pair.client->SendKeepalive(start + pair.client->StuckAfter() / 2);
    EXPECT_TRUE(pair.client->Poll(pair.client_sink).ok()) << "too early";
    pair.client->SendKeepalive(start + pair.client->StuckAfter() +
                               absl::Milliseconds(1));
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (status.ok() && absl::Now() < deadline) {
      status = pair.client->Poll(pair.client_sink);
    }
  }
  EXPECT_EQ(ErrnoFromStatus(status), ETIMEDOUT) << status;
  EXPECT_EQ(pair.client_sink.failures, 1);
  EXPECT_EQ(pair.client->keepalives(), 1u);
}

TEST(RcConnectionTest, InlineSendsAreDoneAtPost) {
  RcConnectionOptions options;
  Pair pair;
  absl::Status connected = ConnectPair(pair, options);
  ASSERT_TRUE(connected.ok()) << connected;
  ASSERT_GT(pair.client->max_inline_data(), 64u + 16u)
      << "the device gives no inline room";
  std::vector<uint8_t> memory(8192);
  absl::StatusOr<MemoryRegion> mr = MemoryRegion::Register(
      pair.client->pd(), memory.data(), memory.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(mr.ok()) << mr.status();

  // Polls both ends; checks what the server got (message i: 64 pattern
  // bytes of index i) and releases it.
  int received = 0;
  auto drain = [&]() {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
    ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
    while (!pair.server_sink.messages.empty()) {
      ReceivedMessage message = pair.server_sink.messages.front();
      pair.server_sink.messages.pop_front();
      ExpectOneSegmentOfPattern(message, received, 64);
      ++received;
      ASSERT_TRUE(pair.server->Release(message.buffer_index).ok());
    }
  };

  constexpr int kSmall = 200;
  int done_count = 0;
  for (int i = 0; i < kSmall; ++i) {
    demi::testing::FillPattern(memory.data(), 64, i);
    Segment segment{memory.data(), 64, mr->lkey(), 0};
    bool done = false;
    absl::Status sent =
        pair.client->Send(absl::MakeConstSpan(&segment, 1), 1000 + i, &done);
    ASSERT_TRUE(sent.ok()) << sent;
    if (done) {
      ++done_count;
      std::memset(memory.data(), 0xee, 64);  // the memory is free again
    } else {
      // Queued (no credit yet): the memory stays as it is until reported.
      absl::Time deadline = absl::Now() + absl::Seconds(10);
      const uint64_t cookie = 1000 + i;
      while (std::find(pair.client_sink.completed.begin(),
                       pair.client_sink.completed.end(),
                       cookie) == pair.client_sink.completed.end() &&
             absl::Now() < deadline) {
        ASSERT_NO_FATAL_FAILURE(drain());
      }
    }
    ASSERT_NO_FATAL_FAILURE(drain());
  }
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (received < kSmall && absl::Now() < deadline) {
    ASSERT_NO_FATAL_FAILURE(drain());
  }
  EXPECT_EQ(received, kSmall);
  EXPECT_GT(done_count, kSmall / 2) << "few small sends went inline at post";
  // Exactly the sends not done at post were reported, each once.
  EXPECT_EQ(pair.client_sink.completed.size(),
            static_cast<size_t>(kSmall - done_count));
  EXPECT_TRUE(pair.client_sink.errors.empty());

  // Above the inline limit: not done at post, reported once.
  Segment big{memory.data(), 4096, mr->lkey(), 0};
  bool done = true;
  const size_t before = pair.client_sink.completed.size();
  ASSERT_TRUE(pair.client->Send(absl::MakeConstSpan(&big, 1), 77, &done).ok());
  EXPECT_FALSE(done);
  deadline = absl::Now() + absl::Seconds(10);
  while (pair.client_sink.completed.size() == before &&
         absl::Now() < deadline) {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
    ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
  }
  ASSERT_EQ(pair.client_sink.completed.size(), before + 1);
  EXPECT_EQ(pair.client_sink.completed.back(), 77u);
}

// Sends done at post need no completion: only every signal_interval()-th
// of a run is signaled, and its completion retires the slots of the ones
// before it. Checked by the send slots in use: after interval - 1 such sends
// have all arrived, no completion came back to free their slots; the next
// send is signaled and frees them all. A graceful end of stream after a few
// more unsignaled sends still leaves the connection idle.
TEST(RcConnectionTest, SendsDoneAtPostAreSignaledOnlyNowAndThen) {
  RcConnectionOptions options;
  options.coalesce_sends = false;  // every send posted by Send() itself
  options.send_queue_depth = 32;
  options.receive_buffers = 64;
  Pair pair;
  absl::Status connected = ConnectPair(pair, options);
  ASSERT_TRUE(connected.ok()) << connected;
  const uint32_t interval = pair.client->signal_interval();
  ASSERT_EQ(interval, 8u);
  std::vector<uint8_t> memory(64, 7);
  absl::StatusOr<MemoryRegion> mr = MemoryRegion::Register(
      pair.client->pd(), memory.data(), memory.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(mr.ok()) << mr.status();
  Segment segment{memory.data(), 64, mr->lkey(), 0};

  size_t received = 0;
  auto poll_until = [&](size_t messages, uint32_t posted) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while ((received < messages || pair.client->posted_sends() != posted) &&
           absl::Now() < deadline) {
      ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
      ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
      while (!pair.server_sink.messages.empty()) {
        const ReceivedMessage message = pair.server_sink.messages.front();
        pair.server_sink.messages.pop_front();
        ++received;
        ASSERT_TRUE(pair.server->Release(message.buffer_index).ok());
      }
    }
  };
  auto send_done_at_post = [&](uint64_t cookie) {
    bool done = false;
    ASSERT_TRUE(
        pair.client->Send(absl::MakeConstSpan(&segment, 1), cookie, &done)
            .ok());
    ASSERT_TRUE(done) << "send " << cookie << " was not done at post";
  };

  for (uint32_t i = 0; i + 1 < interval; ++i) {
    ASSERT_NO_FATAL_FAILURE(send_done_at_post(i));
  }
  // Let every message arrive (and the acknowledgements come back).
  ASSERT_NO_FATAL_FAILURE(poll_until(interval - 1, interval - 1));
  for (int round = 0; round < 100; ++round) {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
  }
  EXPECT_EQ(received, interval - 1);
  EXPECT_EQ(pair.client->posted_sends(), interval - 1)
      << "an unsignaled send completed";
  ASSERT_NO_FATAL_FAILURE(send_done_at_post(interval));
  ASSERT_NO_FATAL_FAILURE(poll_until(interval, 0));
  EXPECT_EQ(pair.client->posted_sends(), 0u)
      << "the signaled send did not retire the ones before it";
  EXPECT_TRUE(pair.client_sink.completed.empty());

  for (uint32_t i = 0; i < 3; ++i) {
    ASSERT_NO_FATAL_FAILURE(send_done_at_post(100 + i));
  }
  ASSERT_TRUE(pair.client->SendEndOfStream().ok());
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!pair.client->idle() && absl::Now() < deadline) {
    ASSERT_NO_FATAL_FAILURE(poll_until(interval + 3, 0));
  }
  EXPECT_TRUE(pair.client->idle());
  EXPECT_EQ(received, interval + 3);
  EXPECT_TRUE(pair.client_sink.errors.empty());
}

// A connected pair whose client sends 64-byte messages from one registered
// segment, and the loops the receive re-posting tests share.
class SmallMessages {
 public:
  // Connects the pair; the result says why not.
  absl::Status Connect(const RcConnectionOptions& options) {
    DEMI_RETURN_IF_ERROR(ConnectPair(pair, options));
    DEMI_ASSIGN_OR_RETURN(
        MemoryRegion mr,
        MemoryRegion::Register(pair.client->pd(), memory_.data(),
                               memory_.size(), IBV_ACCESS_LOCAL_WRITE));
    mr_.emplace(std::move(mr));
    segment_ = Segment{memory_.data(), 64, mr_->lkey(), 0};
    return absl::OkStatus();
  }

  // Posts `count` messages from the client.
  void Send(size_t count) {
    for (size_t i = 0; i < count; ++i) {
      ASSERT_TRUE(
          pair.client->Send(absl::MakeConstSpan(&segment_, 1), i, nullptr)
              .ok());
    }
  }

  void PollBoth() {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
    ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
  }

  // Polls both sides until the server holds `count` messages (10 s at most).
  void ReceiveAtServer(size_t count) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (pair.server_sink.messages.size() < count && absl::Now() < deadline) {
      ASSERT_NO_FATAL_FAILURE(PollBoth());
    }
    ASSERT_EQ(pair.server_sink.messages.size(), count);
  }

  // Releases the oldest message the server holds.
  void ReleaseOldest() {
    ASSERT_TRUE(
        pair.server->Release(pair.server_sink.messages.front().buffer_index)
            .ok());
    pair.server_sink.messages.pop_front();
  }

  Pair pair;

 private:
  std::vector<uint8_t> memory_ = std::vector<uint8_t>(64, 3);
  std::optional<MemoryRegion> mr_;
  Segment segment_;
};

// Released receive buffers are re-posted at the next poll, all of them in
// one ibv_post_recv, and their credits reach the sender: it can then send a
// window's worth again.
TEST(RcConnectionTest, ReleasedBuffersArePostedTogetherAtTheNextPoll) {
  RcConnectionOptions options;
  options.receive_buffers = 16;
  SmallMessages small;
  absl::Status connected = small.Connect(options);
  ASSERT_TRUE(connected.ok()) << connected;
  Pair& pair = small.pair;

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    // A window of messages, held by the server until all have arrived.
    constexpr size_t kWindow = 12;
    ASSERT_NO_FATAL_FAILURE(small.Send(kWindow));
    ASSERT_NO_FATAL_FAILURE(small.ReceiveAtServer(kWindow));
    const uint64_t posts = pair.server->receive_posts();
    while (!pair.server_sink.messages.empty()) {
      ASSERT_NO_FATAL_FAILURE(small.ReleaseOldest());
    }
    EXPECT_EQ(pair.server->receive_posts(), posts) << "posted before a poll";
    ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
    EXPECT_EQ(pair.server->receive_posts(), posts + 1)
        << "not one post for the released buffers";
    // A second release of the same buffer is refused.
    EXPECT_EQ(ErrnoFromStatus(pair.server->Release(0)), EINVAL);
  }
  EXPECT_TRUE(pair.client_sink.errors.empty());
  EXPECT_TRUE(pair.server->status().ok());
}

// A consumer that frees one message at a time (a ping-pong) re-posts in
// batches of an eighth of its buffers, one ibv_post_recv each; once no more
// than three quarters are posted (the application holds many), a single
// release is posted at the next poll. The sender never runs out of credit.
TEST(RcConnectionTest, ReleasesOneAtATimeArePostedInBatches) {
  RcConnectionOptions options;
  options.receive_buffers = 64;  // batches of 8; at once at 48 posted
  SmallMessages small;
  absl::Status connected = small.Connect(options);
  ASSERT_TRUE(connected.ok()) << connected;
  Pair& pair = small.pair;

  const uint64_t before = pair.server->receive_posts();
  constexpr int kMessages = 200;  // three times the buffers
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_NO_FATAL_FAILURE(small.Send(1));
    ASSERT_NO_FATAL_FAILURE(small.ReceiveAtServer(1));
    ASSERT_NO_FATAL_FAILURE(small.ReleaseOldest());
    ASSERT_NO_FATAL_FAILURE(small.PollBoth());
  }
  EXPECT_EQ(pair.server->receive_posts() - before, uint64_t{kMessages / 8});

  // Hold 20 messages: 44 posted at most, below the low water mark.
  ASSERT_NO_FATAL_FAILURE(small.Send(20));
  ASSERT_NO_FATAL_FAILURE(small.ReceiveAtServer(20));
  const uint64_t held = pair.server->receive_posts();
  ASSERT_NO_FATAL_FAILURE(small.ReleaseOldest());
  ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
  EXPECT_EQ(pair.server->receive_posts(), held + 1)
      << "a release with few buffers posted waited for a batch";
  EXPECT_TRUE(pair.client_sink.errors.empty());
  EXPECT_TRUE(pair.server->status().ok());
}

// Connections sharing one CompletionGroup: every completion reaches the
// connection that posted its request, polled only through the group; queues
// are added as reservations fill them and go when their last connection does.
TEST(RcConnectionTest, SharedQueuesRouteEachConnectionsCompletions) {
  // 8 sends + 8 receives = 16 completions a connection; a queue of 64
  // reserves at most 48: three connections a queue.
  OwnGroup own;
  ASSERT_TRUE(
      MakeOwnGroup(own, CompletionGroupOptions{.queue_entries = 64}).ok());
  std::unique_ptr<CompletionGroup>* group = &own.group;
  RcConnectionOptions options;
  options.send_queue_depth = 8;
  options.receive_buffers = 8;
  constexpr int kPairs = 6;
  std::vector<std::unique_ptr<Pair>> pairs;
  for (int p = 0; p < kPairs; ++p) {
    pairs.push_back(std::make_unique<Pair>());
    absl::Status connected = ConnectOnGroup(*pairs.back(), options, **group);
    ASSERT_TRUE(connected.ok()) << connected;
  }
  EXPECT_EQ((*group)->endpoint_count(), 2u * kPairs);
  EXPECT_EQ((*group)->queue_count(), 4u);

  // Each pair's client sends its own pattern; only pairs 0..4 send, so
  // pair 5's ends must see nothing.
  constexpr int kMessages = 20;
  constexpr int kSenders = kPairs - 1;
  std::vector<std::vector<uint8_t>> memory(kSenders);
  std::vector<MemoryRegion> regions;
  for (int p = 0; p < kSenders; ++p) {
    memory[p].resize(kMessages * 100);
    for (int m = 0; m < kMessages; ++m) {
      demi::testing::FillPattern(&memory[p][m * 100], 100, p * 1000 + m);
    }
    absl::StatusOr<MemoryRegion> mr =
        MemoryRegion::Register(pairs[p]->client->pd(), memory[p].data(),
                               memory[p].size(), IBV_ACCESS_LOCAL_WRITE);
    ASSERT_TRUE(mr.ok()) << mr.status();
    regions.push_back(*std::move(mr));
  }
  std::vector<int> sent(kSenders, 0), received(kSenders, 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  auto all_done = [&]() {
    for (int p = 0; p < kSenders; ++p) {
      if (received[p] < kMessages ||
          pairs[p]->client_sink.completed.size() < kMessages) {
        return false;
      }
    }
    return true;
  };
  while (!all_done() && absl::Now() < deadline) {
    for (int p = 0; p < kSenders; ++p) {
      if (sent[p] == kMessages) continue;
      Segment segment{memory[p].data() + sent[p] * 100, 100, regions[p].lkey(),
                      0};
      absl::Status status = pairs[p]->client->Send(
          absl::MakeConstSpan(&segment, 1), p * 1000 + sent[p]);
      if (status.ok()) ++sent[p];
      ASSERT_TRUE(status.ok() || ErrnoFromStatus(status) == EAGAIN) << status;
    }
    (*group)->Poll();
    for (int p = 0; p < kSenders; ++p) {
      Sink& sink = pairs[p]->server_sink;
      while (!sink.messages.empty()) {
        ReceivedMessage message = sink.messages.front();
        sink.messages.pop_front();
        ASSERT_EQ(message.num_segments, 1u);
        ASSERT_EQ(message.segment_lengths[0], 100u);
        for (int j = 0; j < 100; ++j) {
          ASSERT_EQ(message.segment_data[0][j],
                    PatternByte(p * 1000 + received[p], j))
              << "pair " << p << " message " << received[p];
        }
        ++received[p];
        ASSERT_TRUE(pairs[p]->server->Release(message.buffer_index).ok());
      }
    }
  }
  ASSERT_TRUE(all_done());
  for (int p = 0; p < kSenders; ++p) {
    const std::vector<uint64_t>& completed = pairs[p]->client_sink.completed;
    for (int m = 0; m < kMessages; ++m) {
      EXPECT_EQ(completed[m], static_cast<uint64_t>(p * 1000 + m));
    }
    EXPECT_TRUE(pairs[p]->client_sink.errors.empty());
    EXPECT_TRUE(pairs[p]->server_sink.completed.empty());
  }
  EXPECT_TRUE(pairs[kSenders]->server_sink.messages.empty());
  EXPECT_EQ(pairs[kSenders]->server_sink.messages_total, 0u);
  EXPECT_TRUE(pairs[kSenders]->client_sink.completed.empty());

  // The last three pairs fill the last two queues: those go with them.
  regions.clear();
  pairs.resize(3);
  EXPECT_EQ((*group)->endpoint_count(), 6u);
  EXPECT_EQ((*group)->queue_count(), 2u);

  // A detached connection's room is kept until a poll drains its queue
  // (what it left there must fit): queue 2 keeps pair 1's server, and pair
  // 2's room, so a new pair before any poll gets a queue of its own...
  pairs.resize(2);
  EXPECT_EQ((*group)->queue_count(), 2u);
  pairs.push_back(std::make_unique<Pair>());
  ASSERT_TRUE(ConnectOnGroup(*pairs.back(), options, **group).ok());
  EXPECT_EQ((*group)->queue_count(), 3u);
  // ...and after a poll the freed room takes the next one.
  (*group)->Poll();
  pairs.push_back(std::make_unique<Pair>());
  ASSERT_TRUE(ConnectOnGroup(*pairs.back(), options, **group).ok());
  EXPECT_EQ((*group)->queue_count(), 3u);
  EXPECT_EQ((*group)->endpoint_count(), 8u);
}

// Coalescing (the default): of a burst of sends between two polls, only the
// first is posted by Send(); the rest are queued and go at the next poll of
// the group, chained under one doorbell, even though the connection has no
// completion that poll would deliver (they are never stranded). Small ones
// whose Send() took a done_at_post are staged (copied at once: done at
// Send, like an inline one) and go together as one batch; one without is
// reported by its completion. Every byte arrives, in order, one message per
// send, though the memory the sends came from was overwritten at once.
TEST(RcConnectionTest, BurstBetweenPollsGoesUnderOneDoorbellAtTheNextPoll) {
  OwnGroup own;
  ASSERT_TRUE(MakeOwnGroup(own).ok());
  std::unique_ptr<CompletionGroup>* group = &own.group;
  RcConnectionOptions options;
  ASSERT_TRUE(options.coalesce_sends);
  Pair pair;
  absl::Status connected = ConnectOnGroup(pair, options, **group);
  ASSERT_TRUE(connected.ok()) << connected;
  ASSERT_GT(pair.client->max_inline_data(), 64u + 16u);
  constexpr int kBurst = 12;
  std::vector<uint8_t> memory(kBurst * 64);
  for (int m = 0; m < kBurst; ++m) {
    demi::testing::FillPattern(&memory[m * 64], 64, m);
  }
  absl::StatusOr<MemoryRegion> mr = MemoryRegion::Register(
      pair.client->pd(), memory.data(), memory.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(mr.ok()) << mr.status();
  // Let the connection settle (credits, established) before the burst.
  for (int i = 0; i < 10; ++i) (*group)->Poll();

  const uint64_t doorbells = pair.client->doorbells();
  for (int m = 0; m < kBurst; ++m) {
    Segment segment{memory.data() + m * 64, 64, mr->lkey(), 0};
    bool done = false;
    // The last one without done_at_post: reported by its completion.
    const bool last = m + 1 == kBurst;
    absl::Status sent = pair.client->Send(absl::MakeConstSpan(&segment, 1), m,
                                          last ? nullptr : &done);
    ASSERT_TRUE(sent.ok()) << sent;
    EXPECT_EQ(done, !last) << "send " << m;
    if (done) std::memset(memory.data() + m * 64, 0xee, 64);  // free again
  }
  EXPECT_EQ(pair.client->doorbells(), doorbells + 1);
  EXPECT_EQ(pair.client->queued_sends(), static_cast<uint32_t>(kBurst - 1));
  EXPECT_TRUE(pair.client_sink.completed.empty());

  // One poll of the group posts the rest together.
  (*group)->Poll();
  EXPECT_EQ(pair.client->queued_sends(), 0u);
  EXPECT_EQ(pair.client->doorbells(), doorbells + 2);

  int received = 0;
  int shared = 0;  // messages that shared a receive buffer (a batch)
  std::vector<uint32_t> to_release;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((received < kBurst || pair.client_sink.completed.empty()) &&
         absl::Now() < deadline) {
    (*group)->Poll();
    while (!pair.server_sink.messages.empty()) {
      ReceivedMessage message = pair.server_sink.messages.front();
      pair.server_sink.messages.pop_front();
      ExpectOneSegmentOfPattern(message, received, 64);
      ++received;
      if (message.part > 0) ++shared;
      to_release.push_back(message.buffer_index);
    }
    // Released together once all have arrived: a batch's buffer stays held
    // until its last message is released.
    if (received == kBurst) {
      for (uint32_t buffer : to_release) {
        ASSERT_TRUE(pair.server->Release(buffer).ok());
      }
      to_release.clear();
    }
  }
  EXPECT_EQ(received, kBurst);
  // 1 .. kBurst - 2 were batched (kBurst - 1, not staged, goes alone): one
  // buffer for all of them.
  EXPECT_EQ(shared, kBurst - 3);
  EXPECT_FALSE(pair.server->Release(0).ok()) << "released twice";
  // Only the last was reported, once.
  ASSERT_EQ(pair.client_sink.completed.size(), 1u);
  EXPECT_EQ(pair.client_sink.completed.back(), uint64_t{kBurst - 1});
  EXPECT_TRUE(pair.client_sink.errors.empty());
}

// TrySendCopied, the libOS's path for small pushes: the bytes are copied
// before it returns (inline at post, or into a stage when the send would
// be queued), so the memory needs no registration and is free at once, and
// no cookie is ever reported. A burst between two polls: the first goes
// inline at once, the rest are staged and go under one doorbell at the next
// poll. A message that fits neither inline nor a stage is declined with
// nothing changed.
TEST(RcConnectionTest, TrySendCopiedPostsInlineOrStagesWithoutKeys) {
  OwnGroup own;
  ASSERT_TRUE(MakeOwnGroup(own).ok());
  CompletionGroup& group = *own.group;
  Pair pair;
  ASSERT_TRUE(ConnectOnGroup(pair, RcConnectionOptions{}, group).ok());
  ASSERT_TRUE(RcConnectionOptions{}.coalesce_sends);
  for (int i = 0; i < 10; ++i) group.Poll();  // credits, established

  // Unregistered memory: keys 0.
  constexpr uint32_t kSize = 200;  // fits a stage (256)
  ASSERT_LE(kSize, pair.client->copied_send_limit());
  constexpr int kBurst = 8;
  std::vector<uint8_t> memory(kSize);
  const uint64_t doorbells = pair.client->doorbells();
  for (int m = 0; m < kBurst; ++m) {
    demi::testing::FillPattern(memory.data(), kSize, m);
    Segment segment{memory.data(), kSize, 0, 0};
    ASSERT_TRUE(pair.client->TrySendCopied(absl::MakeConstSpan(&segment, 1)))
        << "send " << m;
    std::memset(memory.data(), 0xee, kSize);  // free again at once
  }
  // Inline only if the device takes 200 bytes and a header inline: then
  // the first is posted now and the rest staged; else all are staged.
  const bool first_inline =
      pair.client->max_inline_data() >= kSize + wire::HeaderSize(1);
  EXPECT_EQ(pair.client->doorbells(), doorbells + (first_inline ? 1 : 0));
  EXPECT_EQ(pair.client->queued_sends(),
            static_cast<uint32_t>(first_inline ? kBurst - 1 : kBurst));

  // Too large for either: declined, nothing queued or posted.
  std::vector<uint8_t> large(pair.client->copied_send_limit() + 1);
  Segment too_large{large.data(), static_cast<uint32_t>(large.size()), 0, 0};
  const uint32_t queued = pair.client->queued_sends();
  EXPECT_FALSE(pair.client->TrySendCopied(absl::MakeConstSpan(&too_large, 1)));
  EXPECT_EQ(pair.client->queued_sends(), queued);

  group.Poll();  // the staged ones, under one doorbell
  EXPECT_EQ(pair.client->queued_sends(), 0u);
  EXPECT_EQ(pair.client->doorbells(), doorbells + (first_inline ? 2 : 1));

  int received = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (received < kBurst && absl::Now() < deadline) {
    group.Poll();
    while (!pair.server_sink.messages.empty()) {
      ReceivedMessage message = pair.server_sink.messages.front();
      pair.server_sink.messages.pop_front();
      ExpectOneSegmentOfPattern(message, received, kSize);
      ++received;
      ASSERT_TRUE(pair.server->Release(message.buffer_index).ok());
    }
  }
  EXPECT_EQ(received, kBurst);
  for (int i = 0; i < 10; ++i) group.Poll();
  EXPECT_TRUE(pair.client_sink.completed.empty()) << "a cookie was reported";

  // A message that fits a stage but not inline, on a connection that can
  // post it now, is declined: Send posts it at once from its own memory
  // rather than staging it for the next poll.
  constexpr uint32_t kNotInline = 250;
  if (kNotInline + wire::HeaderSize(1) > pair.client->max_inline_data()) {
    std::vector<uint8_t> bytes(kNotInline);
    Segment segment{bytes.data(), kNotInline, 0, 0};
    EXPECT_FALSE(pair.client->TrySendCopied(absl::MakeConstSpan(&segment, 1)));
    EXPECT_EQ(pair.client->queued_sends(), 0u);
  }
  EXPECT_TRUE(pair.client->status().ok());
  EXPECT_EQ(pair.client_sink.failures, 0);
}

// A send before the connection is established (the active side does not
// know the peer's credits yet) is queued, not staged: not done at post, and
// reported once it went, after ESTABLISHED.
// A message between the eager limit and the rendezvous threshold goes in
// parts whenever every part can go at once, also behind sends still in
// flight; each part but the last fills whole packets of the path MTU, so the
// message takes as many SENDs as its bytes and headers need in such packets.
TEST(RcConnectionTest, MessagesInPartsFillWholePacketsAlsoBehindOtherSends) {
  // The server takes large messages into a pool in the protection domain of
  // rdma_cm's context for the test device.
  absl::StatusOr<sockaddr_in> address = testing::RdmaTestAddress();
  ASSERT_TRUE(address.ok()) << address.status();
  absl::StatusOr<EventChannel> channel = EventChannel::Create();
  ASSERT_TRUE(channel.ok());
  absl::StatusOr<CmId> probe = CmId::Create(*channel, RDMA_PS_TCP);
  ASSERT_TRUE(probe.ok());
  ASSERT_TRUE(probe->Bind(*address).ok());
  absl::StatusOr<ProtectionDomain> pd =
      ProtectionDomain::Create(probe->verbs());
  ASSERT_TRUE(pd.ok()) << pd.status();
  VerbsRegistrar registrar(pd->get(), IBV_ACCESS_LOCAL_WRITE);
  absl::StatusOr<std::unique_ptr<LargeBufferPool>> pool =
      LargeBufferPool::Create(&registrar, {.max_bytes = 4 << 20});
  ASSERT_TRUE(pool.ok()) << pool.status();
  ibv_port_attr port{};
  ASSERT_EQ(ibv_query_port(probe->verbs(), probe->get()->port_num, &port), 0);
  const uint32_t mtu = MtuBytes(port.active_mtu);

  constexpr uint32_t kMessage = 64 * 1024;
  RcConnectionOptions options;
  options.eager_limit = kEagerLimit;
  options.rendezvous_threshold = kMessage;
  RcConnectionOptions server_options = options;
  server_options.pd = pd->get();
  server_options.large_pool = pool->get();
  Pair pair;
  ASSERT_TRUE(ConnectPair(pair, options, &server_options).ok());

  // The parts of one message: a SEND of whole packets carries a first
  // part's header (kHeaderFixedSize and one length) or a next part's
  // (kHeaderFixedSize); the last part carries the rest.
  const uint32_t buffer = kEagerLimit + wire::kMaxHeaderSize;
  const uint32_t send = buffer / mtu * mtu;
  const uint32_t first = send - wire::HeaderSize(1);
  const uint32_t next = send - wire::kHeaderFixedSize;
  const uint32_t parts = 1 + (kMessage - first + next - 1) / next;
  if (mtu == 1024) {
    EXPECT_EQ(parts, 9u);  // rxe on a 1500-byte Ethernet
  }

  std::vector<uint8_t> memory(2 * kMessage);
  demi::testing::FillPattern(memory.data(), kMessage, 0);
  demi::testing::FillPattern(memory.data() + kMessage, kMessage, 1);
  absl::StatusOr<MemoryRegion> mr = MemoryRegion::Register(
      pair.client->pd(), memory.data(), memory.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(mr.ok()) << mr.status();
  for (uint64_t i = 0; i < 2; ++i) {
    const Segment segment{memory.data() + i * kMessage, kMessage, mr->lkey(),
                          0};
    ASSERT_TRUE(pair.client->Send({&segment, 1}, i, nullptr).ok());
    // The first message's parts are not done yet (nothing was polled): the
    // second goes in parts behind them, not by rendezvous.
    EXPECT_EQ(pair.client->posted_sends(), (i + 1) * parts) << "message " << i;
  }
  const absl::Time deadline = absl::Now() + kStepTimeout;
  while ((pair.server_sink.messages.size() < 2 ||
          pair.client_sink.completed.size() < 2) &&
         absl::Now() < deadline) {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
    ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
  }
  ASSERT_EQ(pair.server_sink.messages.size(), 2u);
  EXPECT_EQ(pair.client_sink.completed, (std::vector<uint64_t>{0, 1}));
  for (uint64_t i = 0; i < 2; ++i) {
    ExpectOneSegmentOfPattern(pair.server_sink.messages.front(), i, kMessage);
    ASSERT_TRUE(
        pair.server->Release(pair.server_sink.messages.front().buffer_index)
            .ok());
    pair.server_sink.messages.pop_front();
  }
  EXPECT_TRUE(pair.client_sink.errors.empty());
  EXPECT_TRUE(pair.server_sink.errors.empty());
}

TEST(RcConnectionTest, SendBeforeEstablishedGoesAfterIt) {
  std::vector<uint8_t> memory(64, 0x5a);
  Pair pair;
  std::optional<MemoryRegion> mr;  // deregistered before the pair goes
  absl::Status connected = ConnectPair(
      pair, RcConnectionOptions{}, nullptr, [&](Pair& p) -> absl::Status {
        DEMI_ASSIGN_OR_RETURN(
            MemoryRegion region,
            MemoryRegion::Register(p.client->pd(), memory.data(), memory.size(),
                                   IBV_ACCESS_LOCAL_WRITE));
        mr.emplace(std::move(region));
        Segment segment{memory.data(), 64, mr->lkey(), 0};
        bool done = true;
        DEMI_RETURN_IF_ERROR(
            p.client->Send(absl::MakeConstSpan(&segment, 1), 7, &done));
        if (done) return absl::InternalError("done before established");
        return absl::OkStatus();
      });
  ASSERT_TRUE(connected.ok()) << connected;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((pair.server_sink.messages.empty() ||
          pair.client_sink.completed.empty()) &&
         absl::Now() < deadline) {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
    ASSERT_TRUE(pair.server->Poll(pair.server_sink).ok());
  }
  ASSERT_EQ(pair.server_sink.messages.size(), 1u);
  EXPECT_EQ(pair.server_sink.messages.front().segment_lengths[0], 64u);
  EXPECT_EQ(pair.server_sink.messages.front().segment_data[0][63], 0x5a);
  ASSERT_EQ(pair.client_sink.completed.size(), 1u);
  EXPECT_EQ(pair.client_sink.completed[0], 7u);
  EXPECT_TRUE(pair.client_sink.errors.empty());
}

// A completion left in a shared queue by a connection destroyed before the
// queue was polled is dropped (counted), never handed to the connection that
// took its place in the group.
TEST(RcConnectionTest, SharedQueueDropsCompletionsOfDestroyedConnections) {
  OwnGroup own;
  ASSERT_TRUE(MakeOwnGroup(own).ok());
  std::unique_ptr<CompletionGroup>* group = &own.group;
  RcConnectionOptions client_options;  // a group of its own
  RcConnectionOptions server_options;
  server_options.completions = group->get();
  Pair pair;
  ASSERT_TRUE(ConnectPair(pair, client_options, &server_options).ok());
  pair.server->set_sink(&pair.server_sink);
  std::vector<uint8_t> memory(64, 0x5a);
  absl::StatusOr<MemoryRegion> mr = MemoryRegion::Register(
      pair.client->pd(), memory.data(), memory.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(mr.ok()) << mr.status();
  Segment segment{memory.data(), 64, mr->lkey(), 0};
  ASSERT_TRUE(pair.client->Send(absl::MakeConstSpan(&segment, 1), 7).ok());
  // Acknowledged means the server's device completed the receive: its
  // completion now waits in the shared queue.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (pair.client_sink.completed.empty() && absl::Now() < deadline) {
    ASSERT_TRUE(pair.client->Poll(pair.client_sink).ok());
  }
  ASSERT_EQ(pair.client_sink.completed.size(), 1u);
  pair.server.reset();
  EXPECT_EQ((*group)->endpoint_count(), 0u);

  // A new connection takes the freed place (same slot, next generation).
  Pair next;
  ASSERT_TRUE(ConnectPair(next, client_options, &server_options).ok());
  next.server->set_sink(&next.server_sink);
  EXPECT_EQ((*group)->Poll(), 0);
  // Soft-RoCE leaves a destroyed queue pair's completions in the queue (a
  // device that cleans them on destroy would leave none to drop).
  EXPECT_EQ((*group)->stale_completions(), 1u);
  EXPECT_EQ(next.server_sink.messages_total, 0u);
  EXPECT_TRUE(next.server_sink.completed.empty());
  EXPECT_TRUE(next.server->status().ok());
}

}  // namespace
}  // namespace demi::rdma
