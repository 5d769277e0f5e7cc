// rdma_bench's client: one session of connections to the server, and the
// workloads it drives on them cell by cell (ping-pong, stream).

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

uint32_t EffectiveWindow(uint32_t window, uint64_t size) {
  constexpr uint64_t kInFlight = 32 << 20;
  uint64_t fits = std::max<uint64_t>(2, kInFlight / size);
  return static_cast<uint32_t>(std::min<uint64_t>(window, fits));
}

struct Client::Connection {
  int qd = -1;
  Outbox outbox;
  std::deque<Control> controls;  // received, not yet looked at
  // The current cell.
  std::vector<std::unique_ptr<Buffer>> buffers;
  size_t next_buffer = 0;
  uint64_t expected_size = 0;
  uint32_t in_flight = 0;  // data pushes not completed
  uint64_t issued = 0;     // data pushes accepted
  uint64_t completed = 0;  // data pushes completed
  int64_t last_completion_ns = 0;
  uint64_t popped = 0;  // data messages received
  int64_t last_pop_ns = 0;
  int push_error = 0;  // a data push that failed after starting
  // Popped arrays not yet freed, their pops not yet posted again: done
  // after the next pushes (Session::Recycle), so that a ping-pong's next
  // ping does not wait behind them (a latency loop's critical path is
  // "pong seen -> next ping posted"). At most one Pump's worth.
  std::vector<demi_sgarray_t> to_recycle;

  void StartCell(uint64_t size) {
    buffers.clear();
    next_buffer = 0;
    expected_size = size;
    in_flight = 0;
    issued = completed = popped = 0;
    last_completion_ns = last_pop_ns = 0;
    push_error = 0;
  }

  // Pushes the next buffer: 0, or the errno of demi_push.
  int Push() {
    demi_qtoken_t qt = 0;
    int rc = demi_push(&qt, qd, &buffers[next_buffer]->sga());
    if (rc != 0) return rc;
    next_buffer = (next_buffer + 1) % buffers.size();
    ++in_flight;
    ++issued;
    return 0;
  }
};

class Client::Session {
 public:
  std::deque<Connection> connections;  // stable addresses
  bool outbox_backlog = false;         // some outbox holds a control message

  Connection* Find(int qd) {
    for (Connection& c : connections) {
      if (c.qd == qd) return &c;
    }
    return nullptr;
  }

  // Frees the arrays the last Pump popped and posts their pops again.
  absl::Status Recycle() {
    for (Connection& c : connections) {
      for (demi_sgarray_t& sga : c.to_recycle) {
        (void)demi_sgafree(&sga);
        if (absl::Status s = PostPop(c.qd); !s.ok()) return s;
      }
      c.to_recycle.clear();
    }
    return absl::OkStatus();
  }

  // One round of waiting: what the last one popped is recycled, then up to
  // `timeout` for results, then the outboxes that still hold control
  // messages.
  absl::StatusOr<int> Step(absl::Duration timeout) {
    if (absl::Status s = Recycle(); !s.ok()) return s;
    absl::StatusOr<int> n =
        Pump(timeout, [this](demi_qresult_t& r) { return Handle(r); });
    if (!n.ok()) return n.status();
    if (outbox_backlog) {
      if (absl::Status s = FlushOutboxes(); !s.ok()) return s;
    }
    return n;
  }

  // Pushes what the outboxes hold; outbox_backlog says whether any is left.
  absl::Status FlushOutboxes() {
    outbox_backlog = false;
    for (Connection& c : connections) {
      if (absl::Status s = c.outbox.Flush(c.qd); !s.ok()) return s;
      outbox_backlog |= !c.outbox.empty();
    }
    return absl::OkStatus();
  }

