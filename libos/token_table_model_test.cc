// TokenTable against a reference model under random operations.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "libos/token_table.h"
#include "libos/token_table_test_util.h"

namespace demi::libos {
namespace {

// A reference model with the same contract, written in the simplest way.
class Model {
 public:
  struct Entry {
    int qd;
    demi_opcode_t opcode;
    bool done;
    demi_qresult_t result;
  };

  explicit Model(size_t capacity) : capacity_(capacity) {}

  bool Full() const { return entries_.size() >= capacity_; }
  void Add(demi_qtoken_t qt, int qd, demi_opcode_t opcode) {
    entries_[qt] = Entry{qd, opcode, false, {}};
  }
  const Entry* Get(demi_qtoken_t qt) const {
    auto it = entries_.find(qt);
    return it == entries_.end() ? nullptr : &it->second;
  }
  void Complete(demi_qtoken_t qt, const demi_qresult_t& r) {
    Entry& e = entries_.at(qt);
    e.done = true;
    e.result = Expected(r, qt, e.qd);
    ready_.push_back(qt);
  }
  demi_qresult_t Remove(demi_qtoken_t qt) {
    demi_qresult_t r = entries_.at(qt).result;
    entries_.erase(qt);
    for (auto it = ready_.begin(); it != ready_.end(); ++it) {
      if (*it == qt) {
        ready_.erase(it);
        break;
      }
    }
    return r;
  }
  std::set<demi_qtoken_t> PendingOf(int qd) const {
    std::set<demi_qtoken_t> out;
    for (const auto& [qt, e] : entries_) {
      if (!e.done && e.qd == qd) out.insert(qt);
    }
    return out;
  }
  size_t pending_count() const { return entries_.size() - ready_.size(); }
  size_t ready_count() const { return ready_.size(); }
  const std::deque<demi_qtoken_t>& ready() const { return ready_; }
  const std::map<demi_qtoken_t, Entry>& entries() const { return entries_; }

