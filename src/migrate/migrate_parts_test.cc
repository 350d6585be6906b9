// Unit tests of the migrate module's small parts: StaticContentTable,
// ScanDonor, the return-path watcher, MigrationReport.
#include <gtest/gtest.h>

#include "escdr/migrate/donor_scan.h"
#include "escdr/migrate/migration_report.h"
#include "escdr/migrate/static_content.h"
#include "escdr/wire/messages.h"
#include "migrate/session_test_util.h"
#include "migrate/session_util.h"

namespace escdr {
namespace {

PageHash HashOfSeed(std::uint64_t seed) {
  std::vector<std::uint8_t> p(kPageSize);
  test::FillPage(p.data(), seed);
  return HashPage(p.data());
}

TEST(StaticContentTableTest, SortsHashesAndFindsThemByContentAndPosition) {
  std::vector<PageHash> hashes = {HashOfSeed(3), HashOfSeed(1), HashOfSeed(2), HashOfSeed(1)};
  auto t = StaticContentTable::Create(test::TestKind(), 7, hashes,
                                      {{"pc.ram", 0x3000, HashOfSeed(2)}});
  ASSERT_TRUE(t.has_value()) << t.error().message();
  const StaticContentTable& c = **t;
  ASSERT_EQ(c.size(), 3u);
  EXPECT_TRUE(std::is_sorted(c.hashes().begin(), c.hashes().end()));
  for (std::uint32_t i = 0; i < c.size(); ++i) EXPECT_EQ(c.Find(c.hash(i)), i);
  EXPECT_EQ(c.Find(HashOfSeed(99)), kNoContent);
  int block = c.FindBlock("pc.ram");
  ASSERT_GE(block, 0);
  EXPECT_EQ(c.ContentAt(block, 3), c.Find(HashOfSeed(2)));
  EXPECT_EQ(c.ContentAt(block, 4), kNoContent);
  EXPECT_EQ(c.FindBlock("vga.vram"), -1);
  EXPECT_EQ(c.checksum(), 7u);
}

TEST(StaticContentTableTest, PositionWithUnknownHashIsRejected) {
  auto t = StaticContentTable::Create(test::TestKind(), 1, {HashOfSeed(1)},
                                      {{"pc.ram", 0, HashOfSeed(2)}});
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code(), StatusCode::kInvalidArgument);
}

TEST(DonorScanTest, FindsContentWhereverTheDonorHoldsIt) {
  test::VectorImage donor({{"a", 8 * kPageSize}, {"b", 4 * kPageSize}});
  test::FillPage(donor.MutablePage(0, 2 * kPageSize), 10);
  test::FillPage(donor.MutablePage(1, 3 * kPageSize), 20);
  test::FillPage(donor.MutablePage(1, 0), 10);  // a second copy: the first is kept
  test::FillPage(donor.MutablePage(0, 5 * kPageSize), 77);  // not content
  auto content = StaticContentTable::Create(test::TestKind(), 1,
                                            {HashOfSeed(10), HashOfSeed(20), HashOfSeed(30)});
  ASSERT_TRUE(content.has_value());
  auto a = ScanDonor(donor, **content);
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->catalog_entries, 3u);
  EXPECT_EQ(a->available, 2u);
  EXPECT_EQ(a->pages_scanned, 12u);
  EXPECT_EQ(a->zero_pages, 8u);
  const std::uint32_t i10 = (*content)->Find(HashOfSeed(10));
  const std::uint32_t i20 = (*content)->Find(HashOfSeed(20));
  const std::uint32_t i30 = (*content)->Find(HashOfSeed(30));
  EXPECT_TRUE(wire::BitmapTest(a->bitmap, i10));
  EXPECT_TRUE(wire::BitmapTest(a->bitmap, i20));
  EXPECT_FALSE(wire::BitmapTest(a->bitmap, i30));
  EXPECT_EQ(a->locations[i10].block, 0u);
  EXPECT_EQ(a->locations[i10].offset, 2 * kPageSize);
  EXPECT_EQ(a->locations[i20].block, 1u);
  EXPECT_EQ(a->locations[i20].offset, 3 * kPageSize);
  EXPECT_EQ(a->locations[i30].block, DonorAvailability::Location::kNowhere);
}

TEST(DonorScanTest, NoneOffersNothing) {
  DonorAvailability a = DonorAvailability::None(20);
  EXPECT_EQ(a.bitmap.size(), 3u);
  EXPECT_EQ(wire::BitmapPopcount(a.bitmap), 0u);
}

TEST(ReturnPathWatcherTest, FindsShutAcrossArbitrarySplits) {
  std::vector<std::uint8_t> bytes = test::PongMessage(5);
  std::vector<std::uint8_t> other = {0, 9, 0, 3, 1, 2, 3};  // unknown type, skipped
  bytes.insert(bytes.end(), other.begin(), other.end());
  auto shut = test::ShutMessage(1);
  bytes.insert(bytes.end(), shut.begin(), shut.end());
  for (std::size_t split = 0; split <= bytes.size(); ++split) {
    migrate_internal::ReturnPathWatcher w;
    bool a = w.Feed(std::span(bytes).first(split));
    bool b = w.Feed(std::span(bytes).subspan(split));
    EXPECT_TRUE(a != b) << split;  // SHUT ends in exactly one of the two pieces
    EXPECT_TRUE(w.shut_seen());
    EXPECT_EQ(w.shut_value(), 1u);
  }
}

TEST(ReturnPathWatcherTest, PongAloneIsNotShut) {
  migrate_internal::ReturnPathWatcher w;
  EXPECT_FALSE(w.Feed(test::PongMessage()));
  EXPECT_FALSE(w.shut_seen());
}

TEST(MigrationReportTest, SummaryNamesTheKeyFigures) {
  MigrationReport r;
  r.stream_bytes = 1 << 30;
  r.wire_bytes_sent = 100 << 20;
  r.page_records = 1000;
  r.pages_by_position = 600;
  r.pages_by_content = 200;
  r.fallbacks = 3;
  std::string s = r.Summary();
  EXPECT_NE(s.find("stream 1.00 GiB"), std::string::npos) << s;
  EXPECT_NE(s.find("elided 800 of 1000 pages (position 600, content 200)"), std::string::npos) << s;
  EXPECT_NE(s.find("fallbacks 3"), std::string::npos) << s;
  EXPECT_EQ(r.bytes_saved_by_position(), 600 * kPageSize);
}

}  // namespace
}  // namespace escdr
