#include "escdr/sys/clock.h"

#include <gtest/gtest.h>

namespace escdr {
namespace {

using std::chrono::milliseconds;

TEST(DeadlineTest, ZeroAndNegativeTimeoutsAreExpired) {
  EXPECT_TRUE(Deadline::After(milliseconds(0)).Expired());
  Deadline d = Deadline::After(milliseconds(-5));
  EXPECT_TRUE(d.Expired());
  EXPECT_EQ(d.Remaining(), milliseconds(0));
  EXPECT_EQ(d.PollTimeoutMs(), 0);
}

TEST(DeadlineTest, NeverNeverExpiresAndPollsForever) {
  Deadline d = Deadline::Never();
  EXPECT_FALSE(d.Expired());
  EXPECT_EQ(d.PollTimeoutMs(), -1);
  EXPECT_EQ(d.Remaining(), milliseconds::max());
  EXPECT_TRUE(d.is_never());
}

TEST(DeadlineTest, HugeTimeoutsDoNotOverflow) {
  Deadline d = Deadline::After(milliseconds::max());
  EXPECT_TRUE(d.is_never());
  EXPECT_FALSE(d.Expired());
}

TEST(DeadlineTest, RemainingIsBoundedByTheTimeout) {
  Deadline d = Deadline::After(std::chrono::hours(1));
  EXPECT_FALSE(d.Expired());
  EXPECT_LE(d.Remaining(), std::chrono::hours(1));
  EXPECT_GT(d.Remaining(), milliseconds(0));
  EXPECT_GT(d.PollTimeoutMs(), 0);
}

}  // namespace
}  // namespace escdr
