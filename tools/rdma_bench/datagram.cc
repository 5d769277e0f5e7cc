#include "tools/rdma_bench/datagram.h"

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tools/rdma_bench/buffer.h"
#include "tools/rdma_bench/cycle_clock.h"

namespace demi::bench {
namespace {

constexpr timespec kTenSeconds = {10, 0};
constexpr uint16_t kDatagramPortOffset = 100;
// Push tokens are collected this far behind the ping-pong, not waited for
// in it: rxe reports unreliable-datagram send completions from a kernel
// tasklet that can lag under emulation (ib_send_lat does not wait for its
// send completions in the round trip either).
constexpr size_t kPushesBehind = 32;
// The echo server's reply buffers (each reused only once its push is done).
constexpr size_t kReplyBuffers = 32;
constexpr uint64_t kReplyBufferBytes = 8192;  // above any datagram payload
constexpr int kQuitCopies = 3;

std::string Failure(const char* call, int rc) {
  return absl::StrCat(call, ": ", strerror(rc));
}

const sockaddr* Sa(const sockaddr_in& address) {
  return reinterpret_cast<const sockaddr*>(&address);
}

// This host's address on the way to `server` (the kernel's choice of source
// address for it), port 0: what the client's datagram socket binds to.
absl::StatusOr<sockaddr_in> LocalAddressTowards(const sockaddr_in& server) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket(AF_INET, SOCK_DGRAM)");
  sockaddr_in local{};
  socklen_t size = sizeof(local);
  int rc = connect(fd, Sa(server), sizeof(server));
  if (rc == 0) rc = getsockname(fd, reinterpret_cast<sockaddr*>(&local), &size);
  const int saved = errno;
  close(fd);
  if (rc != 0) {
    return absl::ErrnoToStatus(saved,
                               "finding this host's address towards "
                               "the server");
  }
  local.sin_port = 0;
  return local;
}

// One datagram socket, closed by the destructor (which cancels its pops).
class DatagramSocket {
 public:
  DatagramSocket() = default;
  ~DatagramSocket() {
    if (qd_ >= 0) (void)demi_close(qd_);
  }
  DatagramSocket(const DatagramSocket&) = delete;
  DatagramSocket& operator=(const DatagramSocket&) = delete;

  // "" or what failed.
  std::string Bind(const sockaddr_in& address) {
    if (int rc = demi_socket(&qd_, AF_INET, SOCK_DGRAM, 0); rc != 0) {
      qd_ = -1;
      return Failure("demi_socket(SOCK_DGRAM)", rc);
    }
    if (int rc = demi_bind(qd_, Sa(address), sizeof(address)); rc != 0) {
      return Failure("demi_bind", rc);
    }
    return "";
  }

  int qd() const { return qd_; }

 private:
  int qd_ = -1;
};

// Waits for a push token: "" if it completed, else what failed.
std::string WaitPush(demi_qtoken_t qt) {
  demi_qresult_t result{};
  if (int rc = demi_wait(&result, qt, &kTenSeconds); rc != 0) {
    return Failure("demi_wait (push)", rc);
  }
  if (result.qr_opcode != DEMI_OPC_PUSH) {
    return Failure("push", static_cast<int>(result.qr_ret));
  }
  return "";
}

// The client's socket, bound and resolved to the server.
class DatagramClient {
 public:
  ~DatagramClient() {
    for (demi_qtoken_t qt : pushes_) (void)WaitPush(qt);
  }