  // Step() that treats a long silence as a lost server.
  absl::Status StepOrStall() {
    absl::StatusOr<int> n = Step(kStall);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("nothing completed for ", absl::FormatDuration(kStall)));
    }
    return absl::OkStatus();
  }

  absl::Status Handle(demi_qresult_t& result) {
    Connection* c = Find(result.qr_qd);
    if (c == nullptr) {
      return absl::InternalError(
          absl::StrCat("a result for unknown queue ", result.qr_qd));
    }
    const int64_t now = NowNs();
    switch (result.qr_opcode) {
      case DEMI_OPC_PUSH:
        if (FreeIfControlPush(result)) return absl::OkStatus();
        --c->in_flight;
        ++c->completed;
        c->last_completion_ns = now;
        return absl::OkStatus();
      case DEMI_OPC_POP: {
        demi_sgarray_t& sga = result.qr_value.sga;
        if (sga.sga_numsegs == 0) {
          return absl::UnavailableError("the server closed the connection");
        }
        Control control;
        if (DecodeControl(sga, &control)) {
          c->controls.push_back(control);
        } else if (MessageBytes(sga) != c->expected_size) {
          return absl::DataLossError(
              absl::StrCat("a reply of ", MessageBytes(sga),
                           " bytes, expected ", c->expected_size));
        } else {
          ++c->popped;
          c->last_pop_ns = now;
        }
        c->to_recycle.push_back(sga);
        return absl::OkStatus();
      }
      case DEMI_OPC_FAILED: {
        const int err = static_cast<int>(result.qr_ret);
        // A data push that started and then failed for a reason the
        // library gives for what it cannot do: the cell is n/a.
        if (result.qr_value.sga.sga_numsegs == 1 && IsUnsupported(err)) {
          --c->in_flight;
          c->push_error = err;
          return absl::OkStatus();
        }
        return DemiError(err, "an operation failed");
      }
      default:
        return absl::InternalError(absl::StrCat(
            "unexpected result opcode ", static_cast<int>(result.qr_opcode)));
    }
  }

  // Sends `control` on every connection.
  absl::Status Broadcast(const Control& control) {
    for (Connection& c : connections) c.outbox.Add(control);
    return FlushOutboxes();
  }

  // Waits for a `kind` control message on every connection; returns them in
  // connection order. kFailed messages met on the way are kept in *failed.
  absl::StatusOr<std::vector<Control>> AwaitAll(ControlKind kind,
                                                std::vector<Control>* failed) {
    std::vector<Control> got(connections.size());
    std::vector<bool> have(connections.size(), false);
    size_t remaining = connections.size();
    for (;;) {
      for (size_t i = 0; i < connections.size(); ++i) {
        std::deque<Control>& queue = connections[i].controls;
        while (!have[i] && !queue.empty()) {
          Control control = queue.front();
          queue.pop_front();
          if (control.kind == kind) {
            got[i] = control;
            have[i] = true;
            --remaining;
          } else if (control.kind == ControlKind::kFailed) {
            failed->push_back(control);
          } else {
            return absl::DataLossError(absl::StrCat(
                "unexpected control message ",
                static_cast<uint32_t>(control.kind), " while waiting for ",
                static_cast<uint32_t>(kind)));
          }
        }
      }
      if (remaining == 0) return got;
      if (absl::Status s = StepOrStall(); !s.ok()) return s;
    }
  }

  // Starts a cell: tells the server (which always answers, so End() always
  // follows), then allocates this side's buffers. An empty reason string
  // means everything is ready.
  absl::StatusOr<std::string> Begin(const Cell& cell, size_t buffers) {
    Control begin;
    begin.kind = ControlKind::kBegin;
    begin.workload = cell.workload;
    begin.memory = cell.memory;
    begin.size = cell.size;
    for (Connection& c : connections) c.StartCell(cell.size);
    if (absl::Status s = Broadcast(begin); !s.ok()) return s;
    std::vector<Control> failed;
    absl::StatusOr<std::vector<Control>> ready =
        AwaitAll(ControlKind::kReady, &failed);
    if (!ready.ok()) return ready.status();
    for (Connection& c : connections) {
      for (size_t i = 0; i < buffers; ++i) {
        absl::StatusOr<std::unique_ptr<Buffer>> buffer =
            Buffer::Allocate(cell.memory, cell.size);
        if (absl::IsFailedPrecondition(buffer.status())) {
          return std::string(buffer.status().message());
        }
        if (!buffer.ok()) return buffer.status();
        c.buffers.push_back(*std::move(buffer));
      }
    }
    for (const Control& r : *ready) {
      if (r.value != 0) {
        return cell.memory == Memory::kLibrary
                   ? absl::StrCat("server: demi_sgaalloc(", cell.size,
                                  ") returned no memory")
                   : absl::StrCat("server: malloc(", cell.size, ") failed");
      }
    }
    return std::string();
  }

  // Ends a cell: waits for the connections' pushes, tells the server, and
  // checks that every data message arrived. Returns the server's kFailed
  // messages seen on the way.
  absl::StatusOr<std::vector<Control>> End(bool check_counts) {
    while (std::any_of(connections.begin(), connections.end(),
                       [](const Connection& c) { return c.in_flight > 0; })) {
      if (absl::Status s = StepOrStall(); !s.ok()) return s;
    }
    Control end;
    end.kind = ControlKind::kEnd;
    if (absl::Status s = Broadcast(end); !s.ok()) return s;
    std::vector<Control> failed;
    absl::StatusOr<std::vector<Control>> done =
        AwaitAll(ControlKind::kDone, &failed);
    if (!done.ok()) return done.status();
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = connections[i];
      if (check_counts && (*done)[i].value != c.completed) {
        return absl::DataLossError(absl::StrCat(
            "the server received ", (*done)[i].value, " messages of ",
            c.completed, " pushed on connection ", i));
      }
      c.buffers.clear();
    }
    return failed;
  }

  absl::StatusOr<CellResult> PingPong(const Cell& cell, const Limits& limits);
  absl::StatusOr<CellResult> Stream(const Cell& cell, const Limits& limits);
};

