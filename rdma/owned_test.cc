#include "rdma/owned.h"

#include <utility>

#include "gtest/gtest.h"

namespace demi::rdma {
namespace {

struct Thing {
  int releases = 0;
  int release_result = 0;
};

struct ThingTraits {
  using Type = Thing;
  static constexpr char kRelease[] = "release_thing";
  static int Release(Thing* thing) {
    ++thing->releases;
    return thing->release_result;
  }
};

TEST(OwnedTest, ReleasesOnceOnDestruction) {
  Thing thing;
  { Owned<ThingTraits> owned(&thing); }
  EXPECT_EQ(thing.releases, 1);
}

TEST(OwnedTest, MoveTransfersOwnership) {
  Thing thing;
  {
    Owned<ThingTraits> first(&thing);
    Owned<ThingTraits> second(std::move(first));
    EXPECT_FALSE(first);
    EXPECT_EQ(second.get(), &thing);
    Owned<ThingTraits> third;
    third = std::move(second);
    EXPECT_EQ(thing.releases, 0);
  }
  EXPECT_EQ(thing.releases, 1);
}

TEST(OwnedTest, MoveAssignmentReleasesThePreviousObject) {
  Thing a, b;
  Owned<ThingTraits> owned_a(&a);
  Owned<ThingTraits> owned_b(&b);
  owned_a = std::move(owned_b);
  EXPECT_EQ(a.releases, 1);
  EXPECT_EQ(b.releases, 0);
  owned_a.Reset();
  EXPECT_EQ(b.releases, 1);
}

TEST(OwnedTest, ReleaseGivesUpOwnership) {
  Thing thing;
  {
    Owned<ThingTraits> owned(&thing);
    EXPECT_EQ(owned.Release(), &thing);
  }
  EXPECT_EQ(thing.releases, 0);
}

TEST(OwnedTest, FailedReleaseIsLoggedNotThrown) {
  Thing thing;
  thing.release_result = EBUSY;
  testing::internal::CaptureStderr();
  { Owned<ThingTraits> owned(&thing); }
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(thing.releases, 1);
  EXPECT_NE(log.find("release_thing"), std::string::npos) << log;
  EXPECT_NE(log.find("busy"), std::string::npos) << log;
}

}  // namespace
}  // namespace demi::rdma
