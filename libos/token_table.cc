#include "libos/token_table.h"

#include <cerrno>
#include <cstdlib>
#include <new>

#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::libos {
namespace {

// Never 0, so that no token is 0 (nor a small integer such as a qd).
constexpr uint32_t NextGeneration(uint32_t generation) {
  return generation == UINT32_MAX ? 1 : generation + 1;
}

absl::Status InvalidToken() {
  return ErrnoError(EINVAL, "unknown, consumed or stale queue token");
}

}  // namespace

TokenTable::TokenTable(uint32_t capacity, uint32_t tag)
    : capacity_(capacity < kMaxCapacity ? capacity : kMaxCapacity),
      tag_bits_((tag < kMaxTag ? tag : kMaxTag) << kTagShift),
      slots_(static_cast<Slot*>(
          std::calloc(capacity_ == 0 ? 1 : capacity_, sizeof(Slot)))),
      free_head_(kNil),
      ready_head_(kNil),
      ready_tail_(kNil) {
  if (slots_ == nullptr) throw std::bad_alloc();
}

TokenTable::~TokenTable() = default;

absl::StatusOr<demi_qtoken_t> TokenTable::Allocate(int qd,
                                                   demi_opcode_t opcode) {
  const demi_qtoken_t qt = TryAllocate(qd, opcode);
  if (qt == 0) return ErrnoError(EAGAIN, "too many operations in flight");
  return qt;
}

uint32_t TokenTable::ClaimSlot(int qd, demi_opcode_t opcode) {
  uint32_t index = free_head_;
  if (index != kNil) {
    free_head_ = slots_.get()[index].next;
  } else if (fresh_ < capacity_) {
    index = fresh_++;
    new (slots_.get() + index) Slot();  // generation 1
  } else {
    return kNil;
  }
  Slot& slot = slots_.get()[index];
  slot.qd = qd;
  slot.opcode = opcode;
  return index;
}

demi_qtoken_t TokenTable::TryAllocate(int qd, demi_opcode_t opcode) {
  const uint32_t index = ClaimSlot(qd, opcode);
  if (index == kNil) return 0;
  Slot& slot = slots_.get()[index];
  slot.state = Slot::State::kPending;
  slot.next = kNil;
  slot.prev = kNil;
  ++pending_count_;
  return MakeToken(slot.generation, index);
}

void TokenTable::Complete(demi_qtoken_t qt, const demi_qresult_t& result) {
  demi_qresult_t* slot = CompleteInPlace(qt, result.qr_opcode);
  if (slot == nullptr) return;  // counted and logged
  slot->qr_ret = result.qr_ret;
  slot->qr_value = result.qr_value;
}

void TokenTable::Unmatched(const char* operation, demi_qtoken_t qt) {
  ++unmatched_;
  const Slot* slot = Find(qt);
  DEMI_LOG(kError, "token table: ", operation, " of token ", qt, ", which is ",
           slot == nullptr ? "unknown or consumed" : "already completed",
           " (a libOS bug; ", unmatched_, " so far); nothing changed");
}

demi_qresult_t* TokenTable::CompleteInPlace(demi_qtoken_t qt,
                                            demi_opcode_t opcode) {
  Slot* slot = Find(qt);
  if (slot == nullptr || slot->state != Slot::State::kPending) {
    Unmatched(opcode == DEMI_OPC_FAILED ? "failing" : "completing", qt);
    return nullptr;
  }
  const uint32_t index = IndexOf(qt);
  slot->result.qr_opcode = opcode;
  slot->result.qr_qt = qt;
  slot->result.qr_qd = slot->qd;
  slot->result.qr_ret = 0;
  slot->state = Slot::State::kDone;
  --pending_count_;
  LinkReady(index);
  return &slot->result;
}

bool TokenTable::has_free_slot() const {
  return free_head_ != kNil || fresh_ < capacity_;
}

demi_qresult_t* TokenTable::AllocateDone(int qd, demi_opcode_t opcode,
                                         demi_qtoken_t* qt) {
  const uint32_t index = ClaimSlot(qd, opcode);
  if (index == kNil) return nullptr;
  Slot& slot = slots_.get()[index];
  slot.state = Slot::State::kDone;
  *qt = MakeToken(slot.generation, index);
  slot.result.qr_opcode = opcode;
  slot.result.qr_qt = *qt;
  slot.result.qr_qd = qd;
  slot.result.qr_ret = 0;
  LinkReady(index);
  return &slot.result;
}