namespace {

std::string PushFailure(const Cell& cell, int err, bool server) {
  return absl::StrCat(server ? "server: " : "", "demi_push of ",
                      MemoryName(cell.memory), ": ", ErrnoText(err));
}

CellResult Unsupported(std::string reason) {
  CellResult result;
  result.supported = false;
  result.reason = std::move(reason);
  return result;
}

}  // namespace

absl::StatusOr<CellResult> Client::Session::PingPong(const Cell& cell,
                                                     const Limits& limits) {
  absl::StatusOr<std::string> begun = Begin(cell, 1);
  if (!begun.ok()) return begun.status();
  std::string reason = *begun;

  struct State {
    int64_t ping_ns = 0;    // when the outstanding ping was pushed
    bool waiting = false;   // a ping awaits its pong
    bool measured = false;  // the outstanding ping counts
    uint64_t seen = 0;      // pongs accounted for
    uint64_t samples = 0;   // measured round trips
    bool done = false;
  };
  std::vector<State> states(connections.size());
  std::vector<double> samples;
  const int64_t start = NowNs();
  const int64_t warm_until = start + absl::ToInt64Nanoseconds(limits.warmup);
  const int64_t measure_until =
      warm_until + absl::ToInt64Nanoseconds(limits.duration);
  int64_t first_measured = 0, last_measured = 0;

  // Pushes a ping on connection i; false (and `reason`) if the library
  // refuses the message.
  auto ping = [&](size_t i) -> absl::StatusOr<bool> {
    for (;;) {
      const int64_t now = NowNs();
      int rc = connections[i].Push();
      if (rc == 0) {
        states[i].ping_ns = now;
        states[i].waiting = true;
        states[i].measured = now >= warm_until;
        if (states[i].measured && first_measured == 0) first_measured = now;
        return true;
      }
      if (rc == EAGAIN) {  // too many pushes outstanding: let some finish
        absl::StatusOr<int> n = Step(absl::Milliseconds(1));
        if (!n.ok()) return n.status();
        continue;
      }
      if (!IsUnsupported(rc)) return DemiError(rc, "demi_push");
      reason = PushFailure(cell, rc, false);
      return false;
    }
  };

  bool stop = !reason.empty();
  for (size_t i = 0; i < connections.size() && !stop; ++i) {
    absl::StatusOr<bool> pushed = ping(i);
    if (!pushed.ok()) return pushed.status();
    stop = !*pushed;
  }
  for (;;) {
    bool waiting = false;
    for (const State& s : states) waiting |= s.waiting;
    if (!waiting) break;
    if (absl::Status s = StepOrStall(); !s.ok()) return s;
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = connections[i];
      State& state = states[i];
      // The server answers a ping it cannot echo with kFailed.
      for (const Control& control : c.controls) {
        if (control.kind == ControlKind::kFailed && state.waiting) {
          state.waiting = false;
          stop = true;
          if (reason.empty()) {
            reason = PushFailure(cell, static_cast<int>(control.value), true);
          }
        }
      }
      if (c.push_error != 0) {
        stop = true;
        if (reason.empty()) reason = PushFailure(cell, c.push_error, false);
      }
      if (!state.waiting || c.popped == state.seen) continue;
      state.seen = c.popped;
      state.waiting = false;
      if (state.measured) {
        samples.push_back(static_cast<double>(c.last_pop_ns - state.ping_ns) /
                          2000.0);
        ++state.samples;
        last_measured = c.last_pop_ns;
      }
      if (state.samples >= limits.min_iterations &&
          c.last_pop_ns >= measure_until) {
        state.done = true;
      }
      if (!stop && !state.done) {
        absl::StatusOr<bool> pushed = ping(i);
        if (!pushed.ok()) return pushed.status();
        stop = !*pushed;
      }
    }
    if (absl::Status s = Recycle(); !s.ok()) return s;
  }
  absl::StatusOr<std::vector<Control>> failed = End(false);
  if (!failed.ok()) return failed.status();
  if (reason.empty() && !failed->empty()) {
    reason = PushFailure(cell, static_cast<int>(failed->front().value), true);
  }
  if (!reason.empty()) return Unsupported(reason);
  CellResult result;
  result.iterations = samples.size();
  result.seconds = static_cast<double>(last_measured - first_measured) / 1e9;
  result.latency = Summarize(samples);
  return result;
}

