#include "escdr/wire/dedup.h"

#include <vector>

#include <gtest/gtest.h>

namespace escdr::wire {
namespace {

std::vector<std::uint8_t> Page(std::uint8_t fill) {
  std::vector<std::uint8_t> p(kPageSize, fill);
  p[17] = static_cast<std::uint8_t>(fill * 3 + 1);
  return p;
}

std::uint64_t Key(const std::vector<std::uint8_t>& p) { return DedupKey(HashPage(p.data())); }

TEST(DedupIndexTest, FindsAPageSentBeforeWithinTheHistoryOnly) {
  auto index = DedupIndex::Create(4).value();
  const auto a = Page(1), b = Page(2);
  EXPECT_FALSE(index.Find(Key(a), a.data(), 100).has_value());
  index.Insert(Key(a), a.data(), 100);
  EXPECT_EQ(index.Find(Key(a), a.data(), 100 + kPageSize + 8), 100u);
  // The destination holds 4 pages of stream: 100 is gone once the new
  // payload starts more than 4 * 4096 bytes later.
  EXPECT_EQ(index.Find(Key(a), a.data(), 100 + 4 * kPageSize), 100u);
  EXPECT_FALSE(index.Find(Key(a), a.data(), 101 + 4 * kPageSize).has_value());
  EXPECT_FALSE(index.Find(Key(b), b.data(), 9000).has_value());
}

TEST(DedupIndexTest, AKeyCollisionWithOtherBytesIsNoMatch) {
  auto index = DedupIndex::Create(4).value();
  const auto a = Page(1), b = Page(2);
  index.Insert(Key(a), a.data(), 0);
  // The same key, other bytes: compared, not trusted.
  EXPECT_FALSE(index.Find(Key(a), b.data(), kPageSize).has_value());
}

TEST(DedupIndexTest, OverwrittenSlotsLeaveTheIndexAndNewerCopiesWin) {
  auto index = DedupIndex::Create(2).value();
  const auto a = Page(1), b = Page(2), c = Page(3);
  index.Insert(Key(a), a.data(), 0);
  index.Insert(Key(b), b.data(), kPageSize);
  index.Insert(Key(a), a.data(), 2 * kPageSize);  // a again, newer
  EXPECT_EQ(index.Find(Key(a), a.data(), 3 * kPageSize), 2 * kPageSize);
  index.Insert(Key(c), c.data(), 3 * kPageSize);  // overwrites b's slot
  EXPECT_FALSE(index.Find(Key(b), b.data(), 4 * kPageSize).has_value());
  EXPECT_EQ(index.Find(Key(c), c.data(), 4 * kPageSize), 3 * kPageSize);
  EXPECT_EQ(index.Find(Key(a), a.data(), 4 * kPageSize), 2 * kPageSize);
}

TEST(StreamHistoryTest, CopiesPagesAcrossTheRingsWrapAndChecksThem) {
  auto h = StreamHistory::Create(2).value();  // 8192 bytes
  std::vector<std::uint8_t> head(5000, 0xee);
  const auto a = Page(7);
  h.Append(head);
  h.Append(a);  // at 5000..9096: wraps around the 8192-byte ring
  EXPECT_EQ(h.position(), 9096u);
  std::vector<std::uint8_t> out(kPageSize);
  ASSERT_TRUE(h.CopyPage(5000, Key(a), out.data()).ok());
  EXPECT_EQ(out, a);
  Status bad = h.CopyPage(5000, Key(a) ^ 1, out.data());
  EXPECT_EQ(bad.code(), StatusCode::kCorruption) << bad.message();
}

TEST(StreamHistoryTest, OffsetsOutsideTheHistoryAreProtocolErrors) {
  auto h = StreamHistory::Create(1).value();
  std::vector<std::uint8_t> bytes(3 * kPageSize, 0x42);
  h.Append(bytes);
  std::vector<std::uint8_t> out(kPageSize);
  // Too old, not yet complete, ahead of the stream.
  for (std::uint64_t off : {std::uint64_t{0}, std::uint64_t{2 * kPageSize + 1},
                            std::uint64_t{3 * kPageSize}, std::uint64_t{10 * kPageSize}}) {
    Status s = h.CopyPage(off, 0, out.data());
    EXPECT_EQ(s.code(), StatusCode::kProtocolError) << off << ": " << s.message();
  }
  EXPECT_TRUE(h.CopyPage(2 * kPageSize, DedupKey(HashPage(bytes.data())), out.data()).ok());
  // Skipped bytes count in the position but hold nothing a check accepts.
  h.Skip(kPageSize);
  EXPECT_EQ(h.position(), 4 * kPageSize);
}

TEST(StreamHistoryTest, SkippedBytesAreZerosNotWhatAnEarlierMigrationLeft) {
  const auto a = Page(9);
  {
    auto h = StreamHistory::Create(3).value();
    h.Append(a);
    std::vector<std::uint8_t> out(kPageSize);
    ASSERT_TRUE(h.CopyPage(0, Key(a), out.data()).ok());
  }
  // The next history of this size reuses the released ring (PageRing's
  // cache), which still holds `a` at offset 0.
  auto h = StreamHistory::Create(3).value();
  h.Skip(kPageSize);
  h.Append(Page(4));
  std::vector<std::uint8_t> out(kPageSize);
  Status s = h.CopyPage(0, Key(a), out.data());
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.message();
  const std::vector<std::uint8_t> zeros(kPageSize, 0);
  EXPECT_TRUE(h.CopyPage(0, Key(zeros), out.data()).ok());
}

}  // namespace
}  // namespace escdr::wire
