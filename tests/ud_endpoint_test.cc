// UdEndpoint on the test device: two endpoints, one resolved by the other
// through rdma_cm, datagrams between them. Released receive buffers go back
// to the device in batches (RepostRule), at once when the receive queue runs
// low; every datagram still arrives intact.

#include "rdma/ud_endpoint.h"

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/memory_region.h"
#include "rdma/protection_domain.h"
#include "rdma/ud_resolver.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::rdma {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(10);

// Records what an endpoint reports.
struct Sink : DatagramSink {
  std::vector<ReceivedDatagram> datagrams;
  uint64_t sends_done = 0;
  int send_errors = 0;

  void OnSendComplete(uint64_t, const absl::Status& status) override {
    ++sends_done;
    if (!status.ok()) ++send_errors;
  }
  void OnDatagram(const ReceivedDatagram& datagram) override {
    datagrams.push_back(datagram);
  }
};

class UdEndpointTest : public ::testing::Test {
 protected:
  // A receiver of `receive_buffers` buffers and a sender that resolved it.
  absl::Status Start(uint32_t receive_buffers) {
    DEMI_ASSIGN_OR_RETURN(EventChannel channel, EventChannel::Create());
    channel_.emplace(std::move(channel));
    DEMI_ASSIGN_OR_RETURN(receiver_, Open(receive_buffers));
    DEMI_ASSIGN_OR_RETURN(sender_, Open(16));
    DEMI_ASSIGN_OR_RETURN(
        std::unique_ptr<UdResolver> resolver,
        UdResolver::Start(*channel_, sender_->local_address(),
                          receiver_->local_address(), pd_->get(), kTimeout));
    const absl::Time deadline = absl::Now() + kTimeout;
    while (!peer_.has_value()) {
      DEMI_ASSIGN_OR_RETURN(CmEvent event,
                            channel_->Next(deadline - absl::Now()));
      if (event.type() == RDMA_CM_EVENT_CONNECT_REQUEST) {
        DEMI_RETURN_IF_ERROR(receiver_->AcceptResolution(std::move(event)));
        continue;
      }
      DEMI_ASSIGN_OR_RETURN(std::optional<UdPeer> peer,
                            resolver->OnEvent(std::move(event)));
      if (peer.has_value()) peer_.emplace(std::move(*peer));
    }
    DEMI_ASSIGN_OR_RETURN(
        MemoryRegion mr,
        MemoryRegion::Register(pd_->get(), memory_.data(), memory_.size(),
                               IBV_ACCESS_LOCAL_WRITE));
    mr_.emplace(std::move(mr));
    return absl::OkStatus();
  }

  // Sends datagram `index` (kSize bytes of its pattern, not inline) and
  // polls both endpoints until the receiver has it.
  void SendOne(uint64_t index) {
    uint8_t* data = memory_.data();
    demi::testing::FillPattern(data, kSize, index);
    const Segment segment{data, kSize, mr_->lkey(), 0};
    ASSERT_TRUE(sender_
                    ->Send({peer_->ah.get(), peer_->qp_num, peer_->qkey},
                           {&segment, 1}, index)
                    .ok());
    const size_t before = received_.datagrams.size();
    const absl::Time deadline = absl::Now() + kTimeout;
    while (
        (received_.datagrams.size() == before || sent_.sends_done <= index) &&
        absl::Now() < deadline) {
      ASSERT_TRUE(sender_->Poll(sent_).ok());
      ASSERT_TRUE(receiver_->Poll(received_).ok());
    }
    ASSERT_EQ(received_.datagrams.size(), before + 1) << "datagram " << index;
    const ReceivedDatagram& datagram = received_.datagrams.back();
    ASSERT_EQ(datagram.num_segments, 1u);
    ASSERT_EQ(datagram.segment_lengths[0], kSize);
    EXPECT_EQ(demi::testing::FindPatternMismatch(datagram.segment_data[0],
                                                 kSize, index),
              -1);
  }

  static constexpr uint32_t kSize = 512;  // above the inline limit

  Sink received_;
  std::unique_ptr<UdEndpoint> receiver_;

 private:
  absl::StatusOr<std::unique_ptr<UdEndpoint>> Open(uint32_t receive_buffers) {
    DEMI_ASSIGN_OR_RETURN(CmId id, CmId::Create(*channel_, RDMA_PS_UDP));
    DEMI_RETURN_IF_ERROR(id.Bind(testing::NextTestAddress()));
    if (!pd_.has_value()) {
      DEMI_ASSIGN_OR_RETURN(ProtectionDomain pd,
                            ProtectionDomain::Create(id.verbs()));
      pd_.emplace(std::move(pd));
    }
    return UdEndpoint::Create(
        std::move(id), UdEndpointOptions{.receive_buffers = receive_buffers,
                                         .max_inline_data = 64,
                                         .pd = pd_->get()});
  }

  std::optional<EventChannel> channel_;
  std::optional<ProtectionDomain> pd_;
  std::unique_ptr<UdEndpoint> sender_;
  std::optional<UdPeer> peer_;
  std::vector<uint8_t> memory_ = std::vector<uint8_t>(kSize);
  std::optional<MemoryRegion> mr_;
  Sink sent_;
};

TEST_F(UdEndpointTest, ReleasesOneAtATimeArePostedInBatches) {
  // Batches of 8; at once when 48 or fewer are posted.
  ASSERT_TRUE(Start(64).ok());
  EXPECT_EQ(receiver_->receive_posts(), 1u) << "every buffer in one chain";

  constexpr uint64_t kDatagrams = 200;  // three times the buffers
  for (uint64_t i = 0; i < kDatagrams; ++i) {
    ASSERT_NO_FATAL_FAILURE(SendOne(i));
    ASSERT_TRUE(
        receiver_->Release(received_.datagrams.back().buffer_index).ok());
  }
  EXPECT_EQ(receiver_->receive_posts(), 1 + kDatagrams / 8);

  // Hold 20: 44 posted, below the low water mark; a release posts at once.
  const size_t first_held = received_.datagrams.size();
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_NO_FATAL_FAILURE(SendOne(kDatagrams + i));
  }
  const uint64_t held = receiver_->receive_posts();
  ASSERT_TRUE(
      receiver_->Release(received_.datagrams[first_held].buffer_index).ok());
  EXPECT_EQ(receiver_->receive_posts(), held + 1)
      << "a release with few buffers posted waited for a batch";
  EXPECT_EQ(receiver_->receive_queue_empty(), 0u);
  EXPECT_TRUE(receiver_->status().ok());
}

}  // namespace
}  // namespace demi::rdma
