// rdma_bench's server: accepts the client's connections and, cell by cell,
// echoes or sinks what they push (the ping-pong's echo answers with the
// popped array itself, zero copy, or a copy, as EchoMode says).

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/rdma_bench/bench.h"
#include "tools/rdma_bench/buffer.h"
#include "tools/rdma_bench/control.h"
#include "tools/rdma_bench/cycle_clock.h"

namespace demi::bench {
namespace {

struct ServerConnection {
  int qd = -1;
  bool open = true;
  Outbox outbox;
  Control cell;                            // the last kBegin
  std::unique_ptr<Buffer> reply;           // ping-pong replies
  std::deque<demi_sgarray_t> echoes_owed;  // popped pings to push (EAGAIN)
  std::vector<std::unique_ptr<Buffer>> retired;  // freed once pushes finish
  uint32_t pushes_in_flight = 0;
  uint32_t replies_owed = 0;  // deferred by EAGAIN
  uint64_t received = 0;
};

class Server {
 public:
  explicit Server(EchoMode echo) : echo_(echo) {}

  absl::Status Run(const sockaddr_in& address, absl::Duration idle,
                   const std::function<void()>& listening) {
    int rc = demi_socket(&listener_, AF_INET, SOCK_STREAM, 0);
    if (rc != 0) return DemiError(rc, "demi_socket");
    rc = demi_bind(listener_, reinterpret_cast<const sockaddr*>(&address),
                   sizeof(address));
    if (rc != 0) return DemiError(rc, "demi_bind");
    rc = demi_listen(listener_, 64);
    if (rc != 0) return DemiError(rc, "demi_listen");
    if (absl::Status s = Accept(); !s.ok()) return s;
    listening();
    while (!finished_) {
      absl::StatusOr<int> n =
          Pump(idle, [this](demi_qresult_t& r) { return Handle(r); });
      if (!n.ok()) return n.status();
      if (*n == 0) {
        return absl::DeadlineExceededError(absl::StrCat(
            "server: nothing happened for ", absl::FormatDuration(idle)));
      }
      for (ServerConnection& c : connections_) {
        if (!c.open) continue;
        if (absl::Status s = SendReplies(c); !s.ok()) return s;
        if (absl::Status s = c.outbox.Flush(c.qd); !s.ok()) return s;
      }
    }
    (void)demi_close(listener_);
    return absl::OkStatus();
  }

 private:
  absl::Status Accept() {
    int rc = demi_accept(&accept_qt_, listener_);
    return rc == 0 ? absl::OkStatus() : DemiError(rc, "demi_accept");
  }

  ServerConnection* Find(int qd) {
    for (ServerConnection& c : connections_) {
      if (c.qd == qd && c.open) return &c;
    }
    return nullptr;
  }

  absl::Status Handle(demi_qresult_t& result) {
    if (result.qr_qt == accept_qt_) {
      if (result.qr_opcode != DEMI_OPC_ACCEPT) {
        return DemiError(static_cast<int>(result.qr_ret), "demi_accept");
      }
      connections_.emplace_back();
      connections_.back().qd = result.qr_value.ares.qd;
      for (int i = 0; i < kPopsPosted; ++i) {
        if (absl::Status s = PostPop(result.qr_value.ares.qd); !s.ok()) {
          return s;
        }
      }
      return Accept();
    }
    ServerConnection* c = Find(result.qr_qd);
    switch (result.qr_opcode) {
      case DEMI_OPC_PUSH:
        if (FreeIfControlPush(result) || c == nullptr) return absl::OkStatus();
        if (--c->pushes_in_flight == 0) c->retired.clear();
        return absl::OkStatus();
      case DEMI_OPC_POP:
        if (c == nullptr) {
          (void)demi_sgafree(&result.qr_value.sga);
          return absl::OkStatus();
        }
        return OnMessage(*c, result.qr_value.sga);
      case DEMI_OPC_FAILED:
        // After a close every pending operation fails (ECANCELED); a lost
        // client shows up as ECONNRESET. Either way the connection is over.
        if (c != nullptr) {
          int err = static_cast<int>(result.qr_ret);
          if (err != ECANCELED && err != ECONNRESET) {
            return DemiError(err, "server: an operation failed");
          }
          CloseConnection(*c);
        }
        return absl::OkStatus();
      default:
        return absl::InternalError(
            absl::StrCat("server: unexpected result opcode ",
                         static_cast<int>(result.qr_opcode)));
    }
  }

  void CloseConnection(ServerConnection& c) {
    for (demi_sgarray_t& sga : c.echoes_owed) (void)demi_sgafree(&sga);
    c.echoes_owed.clear();
    c.open = false;
    (void)demi_close(c.qd);
    finished_ = std::none_of(connections_.begin(), connections_.end(),
                             [](const ServerConnection& x) { return x.open; });
  }

