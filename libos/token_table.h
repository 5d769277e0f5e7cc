// TokenTable: the queue tokens of the asynchronous operations in flight.
//
// Every asynchronous operation (accept, connect, push, pop, close) gets a
// token from Allocate() when the API starts it. The token stays *pending*
// until the operation finishes and Complete() records its result; it is then
// *done* until a wait takes the result with Take() or TakeReady(), which
// *consumes* it. A consumed token is never valid again. The table is the
// single place that guarantees that no token is lost or completed twice.
//
//   TokenTable table(1024);
//   absl::StatusOr<demi_qtoken_t> qt = table.Allocate(qd, DEMI_OPC_PUSH);
//   ...                                   // later, from the progress engine
//   demi_qresult_t r = {};
//   r.qr_opcode = DEMI_OPC_PUSH;
//   table.Complete(*qt, r);
//   ...                                   // in demi_wait
//   if (table.StateOf(*qt) == TokenState::kDone) result = table.Take(*qt);
//
// Tokens. A token is never 0. It encodes a slot index (bits 0..23), the
// table's tag (bits 24..31: which of several tables issued it, TagOf) and
// the slot's generation (high 32 bits, never 0), and the generation changes
// each time a slot is freed, so a consumed token, a stale copy of one whose
// slot has since been reused, or an arbitrary number is recognized as invalid.
// A given token value comes back only after its slot has been reused 2^32 - 1
// times.
//
// Errors. Failures are absl::Status values made with demi::ErrnoError, so
// demi::ErrnoFromStatus() yields the errno for the C API:
//   EINVAL  the token is unknown: never issued, already consumed, or stale.
//   EAGAIN  Allocate(): every slot is in use ("cannot take one more operation
//           now"); Take(): the operation is still pending (the token stays
//           valid).
// Complete(), Fail(), CompleteInPlace() and Release() of a token that is not
// pending are the libOS's own bug (an operation finished twice, or one it
// never started): they change nothing, count it (unmatched()) and log it at
// error level, so no caller has a result to check or discard.
//
// Memory. All memory is allocated by the constructor (zeroed pages, backed as
// slots come into use). Allocate(), Complete(),
// Fail(), Take(), TakeReady(), Release() and StateOf() never allocate on
// success; building an error status does, so a poller should test StateOf()
// (which never allocates) before calling Take().
//
// Lifetime and ownership. The table owns no application memory: results are
// copies of demi_qresult_t (CopyResult: a push's or pop's array only up to
// sga_numsegs segments), and any buffers they point to belong to whoever
// receives the result.
//
// Thread-safety: NOT internally synchronized. The libOS calls every method
// under its own mutex; const methods may run concurrently with each other
// only.

#ifndef DEMI_LIBOS_TOKEN_TABLE_H_
#define DEMI_LIBOS_TOKEN_TABLE_H_

#include <demi/types.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace demi::libos {

// Copies what an array holds (its buffer, address and first sga_numsegs
// segments, at most DEMI_SGARRAY_MAXSIZE) into `to`; the unused segments
// of `to` are left as they are.
inline void CopyArray(const demi_sgarray_t& from, demi_sgarray_t* to) {
  to->sga_buf = from.sga_buf;
  to->sga_numsegs = from.sga_numsegs;
  to->sga_addr = from.sga_addr;
  const uint32_t n = from.sga_numsegs < DEMI_SGARRAY_MAXSIZE
                         ? from.sga_numsegs
                         : DEMI_SGARRAY_MAXSIZE;
  // One segment, the common case, copied in place: the compiler makes the
  // loop a memmove call, which costs more than the copy.
  if (n == 1) {
    to->sga_segs[0] = from.sga_segs[0];
    return;
  }
  for (uint32_t i = 0; i < n; ++i) to->sga_segs[i] = from.sga_segs[i];
}

// Copies a result as a wait hands it out: a push's or pop's array only up to
// its sga_numsegs segments (a result is mostly unused segment slots).
inline void CopyResult(const demi_qresult_t& from, demi_qresult_t* to) {
  to->qr_opcode = from.qr_opcode;
  to->qr_qd = from.qr_qd;
  to->qr_qt = from.qr_qt;
  to->qr_ret = from.qr_ret;
  if (from.qr_opcode == DEMI_OPC_PUSH || from.qr_opcode == DEMI_OPC_POP) {
    CopyArray(from.qr_value.sga, &to->qr_value.sga);
  } else {
    to->qr_value = from.qr_value;
  }
}

// Where a token stands, as StateOf() reports it.
enum class TokenState {
  kInvalid,  // unknown, consumed or stale
  kPending,  // allocated, no result yet
  kDone,     // completed, result not yet taken
};

class TokenTable {
 public:
  // Largest capacity the constructor accepts; larger values are clamped.
  static constexpr uint32_t kMaxCapacity = uint32_t{1} << 24;

  // Largest tag.
  static constexpr uint32_t kMaxTag = 255;

