#include "escdr/page/page.h"

#include <gtest/gtest.h>

#include <array>
#include <random>
#include <set>
#include <unordered_set>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace escdr {
namespace {

using Page = std::array<std::uint8_t, kPageSize>;

Page RandomPage(std::uint32_t seed) {
  Page p;
  std::mt19937 rng(seed);
  for (auto& b : p) b = static_cast<std::uint8_t>(rng());
  return p;
}

TEST(IsZeroPageTest, AllZeroPageIsZero) {
  Page p{};
  EXPECT_TRUE(IsZeroPage(p.data()));
}

TEST(IsZeroPageTest, OneNonZeroByteAnywhereIsDetected) {
  // Every position, including the last byte of every stride and of the page.
  for (std::size_t i = 0; i < kPageSize; ++i) {
    Page p{};
    p[i] = 0x01;
    ASSERT_FALSE(IsZeroPage(p.data())) << "byte " << i;
    p[i] = 0x80;
    ASSERT_FALSE(IsZeroPage(p.data())) << "byte " << i;
  }
}

TEST(IsZeroPageTest, UnalignedPointerWorks) {
  alignas(64) std::array<std::uint8_t, kPageSize + 1> buf{};
  EXPECT_TRUE(IsZeroPage(buf.data() + 1));
  buf[kPageSize] = 7;  // the last byte of the unaligned page
  EXPECT_FALSE(IsZeroPage(buf.data() + 1));
  EXPECT_TRUE(IsZeroPage(buf.data()));
}

TEST(HashPageTest, IsUnseededXxh3_128WithHighWordFirst) {
  // Checked against libxxhash itself: catches a wrong variant (64-bit, seeded,
  // secret) or swapped words, which would make catalogs incompatible.
  for (std::uint32_t seed : {0u, 1u, 2u}) {
    Page p = seed == 0 ? Page{} : RandomPage(seed);
    XXH128_hash_t ref = XXH3_128bits(p.data(), p.size());
    PageHash h = HashPage(p.data());
    EXPECT_EQ(h.hi, ref.high64) << "seed " << seed;
    EXPECT_EQ(h.lo, ref.low64) << "seed " << seed;
  }
}

TEST(HashPageTest, EqualContentEqualHashDifferentContentDifferentHash) {
  Page a = RandomPage(1);
  Page b = a;
  EXPECT_EQ(HashPage(a.data()), HashPage(b.data()));
  // Any single-bit flip changes the hash.
  for (std::size_t i = 0; i < kPageSize; i += 509) {
    b = a;
    b[i] ^= 0x10;
    EXPECT_NE(HashPage(a.data()), HashPage(b.data())) << "byte " << i;
  }
}

TEST(HashPageTest, ManyDistinctPagesHaveDistinctHashes) {
  std::unordered_set<PageHash, PageHashHasher> seen;
  for (std::uint32_t i = 0; i < 2000; ++i) {
    Page p{};
    p[0] = static_cast<std::uint8_t>(i);
    p[1] = static_cast<std::uint8_t>(i >> 8);
    EXPECT_TRUE(seen.insert(HashPage(p.data())).second) << "page " << i;
  }
}

TEST(PageHashTest, HexRoundTrip) {
  PageHash h{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  EXPECT_EQ(h.ToHex(), "0123456789abcdeffedcba9876543210");
  auto back = PageHash::FromHex(h.ToHex());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, h);
  Page p = RandomPage(7);
  PageHash hp = HashPage(p.data());
  EXPECT_EQ(PageHash::FromHex(hp.ToHex()), hp);
  EXPECT_EQ(PageHash::FromHex("0123456789ABCDEFFEDCBA9876543210"), h);
}

TEST(PageHashTest, FromHexRejectsBadInput) {
  EXPECT_FALSE(PageHash::FromHex(""));
  EXPECT_FALSE(PageHash::FromHex("0123456789abcdeffedcba987654321"));    // 31 digits
  EXPECT_FALSE(PageHash::FromHex("0123456789abcdeffedcba98765432100"));  // 33 digits
  EXPECT_FALSE(PageHash::FromHex("0123456789abcdeffedcba987654321g"));
  EXPECT_FALSE(PageHash::FromHex("0x23456789abcdeffedcba9876543210"));
}

TEST(PageHashTest, OrderIsHiThenLo) {
  std::set<PageHash> s{{2, 0}, {1, 5}, {1, 3}};
  std::vector<PageHash> v(s.begin(), s.end());
  EXPECT_EQ(v[0], (PageHash{1, 3}));
  EXPECT_EQ(v[1], (PageHash{1, 5}));
  EXPECT_EQ(v[2], (PageHash{2, 0}));
}

}  // namespace
}  // namespace escdr