  absl::Status OnMessage(ServerConnection& c, demi_sgarray_t& sga) {
    if (sga.sga_numsegs == 0) {  // the client closed
      CloseConnection(c);
      return absl::OkStatus();
    }
    Control control;
    const bool is_control = DecodeControl(sga, &control);
    const uint64_t bytes = MessageBytes(sga);
    // A ping is answered with the popped array itself (zero copy) unless
    // the server replies from a buffer of its own.
    const bool echo = !is_control && bytes == c.cell.size &&
                      c.cell.workload == Workload::kPingPong &&
                      echo_ == EchoMode::kPopped;
    if (!echo) (void)demi_sgafree(&sga);
    if (is_control) {
      if (absl::Status s = PostPop(c.qd); !s.ok()) return s;
      return OnControl(c, control);
    }
    if (bytes != c.cell.size) {
      return absl::DataLossError(absl::StrCat(
          "server: a message of ", bytes, " bytes, expected ", c.cell.size));
    }
    ++c.received;
    if (c.cell.workload == Workload::kPingPong) {
      // The reply first: the client waits for it, nobody for the new pop.
      if (echo) {
        if (absl::Status s = Echo(c, sga); !s.ok()) return s;
      } else {
        ++c.replies_owed;
      }
      if (absl::Status s = SendReplies(c); !s.ok()) return s;
    }
    return PostPop(c.qd);
  }

  absl::Status OnControl(ServerConnection& c, const Control& control) {
    Control answer;
    answer.workload = control.workload;
    answer.memory = control.memory;
    answer.size = control.size;
    switch (control.kind) {
      case ControlKind::kBegin: {
        c.cell = control;
        c.received = 0;
        c.replies_owed = 0;
        answer.kind = ControlKind::kReady;
        if (control.workload == Workload::kPingPong &&
            echo_ == EchoMode::kBuffer) {
          absl::StatusOr<std::unique_ptr<Buffer>> reply =
              Buffer::Allocate(control.memory, control.size);
          if (!reply.ok()) {
            answer.value = ENOMEM;
            answer.detail = Detail::kAllocate;
          } else {
            c.reply = *std::move(reply);
          }
        }
        break;
      }
      case ControlKind::kEnd:
        answer.kind = ControlKind::kDone;
        answer.value = c.received;
        if (c.reply != nullptr) c.retired.push_back(std::move(c.reply));
        if (c.pushes_in_flight == 0) c.retired.clear();
        break;
      default:
        return absl::DataLossError(
            absl::StrCat("server: unexpected control message ",
                         static_cast<uint32_t>(control.kind)));
    }
    c.outbox.Add(answer);
    return c.outbox.Flush(c.qd);
  }

  // The result `rc` of pushing one reply (not EAGAIN): counted in flight,
  // or, if the library cannot take it, a kFailed for the client; any other
  // error is the server's.
  absl::Status AfterReplyPush(ServerConnection& c, int rc) {
    if (rc == 0) {
      ++c.pushes_in_flight;
      return absl::OkStatus();
    }
    if (!IsUnsupported(rc)) return DemiError(rc, "server: demi_push");
    Control failed;
    failed.kind = ControlKind::kFailed;
    failed.value = static_cast<uint64_t>(rc);
    failed.detail = Detail::kPush;
    c.outbox.Add(failed);
    return absl::OkStatus();
  }

  // Pushes back the popped array `sga` now, or, behind earlier echoes or on
  // EAGAIN, owes it.
  absl::Status Echo(ServerConnection& c, demi_sgarray_t& sga) {
    if (c.echoes_owed.empty()) {
      bool taken = false;
      if (absl::Status s = PushEcho(c, sga, &taken); !s.ok() || taken) {
        return s;
      }
    }
    c.echoes_owed.push_back(sga);
    return absl::OkStatus();
  }

  // One echo push; *taken is false on EAGAIN (the array is still the
  // caller's), else the array is freed (the library keeps the buffer until
  // the push is done).
  absl::Status PushEcho(ServerConnection& c, demi_sgarray_t& sga, bool* taken) {
    demi_qtoken_t qt = 0;
    int rc = demi_push(&qt, c.qd, &sga);
    *taken = rc != EAGAIN;
    if (!*taken) return absl::OkStatus();
    (void)demi_sgafree(&sga);
    return AfterReplyPush(c, rc);
  }

  // Pushes the owed ping-pong replies; EAGAIN leaves them owed.
  absl::Status SendReplies(ServerConnection& c) {
    while (!c.echoes_owed.empty()) {
      bool taken = false;
      if (absl::Status s = PushEcho(c, c.echoes_owed.front(), &taken);
          !s.ok() || !taken) {
        return s;
      }
      c.echoes_owed.pop_front();
    }
    while (c.replies_owed > 0) {
      if (c.reply == nullptr) {  // the Ready said it could not
        c.replies_owed = 0;
        break;
      }
      demi_qtoken_t qt = 0;
      int rc = demi_push(&qt, c.qd, &c.reply->sga());
      if (rc == EAGAIN) return absl::OkStatus();
      --c.replies_owed;
      if (absl::Status s = AfterReplyPush(c, rc); !s.ok()) return s;
    }
    return c.outbox.Flush(c.qd);
  }

  const EchoMode echo_;
  int listener_ = -1;
  demi_qtoken_t accept_qt_ = 0;
  std::deque<ServerConnection> connections_;  // stable addresses
  bool finished_ = false;
};

}  // namespace

absl::Status Serve(const sockaddr_in& address, absl::Duration idle,
                   EchoMode echo, const std::function<void()>& listening) {
  Server server(echo);
  return server.Run(address, idle, listening);
}

}  // namespace demi::bench
