#include "libos/qd_table.h"

#include <memory>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace demi::libos {
namespace {

using Streams = QdTable<int, 0>;
using Datagrams = QdTable<int, 1>;

TEST(QdTableTest, FindsWhatWasInsertedAndNothingElse) {
  Streams table;
  absl::StatusOr<int> a = table.Insert(std::make_unique<int>(7));
  absl::StatusOr<int> b = table.Insert(std::make_unique<int>(8));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GT(*a, 0);
  EXPECT_NE(*a, *b);
  ASSERT_NE(table.Find(*a), nullptr);
  EXPECT_EQ(*table.Find(*a), 7);
  EXPECT_EQ(*table.Find(*b), 8);
  EXPECT_EQ(table.size(), 2u);
  for (int bad : {0, -1, *a + 1000, *b + (1 << 20), 1 << 30}) {
    EXPECT_EQ(table.Find(bad), nullptr) << bad;
  }
}

TEST(QdTableTest, KindBitSeparatesTheTables) {
  Streams streams;
  Datagrams datagrams;
  const int s = *streams.Insert(std::make_unique<int>(1));
  const int d = *datagrams.Insert(std::make_unique<int>(2));
  EXPECT_EQ(QdKind(s), 0);
  EXPECT_EQ(QdKind(d), 1);
  EXPECT_GT(d, 0);
  EXPECT_EQ(streams.Find(d), nullptr);
  EXPECT_EQ(datagrams.Find(s), nullptr);
  EXPECT_EQ(*datagrams.Find(d), 2);
}

TEST(QdTableTest, AReusedSlotGetsANewQd) {
  Streams table;
  const int first = *table.Insert(std::make_unique<int>(1));
  std::unique_ptr<int> taken = table.Take(first);
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(*taken, 1);
  EXPECT_EQ(table.Find(first), nullptr);
  EXPECT_EQ(table.Take(first), nullptr);  // twice: nothing
  // The slot is reused under another generation: the old qd stays dead.
  std::set<int> seen = {first};
  for (int i = 0; i < 1000; ++i) {
    const int qd = *table.Insert(std::make_unique<int>(i));
    EXPECT_TRUE(seen.insert(qd).second) << "qd " << qd << " reissued";
    EXPECT_EQ(table.Find(first), nullptr);
    ASSERT_NE(table.Take(qd), nullptr);
  }
  EXPECT_EQ(table.size(), 0u);
}

TEST(QdTableTest, ForEachVisitsEveryQueueWithItsQd) {
  Streams table;
  std::vector<int> qds;
  for (int i = 0; i < 5; ++i)
    qds.push_back(*table.Insert(std::make_unique<int>(i)));
  table.Take(qds[2]);
  std::vector<int> visited;
  table.ForEach([&](int qd, const int& value) {
    EXPECT_EQ(table.Find(qd), &value);
    visited.push_back(value);
  });
  EXPECT_EQ(visited, (std::vector<int>{0, 1, 3, 4}));
  table.Clear();
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.Find(qds[0]), nullptr);
}

TEST(QdTableTest, FullTableSaysEmfile) {
  Streams table;
  for (uint32_t i = 0; i < Streams::kMaxQueues; ++i) {
    ASSERT_TRUE(table.Insert(std::make_unique<int>(0)).ok()) << i;
  }
  absl::StatusOr<int> one_more = table.Insert(std::make_unique<int>(0));
  ASSERT_FALSE(one_more.ok());
  EXPECT_EQ(ErrnoFromStatus(one_more.status()), EMFILE);
}

}  // namespace
}  // namespace demi::libos