void TokenTable::LinkReady(uint32_t index) {
  ++completed_;
  Slot& slot = slots_.get()[index];
  slot.next = kNil;
  slot.prev = ready_tail_;
  if (ready_tail_ == kNil) {
    ready_head_ = index;
  } else {
    slots_.get()[ready_tail_].next = index;
  }
  ready_tail_ = index;
  ++ready_count_;
}

void TokenTable::Fail(demi_qtoken_t qt, int errnum) {
  demi_qresult_t result{};
  result.qr_opcode = DEMI_OPC_FAILED;
  result.qr_ret = errnum;
  Complete(qt, result);
}

void TokenTable::Release(demi_qtoken_t qt) {
  Slot* slot = Find(qt);
  if (slot == nullptr || slot->state != Slot::State::kPending) {
    Unmatched("releasing", qt);
    return;
  }
  --pending_count_;
  FreeSlot(IndexOf(qt));
}

TokenState TokenTable::StateOf(demi_qtoken_t qt) const {
  const Slot* slot = Find(qt);
  if (slot == nullptr) return TokenState::kInvalid;
  return slot->state == Slot::State::kDone ? TokenState::kDone
                                           : TokenState::kPending;
}

absl::StatusOr<demi_qresult_t> TokenTable::Take(demi_qtoken_t qt) {
  demi_qresult_t result;
  if (TakeDone(qt, &result)) return result;
  if (Find(qt) == nullptr) return InvalidToken();
  return ErrnoError(EAGAIN, "operation still pending");
}

void TokenTable::TakeDoneSlot(demi_qtoken_t qt, demi_qresult_t* out) {
  const uint32_t index = IndexOf(qt);
  CopyResult(slots_.get()[index].result, out);
  UnlinkReady(index);
  FreeSlot(index);
}

size_t TokenTable::TakeReady(absl::Span<demi_qresult_t> out) {
  size_t n = 0;
  while (n < out.size() && ready_head_ != kNil) {
    const uint32_t index = ready_head_;
    CopyResult(slots_.get()[index].result, &out[n++]);
    UnlinkReady(index);
    FreeSlot(index);
  }
  return n;
}

absl::StatusOr<int> TokenTable::QueueOf(demi_qtoken_t qt) const {
  const Slot* slot = Find(qt);
  if (slot == nullptr) return InvalidToken();
  return slot->qd;
}

absl::StatusOr<demi_opcode_t> TokenTable::OpcodeOf(demi_qtoken_t qt) const {
  const Slot* slot = Find(qt);
  if (slot == nullptr) return InvalidToken();
  return slot->opcode;
}

void TokenTable::PendingOf(int qd, std::vector<demi_qtoken_t>* out) const {
  out->clear();
  for (uint32_t i = 0; i < fresh_; ++i) {
    const Slot& slot = slots_.get()[i];
    if (slot.state == Slot::State::kPending && slot.qd == qd) {
      out->push_back(MakeToken(slot.generation, i));
    }
  }
}

void TokenTable::UnlinkReady(uint32_t index) {
  Slot& slot = slots_.get()[index];
  if (slot.prev == kNil) {
    ready_head_ = slot.next;
  } else {
    slots_.get()[slot.prev].next = slot.next;
  }
  if (slot.next == kNil) {
    ready_tail_ = slot.prev;
  } else {
    slots_.get()[slot.next].prev = slot.prev;
  }
  slot.next = kNil;
  slot.prev = kNil;
  --ready_count_;
}

void TokenTable::FreeSlot(uint32_t index) {
  Slot& slot = slots_.get()[index];
  slot.state = Slot::State::kFree;
  slot.generation = NextGeneration(slot.generation);
  slot.qd = -1;
  slot.opcode = DEMI_OPC_INVALID;
  slot.prev = kNil;
  slot.next = free_head_;
  free_head_ = index;
}

}  // namespace demi::libos
