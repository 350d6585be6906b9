#include "escdr/base/qemu_version.h"

#include <gtest/gtest.h>

namespace escdr {
namespace {

TEST(QemuVersionTest, SeriesIsTheFirstTwoComponents) {
  EXPECT_EQ(QemuSeriesOf("10.0.13"), "10.0");
  EXPECT_EQ(QemuSeriesOf("7.2.19"), "7.2");
  EXPECT_EQ(QemuSeriesOf("7.2"), "7.2");
  EXPECT_EQ(QemuSeriesOf("7.2.19.1"), "7.2");
  EXPECT_EQ(QemuSeriesOf("7"), "7");
  EXPECT_EQ(QemuSeriesOf(""), "");
}

TEST(QemuVersionTest, ComparisonIsNumericPerComponent) {
  EXPECT_GT(CompareQemuVersions("10.0", "7.2"), 0) << "not string order";
  EXPECT_LT(CompareQemuVersions("7.2", "10.0"), 0);
  EXPECT_GT(CompareQemuVersions("7.2.19", "7.2.5"), 0);
  EXPECT_EQ(CompareQemuVersions("7.2", "7.2.0"), 0) << "a missing component is 0";
  EXPECT_EQ(CompareQemuVersions("7.2.19", "7.2.19"), 0);
  EXPECT_LT(CompareQemuVersions("7.2", "7.2.1"), 0);
  EXPECT_GT(CompareQemuVersions("8", "7.2"), 0);
  EXPECT_EQ(CompareQemuVersions("", ""), 0);
}

TEST(QemuVersionTest, VersionsAreDigitsAndDotsWithAtLeastTwoComponents) {
  for (const char* good : {"7.2", "7.2.19", "10.0.13", "0.0", "7.2.19.1", "123456789.1"}) {
    EXPECT_TRUE(IsQemuVersion(good)) << good;
  }
  for (const char* bad : {"", "7", "7.", ".2", "7..2", "v7.2", "7.2-rc1", "7.2 ", " 7.2", "7.2.",
                          "1234567890.1", "7,2", "%.2", "7._"}) {
    EXPECT_FALSE(IsQemuVersion(bad)) << bad;
  }
}

TEST(QemuVersionTest, SeriesHaveExactlyTwoComponents) {
  EXPECT_TRUE(IsQemuSeries("7.2"));
  EXPECT_TRUE(IsQemuSeries("10.0"));
  EXPECT_FALSE(IsQemuSeries("7.2.19"));
  EXPECT_FALSE(IsQemuSeries("7"));
  EXPECT_FALSE(IsQemuSeries(""));
  EXPECT_FALSE(IsQemuSeries("7.x"));
}

}  // namespace
}  // namespace escdr
