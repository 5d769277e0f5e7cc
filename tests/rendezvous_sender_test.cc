// RendezvousSender on a real device: what a transfer exposes, which done
// messages end it, and that every way out frees its slot. (The transfers'
// wire path, announcement to READ to done, is rc_connection_test's.)

#include "rdma/rendezvous_sender.h"

#include <infiniband/verbs.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/device_context.h"
#include "rdma/memory_region.h"
#include "rdma/memory_window.h"
#include "rdma/protection_domain.h"
#include "tests/rdma_env.h"

namespace demi::rdma {
namespace {

using demi::testing::RdmaTestDevice;

class RendezvousSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<DeviceContext> device =
        DeviceContext::Open(RdmaTestDevice());
    ASSERT_TRUE(device.ok()) << device.status();
    device_.emplace(*std::move(device));
    absl::StatusOr<ProtectionDomain> pd =
        ProtectionDomain::Create(device_->get());
    ASSERT_TRUE(pd.ok()) << pd.status();
    pd_.emplace(*std::move(pd));
    absl::StatusOr<ibv_device_attr> attr = device_->QueryDevice();
    ASSERT_TRUE(attr.ok()) << attr.status();
    windows_supported_ = MemoryWindow::Supported(*attr);
  }

  // A sender of `capacity` transfers registering in the test's domain;
  // fails the registrations after `fail_after` of them with ENOMEM.
  void Configure(RendezvousSender& sender, bool windows,
                 int fail_after = 1 << 30) {
    sender.Configure(
        pd_->get(), windows,
        [this, fail_after](void* address, size_t length,
                           int access) -> absl::StatusOr<MemoryRegion> {
          if (registrations_++ >= fail_after) {
            return ErrnoError(ENOMEM, "refused by the test");
          }
          access_ = access;
          return MemoryRegion::Register(pd_->get(), address, length, access);
        });
  }

  std::vector<Segment> Segments(int count) {
    std::vector<Segment> segments;
    for (int i = 0; i < count; ++i) {
      segments.push_back({memory_ + i * 1024, 1000, 0, 0});
    }
    return segments;
  }

  std::optional<DeviceContext> device_;
  std::optional<ProtectionDomain> pd_;
  bool windows_supported_ = false;
  int registrations_ = 0;
  int access_ = 0;
  alignas(4096) uint8_t memory_[16 * 1024] = {};
};

TEST_F(RendezvousSenderTest, AnnouncedTransferEndsWithItsDone) {
  RendezvousSender sender(4);
  Configure(sender, /*windows=*/false);
  const std::vector<Segment> segments = Segments(3);
  absl::StatusOr<uint32_t> index = sender.Start(segments, 77);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(registrations_, 3);
  EXPECT_EQ(access_, IBV_ACCESS_REMOTE_READ);  // no windows: the key itself
  EXPECT_EQ(sender.in_use(), 1u);
  EXPECT_TRUE(sender.bound(*index));  // nothing to bind

  wire::MessageHeader header;
  header.num_segments = 3;
  sender.Announce(*index, segments, &header);
  EXPECT_EQ(header.transfer_id & 0xffff, *index);
  EXPECT_NE(header.transfer_id >> 16, 0u);  // a nonce, never 0
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(header.remote[i].address,
              reinterpret_cast<uintptr_t>(segments[i].data));
    EXPECT_NE(header.remote[i].rkey, 0u);
  }
  EXPECT_NE(header.remote[0].rkey, header.remote[1].rkey)
      << "each segment has a registration of its own";

  EXPECT_EQ(sender.Finish(header.transfer_id), std::optional<uint64_t>(77));
  EXPECT_EQ(sender.in_use(), 0u);
  EXPECT_EQ(sender.Finish(header.transfer_id), std::nullopt)
      << "a second done for the same transfer";
}

TEST_F(RendezvousSenderTest, DoneOfNoAnnouncedTransferIsRefused) {
  RendezvousSender sender(4);
  Configure(sender, /*windows=*/false);
  const std::vector<Segment> segments = Segments(1);
  absl::StatusOr<uint32_t> index = sender.Start(segments, 5);
  ASSERT_TRUE(index.ok()) << index.status();
  wire::MessageHeader header;
  header.num_segments = 1;
  // Not yet announced: the peer cannot know its id.
  for (uint32_t nonce = 1; nonce < 4; ++nonce) {
    EXPECT_EQ(sender.Finish(*index | nonce << 16), std::nullopt);
  }
  sender.Announce(*index, segments, &header);
  const uint32_t id = header.transfer_id;
  EXPECT_EQ(sender.Finish(id ^ (1u << 16)), std::nullopt) << "wrong nonce";
  EXPECT_EQ(sender.Finish((id & 0xffff0000u) | 3), std::nullopt)
      << "a slot not in use";
  EXPECT_EQ(sender.Finish((id & 0xffff0000u) | 0xffff), std::nullopt)
      << "a slot beyond the capacity";
  EXPECT_EQ(sender.in_use(), 1u);
  EXPECT_EQ(sender.Finish(id), std::optional<uint64_t>(5));
}

