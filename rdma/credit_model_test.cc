// CreditAccount checked exhaustively for small windows (every reachable
// state of two sides).

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "rdma/credit_account.h"
#include "rdma/credit_account_test_util.h"

namespace demi::rdma {
namespace {

// ---- Exhaustive check of small windows ------------------------------------
//
// Every state two connected sides can reach, for small windows, with an eager
// libOS (after every event each side sends data while it has some and may,
// then a credit update if it should) and any interleaving of deliveries,
// frees, and applications starting or stopping to have data to push. Checks:
//  * no receiver-not-ready and no rejected message, ever;
//  * no deadlock: no state where nothing is in flight, nothing is held, and
//    a side still has data it cannot send;
//  * no starvation: no cycle a fair scheduler could repeat forever (every
//    direction with messages in flight delivers, the peer's consumer frees
//    what it holds) in which side v has data all along but never sends
//    any. v's own consumer need not free: its pushes must not depend on it;
//  * no endless exchange of credit updates while no data moves.

enum Event {
  kDeliver0,
  kDeliver1,
  kFree0,
  kFree1,
  kPush0,
  kPush1,
  kStop0,
  kStop1,
  kNumEvents
};

struct ModelState {
  std::vector<CreditAccount> accounts;  // [side]
  bool has_data[2] = {false, false};
  std::vector<SentMessage> inbound[2];

  std::string Key() const {
    std::string key;
    auto put = [&key](uint32_t v) {
      EXPECT_LT(v, 256u);
      key.push_back(static_cast<char>(v));
    };
    for (int i = 0; i < 2; ++i) {
      put(accounts[i].credits());
      put(accounts[i].owed());
      put(accounts[i].unreposted());
      put(has_data[i]);
      put(static_cast<uint32_t>(inbound[i].size()));
      for (const SentMessage& m : inbound[i]) {
        put(m.data);
        put(m.credits_returned);
      }
    }
    return key;
  }
};

struct ModelEdge {
  Event event;
  int target;
  bool sent_data[2];
};

class Model {
 public:
  Model(uint32_t a_buffers, uint32_t b_buffers)
      : buffers_{a_buffers, b_buffers} {
    ModelState initial;
    initial.accounts = {MakeAccount(b_buffers, a_buffers),
                        MakeAccount(a_buffers, b_buffers)};
    bool sent[2] = {false, false};
    Settle(initial, sent);
    Add(initial);
    for (size_t s = 0; s < states_.size() && error_.empty(); ++s) {
      for (int e = 0; e < kNumEvents; ++e) {
        ModelState next = states_[s];
        bool sent_data[2] = {false, false};
        if (!Apply(static_cast<Event>(e), next)) continue;
        Settle(next, sent_data);
        const int target = Add(next);  // may grow edges_
        edges_[s].push_back(
            {static_cast<Event>(e), target, {sent_data[0], sent_data[1]}});
      }
    }
  }

  const std::string& error() const { return error_; }
  size_t size() const { return states_.size(); }

  // A state where nothing can happen any more but someone has data queued.
  std::string FindDeadlock() const {
    for (const ModelState& s : states_) {
      const bool idle = s.inbound[0].empty() && s.inbound[1].empty() &&
                        s.accounts[0].unreposted() == 0 &&
                        s.accounts[1].unreposted() == 0;
      if (idle && (s.has_data[0] || s.has_data[1])) return Describe(s);
    }
    return "";
  }

  // A fair cycle in which side v has data all along and sends none.
  std::string FindStarvation(int v) const {
    auto in_subgraph = [&](int s, const ModelEdge& e) {
      return states_[s].has_data[v] && states_[e.target].has_data[v] &&
             !e.sent_data[v] && e.event != (v == 0 ? kStop0 : kStop1);
    };
    auto fairness = [&](const ModelState& st) {
      uint32_t needs = 0;
      for (int i = 0; i < 2; ++i) {
        if (!st.inbound[i].empty()) needs |= 1u << (kDeliver0 + i);
      }
      if (st.accounts[1 - v].unreposted() > 0) {
        needs |= 1u << (v == 0 ? kFree1 : kFree0);
      }
      return needs;
    };
    return FindCycle(in_subgraph, fairness);
  }

  // A cycle of credit updates alone: control traffic that never stops
  // although no application pushes anything.
  std::string FindUpdateLoop() const {
    auto in_subgraph = [](int, const ModelEdge& e) {
      return e.event <= kFree1 && !e.sent_data[0] && !e.sent_data[1];
    };
    return FindCycle(in_subgraph, [](const ModelState&) { return 0u; });
  }

