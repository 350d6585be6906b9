#include "escdr/wire/crc32c.h"

#include <cstring>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace escdr::wire {
namespace {

std::uint32_t CrcOf(std::string_view s) {
  return Crc32c(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()),
                                              s.size()));
}

TEST(Crc32cTest, MatchesStandardCheckValue) { EXPECT_EQ(CrcOf("123456789"), 0xE3069283u); }

TEST(Crc32cTest, MatchesIscsiTestVectors) {
  // RFC 3720 B.4: 32 bytes of zeros, of 0xff, and ascending 0..31.
  std::vector<std::uint8_t> buf(32, 0);
  EXPECT_EQ(Crc32c(buf), 0x8A9136AAu);
  std::memset(buf.data(), 0xff, buf.size());
  EXPECT_EQ(Crc32c(buf), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<std::uint8_t>(i);
  EXPECT_EQ(Crc32c(buf), 0x46DD794Eu);
}

TEST(Crc32cTest, EmptyInputIsZero) { EXPECT_EQ(Crc32c({}), 0u); }

TEST(Crc32cTest, ExtendEqualsWholeForEverySplit) {
  std::vector<std::uint8_t> data(100);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 3);
  const std::uint32_t whole = Crc32c(data);
  for (std::size_t split = 0; split <= data.size(); ++split) {
    std::uint32_t part = Crc32cExtend(0, data.data(), split);
    EXPECT_EQ(Crc32cExtend(part, data.data() + split, data.size() - split), whole) << split;
  }
}

// Inputs long enough for the three-stripe path (12 KiB blocks) and every
// tail length agree with a bytewise reference computed from the definition.
TEST(Crc32cTest, LongInputsMatchTheBitwiseDefinition) {
  auto reference = [](const std::vector<std::uint8_t>& d, std::size_t n) {
    std::uint32_t c = 0xffffffffu;
    for (std::size_t i = 0; i < n; ++i) {
      c ^= d[i];
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
  };
  std::vector<std::uint8_t> data(3 * 12288 + 77);
  std::uint32_t x = 12345;
  for (auto& b : data) b = static_cast<std::uint8_t>((x = x * 1103515245u + 12345u) >> 16);
  for (std::size_t n : {std::size_t{12287}, std::size_t{12288}, std::size_t{12289},
                        std::size_t{24576 + 13}, data.size()}) {
    EXPECT_EQ(Crc32cExtend(0, data.data(), n), reference(data, n)) << n;
  }
  // Split across the stripe boundaries too.
  std::uint32_t part = Crc32cExtend(0, data.data(), 5000);
  EXPECT_EQ(Crc32cExtend(part, data.data() + 5000, data.size() - 5000),
            reference(data, data.size()));
}

TEST(Crc32cTest, DetectsSingleBitFlips) {
  std::vector<std::uint8_t> data(4096, 0x5a);
  const std::uint32_t good = Crc32c(data);
  for (std::size_t bit = 0; bit < data.size() * 8; bit += 97) {
    data[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    EXPECT_NE(Crc32c(data), good) << bit;
    data[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace escdr::wire
