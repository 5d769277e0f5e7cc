#include "rdma/cm_event_channel.h"

#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <climits>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::rdma {
namespace {

// Milliseconds for poll(2): rounded up, -1 for infinite, capped at INT_MAX.
int PollTimeoutMs(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return -1;
  if (timeout <= absl::ZeroDuration()) return 0;
  int64_t ms =
      absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

}  // namespace

absl::StatusOr<EventChannel> EventChannel::Create() {
  rdma_event_channel* raw = rdma_create_event_channel();
  if (raw == nullptr) return ErrnoStatus(errno, "rdma_create_event_channel");
  EventChannel channel(raw);
  int flags = fcntl(raw->fd, F_GETFL);
  if (flags < 0 || fcntl(raw->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return ErrnoStatus(errno, "fcntl(O_NONBLOCK) on the rdma_cm channel");
  }
  return channel;
}

absl::StatusOr<CmEvent> EventChannel::Next(absl::Duration timeout) {
  absl::Time deadline = timeout == absl::InfiniteDuration()
                            ? absl::InfiniteFuture()
                            : absl::Now() + timeout;
  for (;;) {
    rdma_cm_event* event = nullptr;
    if (rdma_get_cm_event(channel_.get(), &event) == 0) return CmEvent(event);
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return ErrnoStatus(errno, "rdma_get_cm_event");
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return ErrnoError(ETIMEDOUT, "no rdma_cm event before the timeout");
    }
    pollfd pfd{.fd = channel_->fd, .events = POLLIN, .revents = 0};
    if (poll(&pfd, 1, PollTimeoutMs(left)) < 0 && errno != EINTR) {
      return ErrnoStatus(errno, "poll on the rdma_cm channel");
    }
  }
}

std::optional<CmEvent> EventChannel::TryNext() {
  rdma_cm_event* event = nullptr;
  if (rdma_get_cm_event(channel_.get(), &event) == 0) return CmEvent(event);
  if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    DEMI_LOG(kWarning, "rdma_get_cm_event: errno ", errno);
  }
  return std::nullopt;
}

absl::StatusOr<CmEvent> EventChannel::Expect(rdma_cm_event_type expected,
                                             absl::Duration timeout) {
  absl::StatusOr<CmEvent> event = Next(timeout);
  if (!event.ok()) return event.status();
  if (event->type() == expected && event->status() == 0) return event;
  return ErrnoError(
      ErrnoForCmEvent(event->type(), event->status()),
      absl::StrCat("expected rdma_cm event ", rdma_event_str(expected),
                   ", got ", rdma_event_str(event->type()), " (status ",
                   event->status(), ")"));
}

int ErrnoForCmEvent(rdma_cm_event_type type, int status) {
  switch (type) {
    case RDMA_CM_EVENT_REJECTED:
      // status is the IB/CM reject reason, or a negative errno from rxe.
      return status == -ETIMEDOUT ? ETIMEDOUT : ECONNREFUSED;
    case RDMA_CM_EVENT_ADDR_ERROR:
      return status < 0 ? -status : EADDRNOTAVAIL;
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
      return status == -ETIMEDOUT ? ETIMEDOUT : EHOSTUNREACH;
    case RDMA_CM_EVENT_CONNECT_ERROR:
      return status < 0 ? -status : ECONNREFUSED;
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
    case RDMA_CM_EVENT_TIMEWAIT_EXIT:
      return ECONNRESET;
    case RDMA_CM_EVENT_ADDR_CHANGE:
      return ENETRESET;
    default:
      return status < 0 ? -status : EPROTO;
  }
}

}  // namespace demi::rdma
