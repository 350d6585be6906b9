#include "escdr/qemu/serial_log.h"

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

// What the test guest's console looks like in QEMU's serial file.
const std::string kBoot =
    "\x1b" "c\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
    "Booting from ROM...\r\n"
    "\x1b" "c\x1b[?7l\x1b[2Jescdr-guest: up\r\n"
    "escdr-counter 1\r\n"
    "escdr-counter 2\r\n";

TEST(ParseLastCounterTest, FindsTheLastCompleteCounterLine) {
  EXPECT_EQ(ParseLastCounter(kBoot), 2u);
  EXPECT_EQ(ParseLastCounter(kBoot + "escdr-counter 3"), 2u);  // incomplete line
  EXPECT_EQ(ParseLastCounter(kBoot + "escdr-counter 3\r\n"), 3u);
  EXPECT_EQ(ParseLastCounter(kBoot + "escdr-counter 3\r\n[   5.1] some kernel line\r\n"), 3u);
  EXPECT_EQ(ParseLastCounter("escdr-counter 123456789012\n"), 123456789012u);
}

TEST(ParseLastCounterTest, NoCounterYet) {
  EXPECT_EQ(ParseLastCounter(""), std::nullopt);
  EXPECT_EQ(ParseLastCounter("SeaBIOS\r\nescdr-guest: up\r\n"), std::nullopt);
  EXPECT_EQ(ParseLastCounter("escdr-counter \r\nescdr-counter x1\r\n"), std::nullopt);
}

TEST(SerialLogFileTest, ReadsCounterAndLinesFromAFile) {
  auto dir = TempDir::Create("escdr-serial");
  ASSERT_TRUE(dir.has_value());
  std::string log = dir->File("serial.log");
  auto missing = ReadLastCounter(log);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(*missing, std::nullopt);
  EXPECT_EQ(SerialLogTail(log), "");

  // A long log: only the tail is read, the counter is still found.
  std::string text = kBoot;
  for (int i = 3; i <= 20000; ++i) text += "escdr-counter " + std::to_string(i) + "\r\n";
  ASSERT_TRUE(WriteStringToFile(log, text).ok());
  auto c = ReadLastCounter(log);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(*c, 20000u);

  auto up = SerialLogHasLine(log, "escdr-guest: up");
  ASSERT_TRUE(up.has_value());
  EXPECT_TRUE(*up);
  auto absent = SerialLogHasLine(log, "escdr-guest: seed 7");
  ASSERT_TRUE(absent.has_value());
  EXPECT_FALSE(*absent);
}

TEST(SerialLogFileTest, TailDropsEscapesAndKeepsTheLastLines) {
  auto dir = TempDir::Create("escdr-serial");
  ASSERT_TRUE(dir.has_value());
  std::string log = dir->File("serial.log");
  ASSERT_TRUE(WriteStringToFile(log, kBoot).ok());
  std::string tail = SerialLogTail(log, 3);
  EXPECT_EQ(tail, "escdr-guest: up\nescdr-counter 1\nescdr-counter 2\n");
}

}  // namespace
}  // namespace escdr