 private:
  size_t capacity_;
  std::map<demi_qtoken_t, Entry> entries_;
  std::deque<demi_qtoken_t> ready_;
};

TEST(TokenTableTest, RandomOperationsMatchReferenceModel) {
  constexpr uint32_t kCapacity = 24;
  constexpr int kSteps = 200000;
  constexpr int kQueues = 5;
  TokenTable table(kCapacity);
  Model model(kCapacity);
  std::mt19937_64 rng(20240601);
  std::unordered_set<demi_qtoken_t> issued;
  std::vector<demi_qtoken_t> consumed;  // a sample of past tokens

  auto random_of = [&](uint64_t n) { return rng() % n; };
  // Mostly live tokens; sometimes consumed, off-by-generation or garbage.
  auto pick_token = [&]() -> demi_qtoken_t {
    const uint64_t kind = random_of(10);
    if (kind < 6 && !model.entries().empty()) {
      auto it = model.entries().begin();
      std::advance(it, random_of(model.entries().size()));
      return it->first;
    }
    if (kind < 8 && !consumed.empty()) {
      return consumed[random_of(consumed.size())];
    }
    if (kind < 9 && !model.entries().empty()) {
      auto it = model.entries().begin();
      std::advance(it, random_of(model.entries().size()));
      return it->first +
             ((rng() & 1) ? (uint64_t{1} << 32) : -(uint64_t{1} << 32));
    }
    switch (random_of(4)) {
      case 0:
        return 0;
      case 1:
        return UINT64_MAX;
      case 2:
        return random_of(kCapacity + 2);
      default:
        return rng();
    }
  };
  auto note_consumed = [&](demi_qtoken_t qt) {
    if (consumed.size() < 256) {
      consumed.push_back(qt);
    } else {
      consumed[random_of(consumed.size())] = qt;
    }
  };

  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(step);
    switch (random_of(9)) {
      case 0:
      case 1: {  // Allocate
        const int qd = static_cast<int>(random_of(kQueues));
        const auto opcode =
            static_cast<demi_opcode_t>(DEMI_OPC_PUSH + random_of(5));
        absl::StatusOr<demi_qtoken_t> qt = table.Allocate(qd, opcode);
        if (model.Full()) {
          ASSERT_EQ(ErrnoOf(qt), EAGAIN);
        } else {
          ASSERT_TRUE(qt.ok()) << qt.status();
          ASSERT_NE(*qt, 0u);
          ASSERT_TRUE(issued.insert(*qt).second) << "token reissued";
          model.Add(*qt, qd, opcode);
        }
        break;
      }
      case 2:
      case 3: {  // Complete or Fail
        const demi_qtoken_t qt = pick_token();
        const Model::Entry* e = model.Get(qt);
        const bool fail = random_of(4) == 0;
        demi_qresult_t r = MakeResult(e ? e->opcode : DEMI_OPC_PUSH, 0,
                                      static_cast<uint8_t>(rng()));
        if (fail) {
          std::memset(&r, 0, sizeof(r));
          r.qr_opcode = DEMI_OPC_FAILED;
          r.qr_ret = ECONNRESET;
        }
        const uint64_t unmatched = table.unmatched();
        if (fail) {
          table.Fail(qt, ECONNRESET);
        } else {
          table.Complete(qt, r);
        }
        if (e != nullptr && !e->done) {
          ASSERT_EQ(table.unmatched(), unmatched);
          model.Complete(qt, r);
        } else {
          ASSERT_EQ(table.unmatched(), unmatched + 1);
        }
        break;
      }
      case 4:
      case 5: {  // Take
        const demi_qtoken_t qt = pick_token();
        const Model::Entry* e = model.Get(qt);
        absl::StatusOr<demi_qresult_t> got = table.Take(qt);
        if (e == nullptr) {
          ASSERT_EQ(ErrnoOf(got), EINVAL);
        } else if (!e->done) {
          ASSERT_EQ(ErrnoOf(got), EAGAIN);
        } else {
          ASSERT_TRUE(got.ok()) << got.status();
          ASSERT_TRUE(SameResult(*got, model.Remove(qt)));
          note_consumed(qt);
        }
        break;
      }
      case 6: {  // TakeReady
        demi_qresult_t out[6];
        const size_t want = random_of(7);
        const size_t n = table.TakeReady(absl::MakeSpan(out, want));
        ASSERT_EQ(n, std::min(want, model.ready_count()));
        for (size_t i = 0; i < n; ++i) {
          const demi_qtoken_t qt = model.ready().front();
          ASSERT_EQ(out[i].qr_qt, qt);
          ASSERT_TRUE(SameResult(out[i], model.Remove(qt)));
          note_consumed(qt);
        }
        break;
      }
      case 7: {  // Release
        const demi_qtoken_t qt = pick_token();
        const Model::Entry* e = model.Get(qt);
        const uint64_t unmatched = table.unmatched();
        table.Release(qt);
        if (e == nullptr || e->done) {
          ASSERT_EQ(table.unmatched(), unmatched + 1);
        } else {
          ASSERT_EQ(table.unmatched(), unmatched);
          model.Remove(qt);
          note_consumed(qt);
        }
        break;
      }
      default: {  // Queries
        const demi_qtoken_t qt = pick_token();
        const Model::Entry* e = model.Get(qt);
        const TokenState state = table.StateOf(qt);
        if (e == nullptr) {
          ASSERT_EQ(state, TokenState::kInvalid);
          ASSERT_EQ(ErrnoOf(table.QueueOf(qt)), EINVAL);
          ASSERT_EQ(ErrnoOf(table.OpcodeOf(qt)), EINVAL);
        } else {
          ASSERT_EQ(state, e->done ? TokenState::kDone : TokenState::kPending);
          ASSERT_EQ(*table.QueueOf(qt), e->qd);
          ASSERT_EQ(*table.OpcodeOf(qt), e->opcode);
        }
        const int qd = static_cast<int>(random_of(kQueues + 1));
        std::vector<demi_qtoken_t> pending;
        table.PendingOf(qd, &pending);
        ASSERT_EQ(std::set<demi_qtoken_t>(pending.begin(), pending.end()),
                  model.PendingOf(qd));
        ASSERT_EQ(pending.size(), model.PendingOf(qd).size());
        break;
      }
    }
    ASSERT_EQ(table.pending_count(), model.pending_count());
    ASSERT_EQ(table.ready_count(), model.ready_count());
  }

  // Drain: everything left is either taken or released, in FIFO order.
  std::vector<demi_qtoken_t> rest;
  for (const auto& [qt, e] : model.entries()) rest.push_back(qt);
  for (demi_qtoken_t qt : rest) {
    if (!model.Get(qt)->done) {
      table.Release(qt);
      model.Remove(qt);
    }
  }
  std::vector<demi_qresult_t> out(kCapacity);
  const size_t n = table.TakeReady(absl::MakeSpan(out));
  ASSERT_EQ(n, model.ready_count());
  for (size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(SameResult(out[i], model.Remove(model.ready().front())));
  }
  EXPECT_EQ(table.pending_count(), 0u);
  EXPECT_EQ(table.ready_count(), 0u);
}

}  // namespace
}  // namespace demi::libos
