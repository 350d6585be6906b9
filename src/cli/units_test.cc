#include "cli/units.h"

#include <gtest/gtest.h>

namespace escdr::cli {
namespace {

TEST(UnitsTest, MibTakesBareNumbersAsMibAndBinaryUnits) {
  EXPECT_EQ(ParseMib("--memory", "4096").value(), 4096u);
  EXPECT_EQ(ParseMib("--memory", "512M").value(), 512u);
  EXPECT_EQ(ParseMib("--memory", "1.5G").value(), 1536u);
  EXPECT_EQ(ParseMib("--memory", "2gib").value(), 2048u);
  EXPECT_EQ(ParseMib("--memory", "1T").value(), 1048576u);
}

TEST(UnitsTest, BytesAndRatesTakeBareNumbersAsBytes) {
  EXPECT_EQ(ParseBytes("--dedup-budget", "65536").value(), 65536u);
  EXPECT_EQ(ParseBytes("--dedup-budget", "64M").value(), 64u << 20);
  EXPECT_EQ(ParseBytes("--dedup-budget", "0", true).value(), 0u);
  EXPECT_EQ(ParseRate("--max-bandwidth", "125000000").value(), 125000000u);
  EXPECT_EQ(ParseRate("--max-bandwidth", "100M").value(), 100u << 20);
  EXPECT_EQ(ParseRate("--max-bandwidth", "1G/s").value(), 1u << 30);
}

TEST(UnitsTest, BadTextIsAnErrorNamingTheFlagAndTheText) {
  for (const char* text : {"", "-5", "abc", "5X", "0"}) {
    auto r = ParseRate("--max-bandwidth", text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("--max-bandwidth"), std::string::npos);
    EXPECT_NE(r.error().message().find(std::string("'") + text + "'"), std::string::npos);
  }
  EXPECT_FALSE(ParseBytes("--dedup-budget", "0").has_value());
  EXPECT_FALSE(ParseMib("--memory", "0.5M").has_value());
  EXPECT_FALSE(ParseMib("--memory", "1e30T").has_value());
}

}  // namespace
}  // namespace escdr::cli