  // Makes a table for at most `capacity` operations in flight at once
  // (pending plus done-but-not-taken), whose tokens carry `tag` (at most
  // kMaxTag; larger values are clamped). Allocates all of its memory here.
  // A capacity of 0 makes a table where Allocate() always fails with EAGAIN.
  explicit TokenTable(uint32_t capacity, uint32_t tag = 0);
  ~TokenTable();

  TokenTable(const TokenTable&) = delete;
  TokenTable& operator=(const TokenTable&) = delete;

  // Starts tracking a new pending operation `opcode` on queue `qd` and
  // returns its token (never 0). EAGAIN when every slot is in use.
  absl::StatusOr<demi_qtoken_t> Allocate(int qd, demi_opcode_t opcode);
  // Allocate() for the hot path: 0 (which is never a token) instead of
  // EAGAIN, and no status object.
  demi_qtoken_t TryAllocate(int qd, demi_opcode_t opcode);

  // TryAllocate() and CompleteInPlace() in one, for an operation that is
  // over as soon as it starts (a push whose bytes went inline): writes the
  // new token to *qt and returns its result (qr_opcode `opcode`, qr_ret 0,
  // already at the tail of the ready FIFO) for the caller to fill qr_value.
  // Null, and nothing changed, when every slot is in use (has_free_slot()
  // says so beforehand).
  demi_qresult_t* AllocateDone(int qd, demi_opcode_t opcode, demi_qtoken_t* qt);
  // Whether the next TryAllocate() or AllocateDone() will find a slot.
  bool has_free_slot() const;

  // Records the result of the pending operation `qt` and appends it to the
  // tail of the ready FIFO. The caller fills qr_opcode, qr_ret and qr_value;
  // the table sets qr_qt to `qt` and qr_qd to the queue given to Allocate().
  // If `qt` is not pending (unknown, consumed, or already completed) the
  // table is unchanged, so a first result is never overwritten, and the
  // mismatch is counted and logged (see unmatched()).
  void Complete(demi_qtoken_t qt, const demi_qresult_t& result);

  // Complete() without a result to copy: completes the pending `qt` with
  // qr_opcode `opcode` and qr_ret 0, and returns its result for the caller
  // to fill qr_value in place (valid until the token is taken, which the
  // caller's lock keeps from happening meanwhile). Null if `qt` is not
  // pending (counted and logged, as by Complete()). The hot path's way: a pop's
  // array is written once, where the waiter copies it from.
  demi_qresult_t* CompleteInPlace(demi_qtoken_t qt, demi_opcode_t opcode);

  // Completes `qt` as failed: qr_opcode DEMI_OPC_FAILED, qr_ret `errnum`
  // (a positive errno such as ECANCELED or ECONNRESET), qr_value zeroed.
  // A token that is not pending: as Complete().
  void Fail(demi_qtoken_t qt, int errnum);

  // Forgets the pending operation `qt` without a result, for an operation
  // that could not be started after its token was allocated. The token is
  // consumed. A token that is not pending (unknown, or already completed:
  // its result stays for a wait to take) is left alone, counted and logged
  // as by Complete().
  void Release(demi_qtoken_t qt);

  // How many Complete(), Fail(), CompleteInPlace() and Release() calls found
  // their token not pending, and how many ReportUnmatched() calls were made:
  // each is a bug in the libOS (zero in every test).
  uint64_t unmatched() const { return unmatched_; }
  // Counts and logs `operation` on `qt` as unmatched, for a caller that
  // found an operation's own record of `qt` missing (a push completion
  // without its push record).
  void ReportUnmatched(const char* operation, demi_qtoken_t qt) {
    Unmatched(operation, qt);
  }

  // Where `qt` stands. Never fails and never allocates.
  TokenState StateOf(demi_qtoken_t qt) const;

  // If `qt` is done: returns its result, removes it from the ready FIFO and
  // consumes the token. EAGAIN if it is still pending (the token stays
  // valid); EINVAL if it is unknown, consumed or stale.
  absl::StatusOr<demi_qresult_t> Take(demi_qtoken_t qt);
  // Take() for the wait loop: if `qt` is done, writes its result to *out,
  // consumes the token and returns true; otherwise returns false and changes
  // nothing. No status, no copy beyond the one into *out.
  bool TakeDone(demi_qtoken_t qt, demi_qresult_t* out) {
    return TakeIfDone(qt, out) == TokenState::kDone;
  }
  // TakeDone() and StateOf() in one lookup, for the wait loop: kDone if it
  // took the result (as TakeDone), else the token's state (kPending or
  // kInvalid), nothing changed.
  // Inline: a spinning wait asks once per round.
  TokenState TakeIfDone(demi_qtoken_t qt, demi_qresult_t* out) {
    const Slot* slot = Find(qt);
    if (slot == nullptr) return TokenState::kInvalid;
    if (slot->state != Slot::State::kDone) return TokenState::kPending;
    TakeDoneSlot(qt, out);
    return TokenState::kDone;
  }

  // Takes up to out.size() results from the head of the ready FIFO, in the
  // order their operations completed, consuming their tokens. Returns how
  // many were written to out[0..n). Returns 0 when none is ready.
  size_t TakeReady(absl::Span<demi_qresult_t> out);

