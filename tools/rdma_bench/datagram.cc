#include "tools/rdma_bench/datagram.h"

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace demi::bench {
namespace {

constexpr timespec kTenSeconds = {10, 0};
// Push tokens are collected behind the ping-pong, not waited for in it: rxe
// reports unreliable-datagram send completions from a kernel task that can
// lag by milliseconds under emulation (ib_send_lat does not wait for them
// either).
constexpr size_t kPushesBehind = 32;

std::string Failure(const char* call, int rc) {
  return absl::StrCat(call, ": ", strerror(rc));
}

// The sockets, buffers and outstanding push tokens of one measurement;
// everything is released by the destructor.
class DatagramPair {
 public:
  ~DatagramPair() {
    demi_qresult_t result;
    for (demi_qtoken_t qt : pushes_) (void)demi_wait(&result, qt, &kTenSeconds);
    for (demi_sgarray_t& sga : buffers_) (void)demi_sgafree(&sga);
    for (int qd : qds_) (void)demi_close(qd);
  }

  // "" or what failed.
  std::string Open(in_addr ip, uint16_t port, uint64_t size) {
    for (int i = 0; i < 2; ++i) {
      int qd = -1;
      if (int rc = demi_socket(&qd, AF_INET, SOCK_DGRAM, 0); rc != 0) {
        return Failure("demi_socket(SOCK_DGRAM)", rc);
      }
      qds_.push_back(qd);
      addresses_[i].sin_family = AF_INET;
      addresses_[i].sin_addr = ip;
      addresses_[i].sin_port = htons(static_cast<uint16_t>(port + i));
      if (int rc = demi_bind(qd, Address(i), sizeof(addresses_[i])); rc != 0) {
        return Failure("demi_bind", rc);
      }
      demi_sgarray_t sga = demi_sgaalloc(size);
      if (sga.sga_numsegs != 1) return "demi_sgaalloc returned no memory";
      std::memset(sga.sga_segs[0].sgaseg_buf, 0x5a, size);
      buffers_.push_back(sga);
    }
    return "";
  }

  // One round trip: 0 pushes to 1, 1 echoes. "" or what failed.
  std::string RoundTrip() {
    for (int from = 0; from < 2; ++from) {
      const int to = 1 - from;
      demi_qtoken_t push = 0;
      if (int rc = demi_pushto(&push, qds_[from], &buffers_[from], Address(to),
                               sizeof(addresses_[to]));
          rc != 0) {
        return Failure("demi_pushto", rc);
      }
      pushes_.push_back(push);
      demi_qtoken_t pop = 0;
      if (int rc = demi_pop(&pop, qds_[to]); rc != 0) {
        return Failure("demi_pop", rc);
      }
      demi_qresult_t result{};
      if (int rc = demi_wait(&result, pop, &kTenSeconds); rc != 0) {
        return Failure("demi_wait (pop; a datagram was lost?)", rc);
      }
      if (result.qr_opcode != DEMI_OPC_POP) {
        return Failure("pop", static_cast<int>(result.qr_ret));
      }
      (void)demi_sgafree(&result.qr_value.sga);
    }
    while (pushes_.size() > kPushesBehind) {
      demi_qresult_t result{};
      if (int rc = demi_wait(&result, pushes_.front(), &kTenSeconds); rc != 0) {
        return Failure("demi_wait (push)", rc);
      }
      pushes_.pop_front();
      if (result.qr_opcode != DEMI_OPC_PUSH) {
        return Failure("push", static_cast<int>(result.qr_ret));
      }
    }
    return "";
  }

 private:
  const sockaddr* Address(int i) const {
    return reinterpret_cast<const sockaddr*>(&addresses_[i]);
  }

  std::vector<int> qds_;
  sockaddr_in addresses_[2] = {};
  std::vector<demi_sgarray_t> buffers_;
  std::deque<demi_qtoken_t> pushes_;
};

}  // namespace

absl::StatusOr<CellResult> MeasureDatagramLatency(in_addr ip, uint16_t port,
                                                  uint64_t size,
                                                  const Limits& limits) {
  CellResult cell;
  DatagramPair pair;
  std::string failed = pair.Open(ip, port, size);
  // The first round trip resolves the addresses (rdma_cm) and shows whether
  // the size fits a datagram.
  if (failed.empty()) failed = pair.RoundTrip();
  if (!failed.empty()) {
    cell.supported = false;
    cell.reason = failed;
    return cell;
  }
  const absl::Time warm_until = absl::Now() + limits.warmup;
  while (absl::Now() < warm_until) {
    if (failed = pair.RoundTrip(); !failed.empty()) break;
  }
  std::vector<double> one_way_us;
  const absl::Time start = absl::Now();
  const absl::Time until = start + limits.duration;
  while (failed.empty() &&
         (absl::Now() < until || one_way_us.size() < limits.min_iterations)) {
    const absl::Time before = absl::Now();
    failed = pair.RoundTrip();
    one_way_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - before) / 2);
  }
  if (!failed.empty()) {
    cell.supported = false;
    cell.reason = failed;
    return cell;
  }
  cell.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  cell.iterations = one_way_us.size();
  cell.latency = Summarize(one_way_us);
  return cell;
}

}  // namespace demi::bench