  // Binds, then resolves the server (demi_connect), retrying while the
  // server refuses (not bound yet) for up to `wait_for_server`. "" or what
  // failed.
  std::string Open(const sockaddr_in& server, absl::Duration wait_for_server) {
    server_ = server;
    absl::StatusOr<sockaddr_in> local = LocalAddressTowards(server);
    if (!local.ok()) return std::string(local.status().message());
    if (std::string failed = socket_.Bind(*local); !failed.empty()) {
      return failed;
    }
    const absl::Time give_up = absl::Now() + wait_for_server;
    for (;;) {
      demi_qtoken_t qt = 0;
      int rc = demi_connect(&qt, socket_.qd(), Sa(server), sizeof(server));
      if (rc != 0) return Failure("demi_connect (datagram)", rc);
      demi_qresult_t result{};
      if (rc = demi_wait(&result, qt, &kTenSeconds); rc != 0) {
        return Failure("demi_wait (datagram connect)", rc);
      }
      if (result.qr_opcode == DEMI_OPC_CONNECT) return "";
      rc = static_cast<int>(result.qr_ret);
      if (rc != ECONNREFUSED || absl::Now() >= give_up) {
        return Failure("resolving the datagram server", rc);
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // One round trip of `buffer` (its bytes are never rewritten, so pushes of
  // it may still be in flight). "" or what failed.
  std::string RoundTrip(const Buffer& buffer, uint64_t size) {
    demi_qtoken_t push = 0;
    if (int rc = demi_pushto(&push, socket_.qd(), &buffer.sga(), Sa(server_),
                             sizeof(server_));
        rc != 0) {
      return Failure("demi_pushto", rc);
    }
    pushes_.push_back(push);
    demi_qtoken_t pop = 0;
    if (int rc = demi_pop(&pop, socket_.qd()); rc != 0) {
      return Failure("demi_pop", rc);
    }
    demi_qresult_t result{};
    if (int rc = demi_wait(&result, pop, &kTenSeconds); rc != 0) {
      return Failure("demi_wait (pop; the datagram or its echo was lost?)", rc);
    }
    if (result.qr_opcode != DEMI_OPC_POP) {
      return Failure("pop", static_cast<int>(result.qr_ret));
    }
    demi_sgarray_t& echo = result.qr_value.sga;
    const bool intact =
        echo.sga_numsegs == 1 && echo.sga_segs[0].sgaseg_len == size &&
        static_cast<const uint8_t*>(echo.sga_segs[0].sgaseg_buf)[0] ==
            Buffer::kFill &&
        static_cast<const uint8_t*>(echo.sga_segs[0].sgaseg_buf)[size - 1] ==
            Buffer::kFill;
    (void)demi_sgafree(&echo);
    if (!intact) return "the echo differs from the datagram sent";
    while (pushes_.size() > kPushesBehind) {
      std::string failed = WaitPush(pushes_.front());
      pushes_.pop_front();
      if (!failed.empty()) return failed;
    }
    return "";
  }

  // Sends the quit datagram kQuitCopies times (best effort).
  void Quit() {
    absl::StatusOr<std::unique_ptr<Buffer>> quit =
        Buffer::Allocate(Memory::kLibrary, 1);
    if (!quit.ok()) return;
    (*quit)->data()[0] = kDatagramQuit;
    for (int i = 0; i < kQuitCopies; ++i) {
      demi_qtoken_t qt = 0;
      if (demi_pushto(&qt, socket_.qd(), &(*quit)->sga(), Sa(server_),
                      sizeof(server_)) != 0) {
        return;
      }
      (void)WaitPush(qt);
    }
  }

 private:
  sockaddr_in server_{};
  DatagramSocket socket_;
  std::deque<demi_qtoken_t> pushes_;
};

}  // namespace

sockaddr_in DatagramServerAddress(const sockaddr_in& session) {
  sockaddr_in address = session;
  address.sin_port = htons(
      static_cast<uint16_t>(ntohs(session.sin_port) + kDatagramPortOffset));
  return address;
}

absl::Status ServeDatagrams(const sockaddr_in& address, absl::Duration idle,
                            bool* quit) {
  *quit = false;
  DatagramSocket socket;
  if (std::string failed = socket.Bind(address); !failed.empty()) {
    return absl::UnavailableError(failed);
  }
  std::array<std::unique_ptr<Buffer>, kReplyBuffers> replies;
  std::array<demi_qtoken_t, kReplyBuffers> reply_pushes{};  // 0: none
  for (std::unique_ptr<Buffer>& reply : replies) {
    absl::StatusOr<std::unique_ptr<Buffer>> allocated =
        Buffer::Allocate(Memory::kLibrary, kReplyBufferBytes);
    if (!allocated.ok()) return allocated.status();
    reply = std::move(*allocated);
  }
  auto drain = [&]() {
    for (demi_qtoken_t& qt : reply_pushes) {
      if (qt != 0) (void)WaitPush(qt);
      qt = 0;
    }
  };
  const timespec wait_for =
      absl::ToTimespec(std::max(idle, absl::ZeroDuration()));
  for (uint64_t next = 0;; ++next) {
    demi_qtoken_t pop = 0;
    if (int rc = demi_pop(&pop, socket.qd()); rc != 0) {
      drain();
      return absl::ErrnoToStatus(rc, "demi_pop (datagram server)");
    }
    demi_qresult_t result{};
    if (int rc = demi_wait(&result, pop, &wait_for); rc != 0) {
      drain();
      if (rc == ETIMEDOUT)
        return absl::OkStatus();  // idle: the pop is
                                  // cancelled by close
      return absl::ErrnoToStatus(rc, "demi_wait (datagram server)");
    }
    if (result.qr_opcode != DEMI_OPC_POP) {
      drain();
      return absl::ErrnoToStatus(static_cast<int>(result.qr_ret),
                                 "pop (datagram server)");
    }
    demi_sgarray_t& datagram = result.qr_value.sga;
    uint64_t total = 0;
    for (uint32_t i = 0; i < datagram.sga_numsegs; ++i) {
      total += datagram.sga_segs[i].sgaseg_len;
    }
    if (total == 1 && *static_cast<const uint8_t*>(
                          datagram.sga_segs[0].sgaseg_buf) == kDatagramQuit) {
      (void)demi_sgafree(&datagram);
      *quit = true;
      break;
    }
    const size_t slot = next % kReplyBuffers;
    if (reply_pushes[slot] != 0) {
      std::string failed = WaitPush(reply_pushes[slot]);
      reply_pushes[slot] = 0;
      if (!failed.empty()) {
        (void)demi_sgafree(&datagram);
        drain();
        return absl::InternalError(failed);
      }
    }
    const Buffer& reply = *replies[slot];
    uint8_t* out = reply.data();
    for (uint32_t i = 0; i < datagram.sga_numsegs && total <= kReplyBufferBytes;
         ++i) {
      std::memcpy(out, datagram.sga_segs[i].sgaseg_buf,
                  datagram.sga_segs[i].sgaseg_len);
      out += datagram.sga_segs[i].sgaseg_len;
    }
    const sockaddr_in peer = datagram.sga_addr;
    (void)demi_sgafree(&datagram);
    if (total > kReplyBufferBytes) continue;  // cannot happen: MTU-bound
    demi_sgarray_t echo = reply.sga();
    echo.sga_segs[0].sgaseg_len = static_cast<uint32_t>(total);
    if (int rc = demi_pushto(&reply_pushes[slot], socket.qd(), &echo, Sa(peer),
                             sizeof(peer));
        rc != 0) {
      reply_pushes[slot] = 0;
      drain();
      return absl::ErrnoToStatus(rc, "demi_pushto (datagram server)");
    }
  }
  drain();
  return absl::OkStatus();
}

absl::StatusOr<CellResult> MeasureDatagramLatency(
    const sockaddr_in& server, uint64_t size, const Limits& limits,
    absl::Duration wait_for_server) {
  CellResult cell;
  DatagramClient client;
  std::string failed = client.Open(server, wait_for_server);
  absl::StatusOr<std::unique_ptr<Buffer>> buffer =
      Buffer::Allocate(Memory::kLibrary, size);
  if (failed.empty() && !buffer.ok()) {
    failed = std::string(buffer.status().message());
  }
  // The first round trip shows whether the size fits a datagram.
  if (failed.empty()) failed = client.RoundTrip(**buffer, size);
  if (!failed.empty()) {
    client.Quit();
    cell.supported = false;
    cell.reason = failed;
    return cell;
  }
  const absl::Time warm_until = absl::Now() + limits.warmup;
  while (failed.empty() && absl::Now() < warm_until) {
    failed = client.RoundTrip(**buffer, size);
  }
  std::vector<double> one_way_us;
  // A cycle counter around each sample, as perftest (CycleClock).
  const int64_t start = CycleClock::NowNs();
  const int64_t until = start + absl::ToInt64Nanoseconds(limits.duration);
  int64_t end = start;
  while (failed.empty() &&
         (end < until || one_way_us.size() < limits.min_iterations)) {
    const int64_t before = end;
    failed = client.RoundTrip(**buffer, size);
    end = CycleClock::NowNs();
    one_way_us.push_back(static_cast<double>(end - before) / 2000.0);
  }
  client.Quit();
  if (!failed.empty()) {
    cell.supported = false;
    cell.reason = failed;
    return cell;
  }
  cell.seconds = static_cast<double>(end - start) / 1e9;
  cell.iterations = one_way_us.size();
  cell.latency = Summarize(one_way_us);
  return cell;
}

void StopDatagramServer(const sockaddr_in& server,
                        absl::Duration wait_for_server) {
  DatagramClient client;
  if (client.Open(server, wait_for_server).empty()) client.Quit();
}

}  // namespace demi::bench
