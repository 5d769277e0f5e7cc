// What a row of results measures (RowWorkload) and its name in the table,
// JSON and CSV. Apart from report.h so that peers.h, which report.h
// includes, can use it too.

#ifndef DEMI_TOOLS_RDMA_BENCH_ROW_WORKLOAD_H_
#define DEMI_TOOLS_RDMA_BENCH_ROW_WORKLOAD_H_

namespace demi::bench {

enum class RowWorkload {
  // Connection ping-pong: one-way microseconds (round trip / 2), beside
  // ib_send_lat.
  kLatency,
  // The Demikernel-style ping-pong (push, wait, pop, wait on both sides):
  // one-way microseconds, beside ib_send_lat.
  kDemiLatency,
  // Datagram ping-pong (SOCK_DGRAM on unreliable-datagram queue pairs):
  // one-way microseconds, beside ib_send_lat -c UD.
  kDgramLatency,
  // Stream message rate: million messages per second, beside ib_send_bw.
  kMsgRate,
  // Stream bandwidth: MiB/s, beside ib_send_bw (and ib_read_bw above the
  // eager size).
  kBandwidth,
};

// "latency", "demi_latency", "dgram_latency", "msgrate" or "bandwidth": the
// name the table, JSON and CSV print.
const char* WorkloadName(RowWorkload workload);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_ROW_WORKLOAD_H_
