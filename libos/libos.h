// LibOS: the state behind the demi_* C API (see DESIGN.md).
//
// Owns the queues (sockets, listeners, connections), the token table, the
// rdma_cm event channel and the per-device resources. Every public method is
// safe from any thread: one mutex guards the state, and the wait methods drop
// it between polling rounds so other threads get in. Errors are absl::Status
// values carrying the positive errno the C API returns (common/errno_status.h).
//
// Memory: demi_sgaalloc memory comes from the registered pools; popped memory
// points into a queue's receive buffers (zero copy) and stays valid, even
// after demi_close, until SgaFree returns it. Any of these, and application
// memory (sga_buf == NULL), may be pushed on any queue; PushMemory says what
// the memory is, how the queue pair reads it, and keeps it (free protection)
// until every push of it completed.

#ifndef DEMI_LIBOS_LIBOS_H_
#define DEMI_LIBOS_LIBOS_H_

#include <demi/types.h>
#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "libos/datagram.h"
#include "libos/progress_engine.h"
#include "libos/push_memory.h"
#include "libos/qd_table.h"
#include "libos/receive_handles.h"
#include "libos/token_table.h"
#include "rdma/buffer_pool.h"
#include "rdma/cm_event_channel.h"
#include "rdma/cm_id.h"
#include "rdma/device_registry.h"
#include "rdma/rc_connection.h"
#include "rdma/region_cache.h"
#include "rdma/ud_endpoint.h"

namespace demi::libos {

struct LibOSOptions {
  // Operations in flight at once (tokens issued and not yet waited for).
  uint32_t max_operations = 1 << 16;
  rdma::RcConnectionOptions connection;  // pd is filled in per device
  rdma::BufferPoolOptions pool;          // max_buffer_size = eager limit
  // The memory-region cache for application memory; when disabled (or when
  // userfaultfd is refused) application memory is registered per push.
  rdma::RegionCacheOptions region_cache;
  bool region_cache_enabled = true;
  // Memory for messages above the eager limit (received by rendezvous, or
  // from demi_sgaalloc), per device.
  rdma::LargeBufferPoolOptions large_pool;
  // How long address and route resolution may take.
  absl::Duration resolve_timeout = absl::Seconds(2);
  // Datagram sockets' queue pairs (pd is filled in per device).
  rdma::UdEndpointOptions datagram;
  // A resolved datagram destination is resolved again in the background
  // once it is this old (zero: never), so a peer that re-bound its address
  // in another process (a new queue pair) is found again; sends keep using
  // the old handle meanwhile. A destination nobody answers for any more is
  // dropped from the cache, and the next push resolves it (and fails).
  absl::Duration datagram_route_ttl = absl::Seconds(5);
};

class LibOS {
 public:
  // ENODEV without an RDMA device.
  static absl::StatusOr<std::unique_ptr<LibOS>> Create(
      const LibOSOptions& options);
  ~LibOS();

  absl::StatusOr<int> Socket(int domain, int type, int protocol);
  absl::Status Bind(int qd, const sockaddr* address, socklen_t size);
  absl::Status Listen(int qd, int backlog);
  absl::StatusOr<demi_qtoken_t> Accept(int qd);
  absl::StatusOr<demi_qtoken_t> Connect(int qd, const sockaddr* address,
                                        socklen_t size);
  absl::Status Close(int qd);
  absl::StatusOr<demi_qtoken_t> Push(int qd, const demi_sgarray_t* sga);
  absl::StatusOr<demi_qtoken_t> Pop(int qd);
  absl::Status GetPeerName(int qd, sockaddr* address, socklen_t* size);
  absl::Status SetLinger(int qd, const void* value, socklen_t size);
  absl::Status GetLinger(int qd, void* value, socklen_t* size);
  // demi_pushto. On a datagram socket: sends to `address` (overriding a
  // demi_connect destination). On a stream socket (connection-mode) the
  // address is checked for form and otherwise ignored: a push.
  absl::StatusOr<demi_qtoken_t> PushTo(int qd, const demi_sgarray_t* sga,
                                       const sockaddr* address, socklen_t size);

  // An array of one segment of `size` registered bytes; all zero on failure.
  demi_sgarray_t SgaAlloc(size_t size);
  absl::Status SgaFree(demi_sgarray_t* sga);

