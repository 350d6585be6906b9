#include "escdr/catalog/catalog_match.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "catalog/fake_memory_image.h"
#include "escdr/catalog/catalog_learner.h"

namespace escdr {
namespace {

using catalog_test::FakeMemoryImage;
using ::testing::HasSubstr;

const VmKind kKind{"debian", "12", "qemu", "7.2"};

// A catalog over one block "mem0" of 8 pages, learned from two samples:
//   page:      0   1   2   3   4   5   6   7
//   sample a:  0  10  11  12  13   0  20  30
//   sample b:  0  10  11  13  12   0  21  31
// content = {10, 11, 12, 13}; positions = {1: 10, 2: 11}.
Catalog MakeCatalog() {
  FakeMemoryImage a = FakeMemoryImage::Single("a", 8);
  FakeMemoryImage b = FakeMemoryImage::Single("b", 8);
  a.SetPages({0, 10, 11, 12, 13, 0, 20, 30});
  b.SetPages({0, 10, 11, 13, 12, 0, 21, 31});
  std::vector<const MemoryImage*> samples = {&a, &b};
  Result<Catalog> c = LearnCatalog(kKind, samples);
  EXPECT_TRUE(c.has_value());
  return std::move(c).value();
}

TEST(CatalogMatchTest, ClassifiesEveryPage) {
  const Catalog catalog = MakeCatalog();
  FakeMemoryImage image = FakeMemoryImage::Single("vm4", 8);
  // 0: zero; 1: by position; 2: content 10 where the catalog has 11 -> content
  // only; 3: 12 (content, no position entry) -> content only; 4: private;
  // 5: zero; 6: 11 -> content only; 7: private.
  image.SetPages({0, 10, 10, 12, 99, 0, 11, 98});
  Result<MatchReport> r = MatchImage(catalog, image);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  const PageCounts want{8, 2, 1, 3, 2};
  EXPECT_EQ(r->total, want);
  ASSERT_EQ(r->blocks.size(), 1u);
  EXPECT_EQ(r->blocks[0].name, "mem0");
  EXPECT_TRUE(r->blocks[0].in_catalog);
  EXPECT_EQ(r->blocks[0].pages, want);
  EXPECT_EQ(r->total.SavedBytes(), 4 * kPageSize);
  EXPECT_DOUBLE_EQ(r->total.SavedPercent(), 50.0);
  EXPECT_DOUBLE_EQ(r->total.SavedPercentOfNonZero(), 100.0 * 4 / 6);
}

TEST(CatalogMatchTest, LearnedSampleMatchesItsOwnPositions) {
  const Catalog catalog = MakeCatalog();
  FakeMemoryImage a = FakeMemoryImage::Single("a", 8);
  a.SetPages({0, 10, 11, 12, 13, 0, 20, 30});
  Result<MatchReport> r = MatchImage(catalog, a);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->total, (PageCounts{8, 2, 2, 2, 2}));
}

TEST(CatalogMatchTest, ZeroPagesComeFirstEvenWhereTheCatalogHasAPosition) {
  const Catalog catalog = MakeCatalog();
  FakeMemoryImage image = FakeMemoryImage::Single("vm", 8);  // all zero
  Result<MatchReport> r = MatchImage(catalog, image);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->total, (PageCounts{8, 8, 0, 0, 0}));
  EXPECT_EQ(r->total.SavedBytes(), 0u);
  EXPECT_DOUBLE_EQ(r->total.SavedPercentOfNonZero(), 0.0);
}

TEST(CatalogMatchTest, ExtraBlocksMatchByContentOnly) {
  const Catalog catalog = MakeCatalog();
  // The stream image carries vga.vram before mem0; the same page index there
  // never counts as a position.
  FakeMemoryImage image("stream",
                        {{"vga.vram", 4 * kPageSize}, {"mem0", 8 * kPageSize}});
  image.SetPage(0, 1, 10);
  image.SetPage(0, 2, 77);
  image.SetPage(1, 1, 10);
  Result<MatchReport> r = MatchImage(catalog, image);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->blocks.size(), 2u);
  EXPECT_EQ(r->blocks[0].name, "vga.vram");
  EXPECT_FALSE(r->blocks[0].in_catalog);
  EXPECT_EQ(r->blocks[0].pages, (PageCounts{4, 2, 0, 1, 1}));
  EXPECT_EQ(r->blocks[1].pages, (PageCounts{8, 7, 1, 0, 0}));
  EXPECT_EQ(r->total, (PageCounts{12, 9, 1, 1, 1}));
}

TEST(CatalogMatchTest, MissingCatalogBlockIsAnError) {
  const Catalog catalog = MakeCatalog();
  FakeMemoryImage image("other.ram", {{"pc.ram", 8 * kPageSize}});
  Result<MatchReport> r = MatchImage(catalog, image);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().IsInvalidArgument());
  EXPECT_THAT(r.error().message(), HasSubstr("other.ram has no RAM block \"mem0\""));
}

TEST(CatalogMatchTest, DifferentBlockLengthIsAnError) {
  const Catalog catalog = MakeCatalog();
  FakeMemoryImage image = FakeMemoryImage::Single("big.ram", 16);
  Result<MatchReport> r = MatchImage(catalog, image);
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(r.error().message(), HasSubstr("\"mem0\" is 65536 bytes"));
  EXPECT_THAT(r.error().message(), HasSubstr("expects 32768 bytes"));
}

}  // namespace
}  // namespace escdr
