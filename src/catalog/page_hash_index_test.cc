#include "escdr/catalog/page_hash_index.h"

#include <random>
#include <set>

#include <gtest/gtest.h>

namespace escdr {
namespace {

TEST(PageHashIndexTest, EmptyIndexFindsNothing) {
  PageHashIndex index;
  EXPECT_EQ(index.Find(PageHash{}), PageHashIndex::kAbsent);
  EXPECT_EQ(index.Find(PageHash{1, 2}), PageHashIndex::kAbsent);
  EXPECT_FALSE(index.Set(PageHash{1, 2}, 5));
  EXPECT_EQ(index.size(), 0u);
}

TEST(PageHashIndexTest, FindOrInsertKeepsTheFirstValue) {
  PageHashIndex index;
  EXPECT_EQ(index.FindOrInsert(PageHash{1, 2}, 7), 7u);
  EXPECT_EQ(index.FindOrInsert(PageHash{1, 2}, 9), 7u);
  EXPECT_EQ(index.Find(PageHash{1, 2}), 7u);
  EXPECT_EQ(index.size(), 1u);
  // The all-zero hash is a key like any other.
  EXPECT_EQ(index.FindOrInsert(PageHash{}, 0), 0u);
  EXPECT_EQ(index.Find(PageHash{}), 0u);
  EXPECT_TRUE(index.Set(PageHash{1, 2}, 8));
  EXPECT_EQ(index.Find(PageHash{1, 2}), 8u);
}

TEST(PageHashIndexTest, KeysThatShareAWordAreDistinct) {
  PageHashIndex index;
  index.FindOrInsert(PageHash{5, 1}, 1);
  index.FindOrInsert(PageHash{6, 1}, 2);
  index.FindOrInsert(PageHash{5, 2}, 3);
  EXPECT_EQ(index.Find(PageHash{5, 1}), 1u);
  EXPECT_EQ(index.Find(PageHash{6, 1}), 2u);
  EXPECT_EQ(index.Find(PageHash{5, 2}), 3u);
  EXPECT_EQ(index.Find(PageHash{6, 2}), PageHashIndex::kAbsent);
}

TEST(PageHashIndexTest, ManyKeysSurviveGrowth) {
  std::mt19937_64 rng(42);
  std::vector<PageHash> keys;
  std::set<PageHash> seen;
  while (keys.size() < 200'000) {
    PageHash h{rng(), rng()};
    if (seen.insert(h).second) keys.push_back(h);
  }
  PageHashIndex index;  // starts empty: exercises every rehash
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(index.FindOrInsert(keys[i], static_cast<std::uint32_t>(i)), i);
  }
  EXPECT_EQ(index.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(index.Find(keys[i]), i);
  }
  for (int i = 0; i < 10'000; ++i) {
    PageHash h{rng(), rng()};
    if (!seen.count(h)) {
      ASSERT_EQ(index.Find(h), PageHashIndex::kAbsent);
    }
  }
}

TEST(PageHashIndexTest, KeysWithEqualLowWordsStayFindable) {
  // Hashes crafted to agree in one word must not defeat the index.
  PageHashIndex index(1000);
  for (std::uint32_t i = 0; i < 5000; ++i) index.FindOrInsert(PageHash{i, 0xdeadbeef}, i);
  for (std::uint32_t i = 0; i < 5000; ++i) ASSERT_EQ(index.Find(PageHash{i, 0xdeadbeef}), i);
}

}  // namespace
}  // namespace escdr
