#include "tools/rdma_bench/demi_style.h"

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tools/rdma_bench/cycle_clock.h"
#include "tools/rdma_bench/stats.h"

namespace demi::bench {
namespace {

constexpr timespec kTenSeconds = {10, 0};

const sockaddr* Sa(const sockaddr_in& address) {
  return reinterpret_cast<const sockaddr*>(&address);
}

absl::Status Failed(absl::string_view what, int err) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, ": ", std::strerror(err)));
}

// Waits for `qt` (the peer is on this host: ten seconds is "never") and
// checks its opcode. An error carries the errno of a failed operation.
absl::Status WaitFor(demi_qtoken_t qt, demi_opcode_t expected,
                     demi_qresult_t* result, absl::string_view what) {
  if (int rc = demi_wait(result, qt, &kTenSeconds); rc != 0) {
    return Failed(absl::StrCat("demi_wait (", what, ")"), rc);
  }
  if (result->qr_opcode != expected) {
    return Failed(what, static_cast<int>(result->qr_ret));
  }
  return absl::OkStatus();
}

}  // namespace

sockaddr_in DemiStyleServerAddress(const sockaddr_in& session) {
  sockaddr_in address = session;
  address.sin_port =
      htons(static_cast<uint16_t>(ntohs(session.sin_port) + 101));
  return address;
}

absl::Status ServeDemiStyle(const sockaddr_in& address, absl::Duration idle,
                            bool* served) {
  *served = false;
  int listener = -1;
  if (int rc = demi_socket(&listener, AF_INET, SOCK_STREAM, 0); rc != 0) {
    return Failed("demi_socket", rc);
  }
  if (int rc = demi_bind(listener, Sa(address), sizeof(address)); rc != 0) {
    return Failed("demi_bind", rc);
  }
  if (int rc = demi_listen(listener, 4); rc != 0) {
    return Failed("demi_listen", rc);
  }
  demi_qtoken_t qt = 0;
  if (int rc = demi_accept(&qt, listener); rc != 0) {
    return Failed("demi_accept", rc);
  }
  demi_qresult_t result{};
  timespec wait = absl::ToTimespec(idle);
  int rc = demi_wait(&result, qt, &wait);
  if (rc == ETIMEDOUT) {
    (void)demi_close(listener);
    return absl::OkStatus();  // nobody came
  }
  if (rc != 0) return Failed("demi_wait (accept)", rc);
  if (result.qr_opcode != DEMI_OPC_ACCEPT) {
    return Failed("accept", static_cast<int>(result.qr_ret));
  }
  *served = true;
  const int qd = result.qr_value.ares.qd;
  absl::Status status;
  for (;;) {
    if (rc = demi_pop(&qt, qd); rc != 0) {
      status = Failed("demi_pop", rc);
      break;
    }
    if (status = WaitFor(qt, DEMI_OPC_POP, &result, "pop"); !status.ok()) {
      break;
    }
    demi_sgarray_t sga = result.qr_value.sga;
    if (sga.sga_numsegs == 0) break;  // the client closed
    if (rc = demi_push(&qt, qd, &sga); rc != 0) {
      status = Failed("demi_push of the popped array", rc);
    } else {
      status = WaitFor(qt, DEMI_OPC_PUSH, &result, "push");
    }
    (void)demi_sgafree(&sga);
    if (!status.ok()) break;
  }
  (void)demi_close(qd);
  (void)demi_close(listener);
  return status;
}

absl::StatusOr<CellResult> MeasureDemiStyle(const sockaddr_in& server,
                                            uint64_t size, const Limits& limits,
                                            absl::Duration wait_for_server,
                                            bool measure) {
  int qd = -1;
  const absl::Time give_up = absl::Now() + wait_for_server;
  for (;;) {  // the server listens once its datagram row is done
    if (int rc = demi_socket(&qd, AF_INET, SOCK_STREAM, 0); rc != 0) {
      return Failed("demi_socket", rc);
    }
    demi_qtoken_t qt = 0;
    if (int rc = demi_connect(&qt, qd, Sa(server), sizeof(server)); rc != 0) {
      return Failed("demi_connect", rc);
    }
    demi_qresult_t result{};
    if (int rc = demi_wait(&result, qt, &kTenSeconds); rc != 0) {
      return Failed("demi_wait (connect)", rc);
    }
    if (result.qr_opcode == DEMI_OPC_CONNECT) break;
    (void)demi_close(qd);
    const int err = static_cast<int>(result.qr_ret);
    if (err != ECONNREFUSED || absl::Now() >= give_up) {
      return Failed("connecting to the Demikernel-style server", err);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (!measure) {
    (void)demi_close(qd);
    return CellResult{};
  }

  // One iteration, exactly as Demikernel's tcp-ping-pong client.
  auto round_trip = [&]() -> absl::Status {
    demi_sgarray_t sga = demi_sgaalloc(size);
    if (sga.sga_numsegs != 1) {
      return absl::ResourceExhaustedError("demi_sgaalloc failed");
    }
    std::memset(sga.sga_segs[0].sgaseg_buf, 1, size);
    demi_qtoken_t qt = 0;
    demi_qresult_t result{};
    absl::Status status;
    if (int rc = demi_push(&qt, qd, &sga); rc != 0) {
      status = Failed("demi_push", rc);
    } else {
      status = WaitFor(qt, DEMI_OPC_PUSH, &result, "push");
    }
    (void)demi_sgafree(&sga);
    if (!status.ok()) return status;
    if (int rc = demi_pop(&qt, qd); rc != 0) return Failed("demi_pop", rc);
    if (status = WaitFor(qt, DEMI_OPC_POP, &result, "pop"); !status.ok()) {
      return status;
    }
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < result.qr_value.sga.sga_numsegs; ++i) {
      bytes += result.qr_value.sga.sga_segs[i].sgaseg_len;
    }
    (void)demi_sgafree(&result.qr_value.sga);
    if (bytes != size) {
      return absl::DataLossError(
          absl::StrCat("an echo of ", bytes, " bytes, expected ", size));
    }
    return absl::OkStatus();
  };

  absl::Status status;
  const int64_t warm_until =
      CycleClock::NowNs() + absl::ToInt64Nanoseconds(limits.warmup);
  do {
    status = round_trip();
  } while (status.ok() && CycleClock::NowNs() < warm_until);
  std::vector<double> one_way_us;
  const int64_t start = CycleClock::NowNs();
  const int64_t until = start + absl::ToInt64Nanoseconds(limits.duration);
  int64_t end = start;
  while (status.ok() &&
         (end < until || one_way_us.size() < limits.min_iterations)) {
    const int64_t before = end;
    status = round_trip();
    end = CycleClock::NowNs();
    one_way_us.push_back(static_cast<double>(end - before) / 2000.0);
  }
  (void)demi_close(qd);
  if (!status.ok()) return status;  // a 64 B echo the library must carry
  CellResult cell;
  cell.iterations = one_way_us.size();
  cell.seconds = static_cast<double>(end - start) / 1e9;
  cell.latency = Summarize(one_way_us);
  return cell;
}

}  // namespace demi::bench
