// CompletionSink: where an RcConnection reports what its sends and
// receives became. Callbacks run on the thread polling the connection's
// completion group; they may call Send() and Release() on the connection,
// never destroy it.

#ifndef DEMI_RDMA_COMPLETION_SINK_H_
#define DEMI_RDMA_COMPLETION_SINK_H_

#include <cstdint>

#include "absl/status/status.h"
#include "rdma/inbound_messages.h"

namespace demi::rdma {

// What the connection reports: from its group's polls, Poll() and FailAll().
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  // The send of `cookie` finished: OK once the peer's device has the data,
  // otherwise an error carrying an errno (ECONNRESET, EIO, EMSGSIZE...).
  virtual void OnSendComplete(uint64_t cookie, const absl::Status& status) = 0;
  // A data message arrived; release its buffer with Release().
  virtual void OnMessage(const ReceivedMessage& message) = 0;
  // The peer closed gracefully; everything it sent before was reported.
  virtual void OnEndOfStream() = 0;
  // The connection has failed with `status` (carrying an errno: see
  // Failure above). Called once, by the first poll after the failure
  // (FailAll's included), after what that poll could report.
  virtual void OnFailed(const absl::Status& status) { (void)status; }
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_COMPLETION_SINK_H_