TEST_F(RendezvousSenderTest, FullSenderRefusesWithEagainUntilOneEnds) {
  RendezvousSender sender(2);
  Configure(sender, /*windows=*/false);
  const std::vector<Segment> segments = Segments(1);
  absl::StatusOr<uint32_t> first = sender.Start(segments, 1);
  absl::StatusOr<uint32_t> second = sender.Start(segments, 2);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(*first, *second);
  EXPECT_TRUE(sender.full());
  absl::StatusOr<uint32_t> third = sender.Start(segments, 3);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(ErrnoFromStatus(third.status()), EAGAIN);
  sender.Abandon(*first);
  EXPECT_FALSE(sender.full());
  third = sender.Start(segments, 3);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(*third, *first) << "the abandoned slot is reused";
}

TEST_F(RendezvousSenderTest, FailedRegistrationLeavesNothing) {
  RendezvousSender sender(2);
  Configure(sender, /*windows=*/false, /*fail_after=*/2);
  absl::StatusOr<uint32_t> index = sender.Start(Segments(3), 9);
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(ErrnoFromStatus(index.status()), ENOMEM);
  EXPECT_EQ(sender.in_use(), 0u);
  std::vector<uint64_t> reported;
  sender.EndAll([&](uint64_t cookie) { reported.push_back(cookie); });
  EXPECT_TRUE(reported.empty()) << "a transfer that never started";
}

TEST_F(RendezvousSenderTest, EndAllReportsEachTransferOnce) {
  RendezvousSender sender(4);
  Configure(sender, /*windows=*/false);
  for (uint64_t cookie : {10, 11, 12}) {
    ASSERT_TRUE(sender.Start(Segments(2), cookie).ok());
  }
  std::vector<uint64_t> reported;
  sender.EndAll([&](uint64_t cookie) { reported.push_back(cookie); });
  EXPECT_EQ(reported, (std::vector<uint64_t>{10, 11, 12}));
  EXPECT_EQ(sender.in_use(), 0u);
  sender.EndAll([&](uint64_t cookie) { reported.push_back(cookie); });
  EXPECT_EQ(reported.size(), 3u);
}

TEST_F(RendezvousSenderTest, WindowsAnnounceTheBoundKey) {
  if (!windows_supported_) {
    GTEST_SKIP() << "the device binds no type-2 windows";
  }
  RendezvousSender sender(2);
  Configure(sender, /*windows=*/true);
  const std::vector<Segment> segments = Segments(2);
  absl::StatusOr<uint32_t> index = sender.Start(segments, 4);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(access_, IBV_ACCESS_MW_BIND) << "the registration only binds";
  EXPECT_FALSE(sender.bound(*index));
  EXPECT_EQ(sender.num_segments(*index), 2u);
  wire::MessageHeader before;
  before.num_segments = 2;
  sender.Announce(*index, segments, &before);
  wire::MessageHeader after = before;
  for (uint32_t i = 0; i < 2; ++i) {
    ibv_send_wr wr{};
    wr.opcode = IBV_WR_BIND_MW;
    sender.PrepareBind(*index, i, &wr);
    EXPECT_EQ(wr.bind_mw.bind_info.mw_access_flags,
              static_cast<unsigned>(IBV_ACCESS_REMOTE_READ));
    EXPECT_EQ(wr.bind_mw.bind_info.addr,
              reinterpret_cast<uintptr_t>(segments[i].data));
    EXPECT_EQ(wr.bind_mw.bind_info.length, segments[i].length);
  }
  sender.MarkBound(*index);
  EXPECT_TRUE(sender.bound(*index));
  sender.Announce(*index, segments, &after);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(after.remote[i].rkey, before.remote[i].rkey)
        << "the window's key, not the registration's";
  }
  EXPECT_EQ(sender.Finish(after.transfer_id), std::optional<uint64_t>(4));
}

}  // namespace
}  // namespace demi::rdma
