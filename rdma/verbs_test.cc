// Host-side checks of the wrappers: argument validation and error mapping,
// which need no RDMA device. tests/ exercises them on a real device.

#include <cerrno>

#include "absl/time/time.h"
#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "rdma/cm_event_channel.h"
#include "rdma/completion_queue.h"
#include "rdma/device_context.h"
#include "rdma/memory_region.h"
#include "rdma/protection_domain.h"

namespace demi::rdma {
namespace {

TEST(VerbsTest, OpeningAMissingDeviceIsENODEV) {
  auto context = DeviceContext::Open("no_such_device_0");
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(ErrnoFromStatus(context.status()), ENODEV);
}

TEST(VerbsTest, NullArgumentsAreEINVAL) {
  EXPECT_EQ(ErrnoFromStatus(ProtectionDomain::Create(nullptr).status()),
            EINVAL);
  EXPECT_EQ(ErrnoFromStatus(CompletionQueue::Create(nullptr, 16).status()),
            EINVAL);
  char byte;
  EXPECT_EQ(
      ErrnoFromStatus(MemoryRegion::Register(nullptr, &byte, 1, 0).status()),
      EINVAL);
}

TEST(VerbsTest, CmEventsMapToSocketErrnos) {
  EXPECT_EQ(ErrnoForCmEvent(RDMA_CM_EVENT_REJECTED, 28), ECONNREFUSED);
  EXPECT_EQ(ErrnoForCmEvent(RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT), ETIMEDOUT);
  EXPECT_EQ(ErrnoForCmEvent(RDMA_CM_EVENT_ADDR_ERROR, -ENETUNREACH),
            ENETUNREACH);
  EXPECT_EQ(ErrnoForCmEvent(RDMA_CM_EVENT_DISCONNECTED, 0), ECONNRESET);
}

TEST(VerbsTest, EventChannelFailsCleanlyOrTimesOut) {
  auto channel = EventChannel::Create();
  if (!channel.ok()) {
    // No rdma_cm in this kernel (the build host): a clear errno, no crash.
    EXPECT_GT(ErrnoFromStatus(channel.status()), 0);
    return;
  }
  auto event = channel->Next(absl::ZeroDuration());
  ASSERT_FALSE(event.ok());
  EXPECT_EQ(ErrnoFromStatus(event.status()), ETIMEDOUT);
}

}  // namespace
}  // namespace demi::rdma