absl::StatusOr<CellResult> Client::Session::Stream(const Cell& cell,
                                                   const Limits& limits) {
  const uint32_t window = EffectiveWindow(limits.window, cell.size);
  // Buffers are reused round robin; a buffer may be in several pushes at
  // once (the device only reads it). At most ~64 MiB of them.
  const size_t buffers =
      std::clamp<uint64_t>((64u << 20) / cell.size, 1, window);
  absl::StatusOr<std::string> begun = Begin(cell, buffers);
  if (!begun.ok()) return begun.status();
  std::string reason = *begun;

  // Phase 0 warms up (limits.warmup and at least one window per connection,
  // not measured); phase 1 measures for limits.duration and at least
  // min_iterations messages per connection.
  uint64_t measured_from_completed = 0;
  int64_t start = 0, end = 0;
  std::vector<uint64_t> warm_completed(connections.size(), 0);
  for (int phase = 0; phase < 2 && reason.empty(); ++phase) {
    const int64_t phase_start = NowNs();
    const int64_t deadline =
        phase_start +
        absl::ToInt64Nanoseconds(phase == 0 ? limits.warmup : limits.duration);
    std::vector<uint64_t> issued_before(connections.size());
    for (size_t i = 0; i < connections.size(); ++i) {
      issued_before[i] = connections[i].issued;
    }
    auto enough = [&](size_t i, int64_t now) {
      const uint64_t issued = connections[i].issued - issued_before[i];
      const uint64_t least = phase == 0 ? window : limits.min_iterations;
      return issued >= least && now >= deadline;
    };
    for (;;) {
      bool busy = false;
      for (size_t i = 0; i < connections.size() && reason.empty(); ++i) {
        Connection& c = connections[i];
        if (c.push_error != 0) {
          reason = PushFailure(cell, c.push_error, false);
          break;
        }
        const int64_t now = NowNs();
        while (c.in_flight < window && !enough(i, now)) {
          int rc = c.Push();
          if (rc == EAGAIN) break;
          if (rc != 0) {
            if (!IsUnsupported(rc)) return DemiError(rc, "demi_push");
            reason = PushFailure(cell, rc, false);
            break;
          }
        }
        busy |= c.in_flight > 0 || !enough(i, now);
      }
      if (!busy || !reason.empty()) break;
      bool any_in_flight = false;
      for (const Connection& c : connections) any_in_flight |= c.in_flight > 0;
      if (any_in_flight) {
        if (absl::Status s = StepOrStall(); !s.ok()) return s;
      } else {  // every push said EAGAIN: give the library a moment
        absl::StatusOr<int> n = Step(absl::Milliseconds(1));
        if (!n.ok()) return n.status();
      }
    }
    if (phase == 1) {
      start = phase_start;
      for (size_t i = 0; i < connections.size(); ++i) {
        end = std::max(end, connections[i].last_completion_ns);
        measured_from_completed += connections[i].completed - warm_completed[i];
      }
    } else {
      for (size_t i = 0; i < connections.size(); ++i) {
        warm_completed[i] = connections[i].completed;
      }
    }
  }
  absl::StatusOr<std::vector<Control>> failed = End(true);
  if (!failed.ok()) return failed.status();
  if (!reason.empty()) return Unsupported(reason);
  CellResult result;
  result.window = window;
  result.iterations = measured_from_completed;
  result.seconds = static_cast<double>(end - start) / 1e9;
  if (result.seconds > 0) {
    const double messages = static_cast<double>(measured_from_completed);
    result.mpps = messages / result.seconds / 1e6;
    result.mib_per_s =
        messages * static_cast<double>(cell.size) / result.seconds / (1 << 20);
  }
  return result;
}