  // Operations completed so far (done at birth included): a waiter compares
  // two readings to learn whether anything completed between them.
  uint64_t completed() const { return completed_; }

  // The queue and the opcode given to Allocate() for a pending or done
  // token. EINVAL if `qt` is unknown, consumed or stale.
  absl::StatusOr<int> QueueOf(demi_qtoken_t qt) const;
  absl::StatusOr<demi_opcode_t> OpcodeOf(demi_qtoken_t qt) const;

  // Replaces the contents of `*out` with the tokens of `qd` that are still
  // pending (not the done ones), in slot order. Used on close (to fail them
  // with ECANCELED) and on a disconnect (ECONNRESET). A slow path: it scans
  // every slot, O(capacity), and may grow `*out`, which allocates.
  void PendingOf(int qd, std::vector<demi_qtoken_t>* out) const;

  // The slot of a token this table issued: in [0, capacity()), the same for
  // no two live tokens. For callers that keep data per operation in an
  // array of capacity() entries (they must still compare the token).
  static constexpr uint32_t IndexOf(demi_qtoken_t qt) {
    return static_cast<uint32_t>(qt) & (kMaxCapacity - 1);
  }
  // The tag of the table that issued `qt` (if any did).
  static constexpr uint32_t TagOf(demi_qtoken_t qt) {
    return static_cast<uint32_t>(qt) >> kTagShift;
  }

  // Operations allocated but not yet completed.
  size_t pending_count() const { return pending_count_; }
  // Operations completed whose results have not been taken.
  size_t ready_count() const { return ready_count_; }
  // Slots in all: pending_count() + ready_count() never exceeds this.
  size_t capacity() const { return capacity_; }

 private:
  // Counts and logs a Complete/Fail/CompleteInPlace/Release of `qt` that
  // found it not pending.
  void Unmatched(const char* operation, demi_qtoken_t qt);
  static constexpr uint32_t kNil = UINT32_MAX;  // end of a slot list
  static constexpr int kTagShift = 24;

  // The generation half of a token (IndexOf() is the other half).
  static constexpr uint32_t GenerationOf(demi_qtoken_t qt) {
    return static_cast<uint32_t>(qt >> 32);
  }

  struct Slot {
    enum class State : uint8_t { kFree, kPending, kDone };

    uint32_t generation = 1;
    State state = State::kFree;
    int qd = -1;
    demi_opcode_t opcode = DEMI_OPC_INVALID;
    // Free: next free slot. Done: next (newer) entry of the ready FIFO.
    uint32_t next = kNil;
    // Done: previous (older) entry of the ready FIFO.
    uint32_t prev = kNil;
    demi_qresult_t result{};  // meaningful when done
  };

  // Returns the slot of a pending or done token, or nullptr.
  Slot* Find(demi_qtoken_t qt) {
    return const_cast<Slot*>(static_cast<const TokenTable*>(this)->Find(qt));
  }
  const Slot* Find(demi_qtoken_t qt) const {
    // The low half is this table's tag and a slot index below capacity_.
    const uint32_t index = static_cast<uint32_t>(qt) - tag_bits_;
    if (index >= capacity_) return nullptr;
    const Slot& slot = slots_.get()[index];
    if (slot.state == Slot::State::kFree) return nullptr;
    if (slot.generation != GenerationOf(qt)) return nullptr;
    return &slot;
  }
  // TakeIfDone() of a done token: copies its result to *out, unlinks it
  // and frees its slot.
  void TakeDoneSlot(demi_qtoken_t qt, demi_qresult_t* out);

  demi_qtoken_t MakeToken(uint32_t generation, uint32_t index) const {
    return (static_cast<demi_qtoken_t>(generation) << 32) | tag_bits_ | index;
  }

  // Unlinks a done slot from the ready FIFO.
  void UnlinkReady(uint32_t index);
  // Bumps the generation of a live slot and returns it to the free list.
  void FreeSlot(uint32_t index);

  // Takes the head of the free list (else a never-used slot) for an
  // operation `opcode` on `qd` (state and links left to the caller);
  // UINT32_MAX if none is free.
  uint32_t ClaimSlot(int qd, demi_opcode_t opcode);
  // Appends the done slot `index` to the tail of the ready FIFO.
  void LinkReady(uint32_t index);

  const uint32_t capacity_;
  const uint32_t tag_bits_;  // the tag, shifted into place
  struct FreeMemory {
    void operator()(Slot* slots) const { std::free(slots); }
  };
  // calloc'ed: an all-zero slot is a free one never used, so pages of the
  // array are backed by memory only once operations use them.
  std::unique_ptr<Slot, FreeMemory> slots_;
  uint32_t fresh_ = 0;   // slots [fresh_, capacity_) never used yet
  uint32_t free_head_;   // used slots freed since; linked through Slot::next
  uint32_t ready_head_;  // oldest completed; doubly linked
  uint32_t ready_tail_;  // newest completed
  size_t pending_count_ = 0;
  size_t ready_count_ = 0;
  uint64_t completed_ = 0;
  uint64_t unmatched_ = 0;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_TOKEN_TABLE_H_
