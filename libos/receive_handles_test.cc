#include "libos/receive_handles.h"

#include <vector>

#include "gtest/gtest.h"

namespace demi::libos {
namespace {

// An owner that records what comes back.
class FakeOwner final : public ReceiveBufferOwner {
 public:
  rdma::RegisteredSpan HeldBuffer(uint32_t index) const override {
    rdma::RegisteredSpan span;
    span.data = reinterpret_cast<const uint8_t*>(0x1000) + index * 64;
    span.size = 64;
    return span;
  }
  void ReturnBuffer(uint32_t index) override { returned.push_back(index); }
  std::vector<uint32_t> returned;
};

TEST(ReceiveHandleTableTest, FindsEveryHandleOfEveryArrayAndNothingElse) {
  ReceiveHandleTable table;
  FakeOwner a, b;
  ReceiveHandle* first = table.Add(a, 8);
  ReceiveHandle* second = table.Add(b, 3);
  for (uint32_t i = 0; i < 8; ++i) {
    ASSERT_EQ(table.Find(&first[i]), &first[i]);
    EXPECT_EQ(first[i].owner(), &a);
    EXPECT_EQ(first[i].buffer_index, i);
    EXPECT_FALSE(first[i].popped());
    EXPECT_EQ(first[i].pins.pins(), 0u);
  }
  for (uint32_t i = 0; i < 3; ++i)
    EXPECT_EQ(table.Find(&second[i])->owner(), &b);
  // Inside a handle, past the end, before the start, unrelated memory. (One
  // array's end may be the next one's start: that is the next one's.)
  EXPECT_EQ(table.Find(reinterpret_cast<const char*>(&first[2]) + 1), nullptr);
  EXPECT_EQ(table.Find(&second[3]), nullptr);  // past the last array
  EXPECT_EQ(table.Find(reinterpret_cast<const char*>(first) - 1), nullptr);
  int local = 0;
  EXPECT_EQ(table.Find(&local), nullptr);
  EXPECT_EQ(table.Find(nullptr), nullptr);

  table.Remove(first);
  table.Remove(nullptr);  // ignored
  EXPECT_EQ(table.Find(second), second);
  table.Remove(second);
  EXPECT_EQ(table.Find(second), nullptr);
}

TEST(ReceiveHandleTableTest, ARemovedArraysPlaceIsReusedAndItsOldHandlesDie) {
  ReceiveHandleTable table;
  FakeOwner a, b;
  ReceiveHandle* first = table.Add(a, 4);
  ReceiveHandle* other = table.Add(a, 2);
  ASSERT_NE(first, nullptr);
  first[1].pins.Reset();  // popped
  table.Remove(first);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(table.Find(&first[i]), nullptr);
  // The same count takes the freed run; its handles start fresh.
  ReceiveHandle* again = table.Add(b, 4);
  EXPECT_EQ(again, first);
  EXPECT_EQ(table.Find(&again[1]), &again[1]);
  EXPECT_EQ(again[1].owner(), &b);
  EXPECT_FALSE(again[1].popped());
  // Another count does not (it goes after the used part).
  ReceiveHandle* bigger = table.Add(b, 5);
  EXPECT_NE(bigger, first);
  EXPECT_EQ(table.Find(&bigger[4]), &bigger[4]);
  EXPECT_EQ(table.Find(&other[1]), &other[1]);
  EXPECT_EQ(table.Add(b, 0), nullptr);
}

TEST(ReceiveHandleTableTest, OwnerAnswersThroughTheHandle) {
  ReceiveHandleTable table;
  FakeOwner owner;
  ReceiveHandle* handles = table.Add(owner, 4);
  ReceiveHandle* found = table.Find(&handles[3]);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->owner()->HeldBuffer(found->buffer_index).data,
            reinterpret_cast<const uint8_t*>(0x1000) + 3 * 64);
  found->owner()->ReturnBuffer(found->buffer_index);
  EXPECT_EQ(owner.returned, std::vector<uint32_t>{3});
}

}  // namespace
}  // namespace demi::libos
