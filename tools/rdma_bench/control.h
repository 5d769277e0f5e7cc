// What rdma_bench's client and server share on the wire and around it: the
// control messages that frame each cell, and the demi_* helpers both sides
// use (popping, draining results, pushing control messages when the library
// has room).
//
// A control message travels as two segments (split at kControlSplit), data
// as one: the library keeps segment boundaries, so the two never mix.
//
// Thread-safety: none (each side is one thread).

#ifndef DEMI_TOOLS_RDMA_BENCH_CONTROL_H_
#define DEMI_TOOLS_RDMA_BENCH_CONTROL_H_

#include <demi/types.h>

#include <cstdint>
#include <deque>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tools/rdma_bench/bench.h"
#include "tools/rdma_bench/cycle_clock.h"

namespace demi::bench {

inline constexpr uint32_t kControlMagic = 0x48434252;  // "RBCH" in memory

enum class ControlKind : uint32_t {
  kBegin = 1,  // client: a cell starts (workload, memory, size)
  kReady,      // server: value 0, or the errno that stops the cell
  kEnd,        // client: the cell is over
  kDone,       // server: value = data messages received in the cell
  kFailed,     // server: replying failed with errno `value` (ping-pong)
};

// What failed on the server side (kReady, kFailed).
enum class Detail : uint32_t { kNone = 0, kAllocate, kPush };

struct Control {
  uint32_t magic = kControlMagic;
  ControlKind kind = ControlKind::kBegin;
  Workload workload = Workload::kPingPong;
  Memory memory = Memory::kLibrary;
  uint64_t size = 0;
  uint64_t value = 0;
  Detail detail = Detail::kNone;
  uint32_t reserved = 0;
};

// A control message travels as two segments split here; data as one.
inline constexpr uint32_t kControlSplit = 8;

// True (and *control filled) if `sga` is a control message.
bool DecodeControl(const demi_sgarray_t& sga, Control* control);

// The bytes of all segments of `sga`.
uint64_t MessageBytes(const demi_sgarray_t& sga);

// Pops kept posted per connection on both sides.
inline constexpr int kPopsPosted = 32;
// A wait that sees nothing at all for this long means the peer is gone.
inline constexpr absl::Duration kStall = absl::Seconds(60);

// Read around every sample: a cycle counter, not a system call.
inline int64_t NowNs() { return CycleClock::NowNs(); }

// "ENOMEM (Cannot allocate memory)".
std::string ErrnoText(int err);
// `what` failed with errno `err`.
absl::Status DemiError(int err, absl::string_view what);

// Errors with which the library says it cannot do this (the size, the
// memory, the limits): the cell is reported n/a and the run goes on. Any
// other errno (EINVAL, EBADF, ...) is a failure: the bench asks nothing the
// library should refuse.
bool IsUnsupported(int err);

std::string MemoryName(Memory memory);

// Waits up to `timeout` for results of any operation of the process and
// hands each to `handle`. Returns how many there were (0 on a timeout).
absl::StatusOr<int> Pump(
    absl::Duration timeout,
    absl::FunctionRef<absl::Status(demi_qresult_t&)> handle);

// Posts one pop on `qd`.
absl::Status PostPop(int qd);

// Control messages waiting for the library to take them (EAGAIN).
class Outbox {
 public:
  void Add(const Control& control) { pending_.push_back(control); }

  // Pushes what it can; EAGAIN leaves the rest for the next call.
  absl::Status Flush(int qd);

  bool empty() const { return pending_.empty(); }

 private:
  std::deque<Control> pending_;
};

// A completed push of a control message: give its array back. True if it
// was one.
bool FreeIfControlPush(demi_qresult_t& result);

}  // namespace demi::bench

#endif  // DEMI_TOOLS_RDMA_BENCH_CONTROL_H_
