#include "tools/rdma_bench/row_workload.h"

namespace demi::bench {

const char* WorkloadName(RowWorkload workload) {
  switch (workload) {
    case RowWorkload::kLatency:
      return "latency";
    case RowWorkload::kDemiLatency:
      return "demi_latency";
    case RowWorkload::kDgramLatency:
      return "dgram_latency";
    case RowWorkload::kMsgRate:
      return "msgrate";
    case RowWorkload::kBandwidth:
      return "bandwidth";
  }
  return "?";
}

}  // namespace demi::bench