 private:
  // A cycle within the edges `in_subgraph` accepts that contains every event
  // `fairness` demands in any of its states. Strongly connected components
  // (iterative Tarjan): one can be cycled through taking every internal edge.
  template <typename InSubgraph, typename Fairness>
  std::string FindCycle(InSubgraph in_subgraph, Fairness fairness) const {
    const int n = static_cast<int>(states_.size());
    std::vector<int> index(n, -1), low(n, 0), component(n, -1);
    std::vector<bool> on_stack(n, false);
    std::vector<int> stack;
    std::vector<std::pair<int, size_t>> call;  // (state, next edge)
    int counter = 0, components = 0;
    for (int root = 0; root < n; ++root) {
      if (index[root] != -1) continue;
      call.push_back({root, 0});
      while (!call.empty()) {
        auto& [s, next] = call.back();
        if (next == 0 && index[s] == -1) {
          index[s] = low[s] = counter++;
          stack.push_back(s);
          on_stack[s] = true;
        }
        bool descended = false;
        while (next < edges_[s].size()) {
          const ModelEdge& e = edges_[s][next++];
          if (!in_subgraph(s, e)) continue;
          if (index[e.target] == -1) {
            call.push_back({e.target, 0});  // invalidates s and next
            descended = true;
            break;
          }
          if (on_stack[e.target]) low[s] = std::min(low[s], index[e.target]);
        }
        if (descended) continue;
        const int done = s;
        if (low[done] == index[done]) {
          int x;
          do {
            x = stack.back();
            stack.pop_back();
            on_stack[x] = false;
            component[x] = components;
          } while (x != done);
          ++components;
        }
        call.pop_back();
        if (!call.empty()) {
          const int parent = call.back().first;
          low[parent] = std::min(low[parent], low[done]);
        }
      }
    }
    constexpr uint32_t kHasEdge = 1u << kNumEvents;
    std::vector<uint32_t> has(components, 0), needs(components, 0);
    for (int s = 0; s < n; ++s) {
      for (const ModelEdge& e : edges_[s]) {
        if (in_subgraph(s, e) && component[e.target] == component[s]) {
          has[component[s]] |= 1u << e.event | kHasEdge;
        }
      }
      needs[component[s]] |= fairness(states_[s]);
    }
    for (int s = 0; s < n; ++s) {
      const int c = component[s];
      if ((has[c] & kHasEdge) && (needs[c] & ~has[c]) == 0) {
        return Describe(states_[s]);
      }
    }
    return "";
  }

  // Applies an event the scheduler chose; false if it cannot happen.
  bool Apply(Event event, ModelState& s) {
    const int i = event % 2;
    switch (event) {
      case kDeliver0:
      case kDeliver1: {
        if (s.inbound[i].empty()) return false;
        const SentMessage m = s.inbound[i].front();
        s.inbound[i].erase(s.inbound[i].begin());
        CreditAccount& account = s.accounts[i];
        if (account.unreposted() >= buffers_[i]) {
          Fail("receiver not ready", s);
        }
        if (!account.OnMessageReceived(m.credits_returned)) {
          Fail("message rejected", s);
        }
        // Header only: re-posted while handling the completion.
        if (!m.data && !account.OnReceiveReposted()) Fail("repost", s);
        return true;
      }
      case kFree0:
      case kFree1:
        if (s.accounts[i].unreposted() == 0) return false;
        if (!s.accounts[i].OnReceiveReposted()) Fail("repost", s);
        return true;
      case kPush0:
      case kPush1:
        if (s.has_data[i]) return false;
        s.has_data[i] = true;
        return true;
      case kStop0:
      case kStop1:
        if (!s.has_data[i]) return false;
        s.has_data[i] = false;
        return true;
      default:
        return false;
    }
  }

  // The eager libOS: sends everything the rules allow.
  static void Settle(ModelState& s, bool sent_data[2]) {
    bool progress = true;
    while (progress) {
      progress = false;
      for (int i = 0; i < 2; ++i) {
        CreditAccount& account = s.accounts[i];
        while (s.has_data[i] && account.CanSendData()) {
          s.inbound[1 - i].push_back(
              {.data = true, .credits_returned = *account.ConsumeForData()});
          sent_data[i] = progress = true;
        }
        if (account.ShouldSendCreditUpdate()) {
          s.inbound[1 - i].push_back(
              {.data = false,
               .credits_returned = *account.ConsumeForCreditUpdate()});
          progress = true;
        }
      }
    }
  }

  int Add(const ModelState& s) {
    auto [it, inserted] =
        index_.emplace(s.Key(), static_cast<int>(states_.size()));
    if (inserted) {
      states_.push_back(s);
      edges_.emplace_back();
    }
    return it->second;
  }

  void Fail(const std::string& what, const ModelState& s) {
    if (error_.empty()) error_ = what + " in " + Describe(s);
  }

  static std::string Describe(const ModelState& s) {
    std::string out;
    for (int i = 0; i < 2; ++i) {
      const CreditAccount& a = s.accounts[i];
      out += std::string(i == 0 ? "A" : " B") +
             "{credits=" + std::to_string(a.credits()) +
             " owed=" + std::to_string(a.owed()) +
             " held=" + std::to_string(a.unreposted()) +
             " data=" + std::to_string(s.has_data[i]) + " inbound=";
      for (const SentMessage& m : s.inbound[i]) {
        out += (m.data ? "D" : "U") + std::to_string(m.credits_returned);
      }
      out += "}";
    }
    return out;
  }

  uint32_t buffers_[2];
  std::vector<ModelState> states_;
  std::vector<std::vector<ModelEdge>> edges_;
  std::unordered_map<std::string, int> index_;
  std::string error_;
};

TEST(CreditModelTest, SmallWindowsAreSafeDeadlockFreeAndStarvationFree) {
  for (const auto& [a_buffers, b_buffers] :
       std::vector<std::pair<uint32_t, uint32_t>>{
           {3, 3}, {3, 4}, {4, 3}, {4, 4}, {3, 6}, {6, 3}, {5, 5}, {6, 6}}) {
    SCOPED_TRACE(std::to_string(a_buffers) + "/" + std::to_string(b_buffers));
    Model model(a_buffers, b_buffers);
    ASSERT_EQ(model.error(), "");
    EXPECT_GT(model.size(), 100u);
    EXPECT_EQ(model.FindDeadlock(), "");
    EXPECT_EQ(model.FindStarvation(0), "");
    EXPECT_EQ(model.FindStarvation(1), "");
    EXPECT_EQ(model.FindUpdateLoop(), "");
  }
}

}  // namespace
}  // namespace demi::rdma