  // The memory-region caches' counters (summed over devices).
  rdma::RegionCacheStats CacheStats() const;
  // Datagram sockets' counters.
  DatagramStats DatagramStatistics() const;

  // Waits at most `timeout` (InfiniteDuration: forever; zero: poll once).
  absl::Status Wait(demi_qtoken_t qt, absl::Duration timeout,
                    demi_qresult_t* result);
  // Returns the index in `qts` of the result written to *result.
  absl::StatusOr<int> WaitAny(absl::Span<const demi_qtoken_t> qts,
                              absl::Duration timeout, demi_qresult_t* result);
  // Returns how many results were written (at least one).
  absl::StatusOr<int> WaitNextN(absl::Span<demi_qresult_t> results,
                                absl::Duration timeout);

 private:
  struct Queue;
  class QueueSink;

  explicit LibOS(const LibOSOptions& options);

  // The one wait loop behind Wait, WaitAny and WaitNextN: `look` (called
  // under mu_) takes what the wait wants and says kDone, kInvalid (the wait
  // fails), or kPending (look again after a round of progress). Returns
  // kPending when `timeout` passed first. mu_ is dropped between rounds.
  template <typename Look>
  TokenState WaitLoop(absl::Duration timeout, Look look)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The queue of `qd` (EBADF if there is none, of the kind asked for).
  absl::StatusOr<Queue*> Find(int qd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<DatagramQueue*> FindDatagram(int qd)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Registers what a round of progress visits for stream queues: every
  // device's shared completion queues (so every connection) and the
  // retired queues each round, rdma_cm events every kCmPollInterval rounds.
  void AddStreamProgress() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Polls the completion queue `queue`'s connection shares (and so reports
  // for every connection on it), then pumps the connection's sends.
  void PollConnection(Queue& queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The options of a connection on `device`: its PD, large-message pool and
  // shared completion queues.
  rdma::RcConnectionOptions ConnectionOptions(const ibv_context* device) const;
  // Gives `queue` its connection and the sink the connection reports to.
  void Adopt(Queue& queue, std::unique_ptr<rdma::RcConnection> connection)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleEvent(rdma::CmEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleConnectRequest(rdma::CmEvent event, Queue& listener)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleEstablished(const rdma::CmEvent& event, Queue& queue)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailConnection(Queue& queue, int errnum)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompletePop(Queue& queue, demi_qtoken_t qt,
                   const rdma::ReceivedMessage* message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompleteAccept(demi_qtoken_t qt, const Queue& accepted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelPending(Queue& queue, int errnum)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Retire(std::unique_ptr<Queue> queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Destroys the retired queues that are done (inline: usually none).
  void ReapRetired() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!retired_.empty()) ReapRetiredQueues();
  }
  void ReapRetiredQueues() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The end of every push, whatever its queue: its memory is released
  // (PushMemory::Finished) and its token completes with `result`'s opcode
  // and errno and the pushed array.
  void FinishPush(demi_qtoken_t qt, demi_qresult_t result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A push whose bytes went inline (the transport reported it done at
  // post): the memory is the application's again, the token completes now.
  void CompletePushAtPost(demi_qtoken_t qt, const PushRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LibOSOptions options_;
  mutable demi::Mutex mu_;
  std::unique_ptr<rdma::DeviceRegistry> devices_;
  std::optional<rdma::EventChannel> channel_;
  TokenTable tokens_ ABSL_GUARDED_BY(mu_);
  // Stream queues (sockets, listeners, connections) by qd.
  QdTable<Queue, 0> queues_ ABSL_GUARDED_BY(mu_);
  // Closed connections kept until their sends finished and their popped
  // buffers came back.
  std::vector<std::unique_ptr<Queue>> retired_ ABSL_GUARDED_BY(mu_);
  // Popped arrays' handles of every queue (stream and datagram).
  ReceiveHandleTable handles_ ABSL_GUARDED_BY(mu_);
  // Pushed memory and free protection (set by Create).
  std::optional<PushMemory> memory_ ABSL_GUARDED_BY(mu_);
  PushTable pushes_ ABSL_GUARDED_BY(mu_);
  static constexpr uint32_t kCmPollInterval = 128;
  // Progress rounds between looks for datagram routes to refresh.
  static constexpr uint32_t kRouteRefreshInterval = 1024;
  // What the wait loop's rounds poll (stream sources from Create, datagram
  // ones from the first datagram socket).
  ProgressEngine progress_ ABSL_GUARDED_BY(mu_);
  uint32_t wait_any_start_ ABSL_GUARDED_BY(mu_) = 0;

  // ---- Datagram sockets (libos_dgram.cc) ----------------------------------
  class DatagramQueueSink;
  // The qd names a datagram socket, or none (the kind bit: see QdTable).
  static bool IsDatagram(int qd) { return qd > 0 && QdKind(qd) == 1; }
  absl::StatusOr<int> DatagramSocket(int protocol) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status DatagramBind(DatagramQueue& queue, const sockaddr* address,
                            socklen_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<demi_qtoken_t> DatagramConnect(DatagramQueue& queue,
                                                const sockaddr* address,
                                                socklen_t size)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `destination` null: the demi_connect destination (EDESTADDRREQ if none).
  absl::StatusOr<demi_qtoken_t> DatagramPush(DatagramQueue& queue,
                                             const demi_sgarray_t* sga,
                                             const sockaddr_in* destination)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<demi_qtoken_t> DatagramPop(DatagramQueue& queue)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DatagramGetPeerName(const DatagramQueue& queue,
                                   sockaddr* address, socklen_t* size)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DatagramClose(int qd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Polls one datagram socket's queue pair; a failed endpoint fails the
  // socket's waiting pops.
  void PollDatagramQueue(DatagramQueue& queue)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Registers what a round of progress visits for datagram sockets (once,
  // with the first socket: until then rounds cost them nothing): every
  // socket's queue pair and the retired sockets each round, the datagram
  // rdma_cm channel every kCmPollInterval rounds, old routes every
  // kRouteRefreshInterval.
  void AddDatagramProgress() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleDatagramEvent(rdma::CmEvent event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `pending` behind the route of `key`, starting its resolution if
  // there is none; fails the pending token if it cannot start.
  void AwaitRoute(const DatagramRouteKey& key, const sockaddr_in& local,
                  ibv_pd* pd, const PendingDatagram& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RouteResolved(DatagramRoute& route) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts a background resolution of every route older than
  // options_.datagram_route_ttl (slow path: reads the clock).
  void RefreshOldRoutes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A refresh of `key`'s route ended with `peer` (or an error).
  void RouteRefreshed(const DatagramRouteKey& key,
                      absl::StatusOr<rdma::UdPeer> peer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `route` out of routes_ to stale_routes_ (its handle may be in
  // posted sends); stops its refresh.
  void RetireRoute(std::unique_ptr<DatagramRoute> route)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailPendingDatagram(const PendingDatagram& pending, int errnum)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompleteDatagramPop(DatagramQueue& queue, demi_qtoken_t qt,
                           const rdma::ReceivedDatagram& datagram)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReapDatagramQueues() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!datagram_retired_.empty()) ReapRetiredDatagramQueues();
  }
  void ReapRetiredDatagramQueues() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Declared last, so destroyed first: sockets (their queue pairs) before
  // routes (the address handles their sends used) before the channel.
  std::optional<rdma::EventChannel> datagram_channel_ ABSL_GUARDED_BY(mu_);
  DatagramStats datagram_counters_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<DatagramRouteKey, std::unique_ptr<DatagramRoute>> routes_
      ABSL_GUARDED_BY(mu_);
  // Routes to sockets of this process that closed (their handles may still
  // be in posted sends), and resolutions in progress by rdma_cm id.
  std::vector<std::unique_ptr<DatagramRoute>> stale_routes_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<rdma_cm_id*, DatagramRouteKey> resolving_
      ABSL_GUARDED_BY(mu_);
  QdTable<DatagramQueue, 1> datagram_queues_ ABSL_GUARDED_BY(mu_);
  // Closed sockets kept until their sends finished and popped buffers came
  // back.
  std::vector<std::unique_ptr<DatagramQueue>> datagram_retired_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_LIBOS_H_