Client::Client() : session_(std::make_unique<Session>()) {}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const sockaddr_in& address, uint32_t connections,
    absl::Duration retry_for) {
  auto client = std::unique_ptr<Client>(new Client());
  const absl::Time deadline = absl::Now() + retry_for;
  const timespec connect_timeout = {10, 0};
  for (uint32_t i = 0; i < connections; ++i) {
    int qd = -1;
    for (;;) {
      int rc = demi_socket(&qd, AF_INET, SOCK_STREAM, 0);
      if (rc != 0) return DemiError(rc, "demi_socket");
      demi_qtoken_t qt = 0;
      rc = demi_connect(&qt, qd, reinterpret_cast<const sockaddr*>(&address),
                        sizeof(address));
      if (rc != 0) return DemiError(rc, "demi_connect");
      demi_qresult_t result{};
      rc = demi_wait(&result, qt, &connect_timeout);
      if (rc != 0) return DemiError(rc, "waiting for demi_connect");
      if (result.qr_opcode == DEMI_OPC_CONNECT) break;
      const int err = static_cast<int>(result.qr_ret);
      (void)demi_close(qd);
      if ((err != ECONNREFUSED && err != ETIMEDOUT) ||
          absl::Now() >= deadline) {
        return DemiError(err, "connecting to the server");
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    client->session_->connections.emplace_back();
    client->session_->connections.back().qd = qd;
    client->session_->connections.back().to_recycle.reserve(kPopsPosted);
    for (int p = 0; p < kPopsPosted; ++p) {
      if (absl::Status s = PostPop(qd); !s.ok()) return s;
    }
  }
  return client;
}

absl::StatusOr<CellResult> Client::Run(const Cell& cell, const Limits& limits) {
  if (cell.workload == Workload::kPingPong) {
    return session_->PingPong(cell, limits);
  }
  return session_->Stream(cell, limits);
}

absl::Status Client::Close() {
  absl::Status status;
  for (Connection& c : session_->connections) {
    for (demi_sgarray_t& sga : c.to_recycle) (void)demi_sgafree(&sga);
    c.to_recycle.clear();
    int rc = demi_close(c.qd);
    if (rc != 0 && status.ok()) status = DemiError(rc, "demi_close");
  }
  session_->connections.clear();
  return status;
}

}  // namespace demi::bench
