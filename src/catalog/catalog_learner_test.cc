#include "escdr/catalog/catalog_learner.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "catalog/fake_memory_image.h"
#include "escdr/catalog/catalog_format.h"

namespace escdr {
namespace {

using catalog_test::FakeMemoryImage;
using catalog_test::HashOfId;
using ::testing::HasSubstr;

const VmKind kKind{"debian", "12", "qemu", "7.2"};

Result<Catalog> Learn(const std::vector<FakeMemoryImage>& samples) {
  std::vector<const MemoryImage*> ptrs;
  for (const auto& s : samples) ptrs.push_back(&s);
  return LearnCatalog(kKind, ptrs);
}

// Samples of one block, given as content ids per page (0 = zero page).
std::vector<FakeMemoryImage> Samples(const std::vector<std::vector<std::uint64_t>>& pages) {
  std::vector<FakeMemoryImage> out;
  for (std::size_t s = 0; s < pages.size(); ++s) {
    out.push_back(FakeMemoryImage::Single("s" + std::to_string(s), pages[s].size()));
    out.back().SetPages(pages[s]);
  }
  return out;
}

std::set<PageHash> ContentSet(const Catalog& c) {
  return std::set<PageHash>(c.content().begin(), c.content().end());
}

// (block, page) -> hash, from the catalog's position entries.
std::map<std::pair<std::size_t, std::uint64_t>, PageHash> PositionMap(const Catalog& c) {
  std::map<std::pair<std::size_t, std::uint64_t>, PageHash> out;
  for (std::size_t b = 0; b < c.blocks().size(); ++b) {
    for (const CatalogPosition& p : c.Positions(b)) {
      out[{b, p.page_index}] = c.ContentHash(p.content_index);
    }
  }
  return out;
}

TEST(CatalogLearnerTest, SameContentAtSamePositionIsStaticByPosition) {
  auto samples = Samples({{0, 11, 12, 13}, {0, 11, 22, 13}, {0, 11, 32, 13}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->sample_count(), 3u);
  EXPECT_EQ(ContentSet(*c), (std::set<PageHash>{HashOfId(11), HashOfId(13)}));
  auto positions = PositionMap(*c);
  ASSERT_EQ(positions.size(), 2u);
  EXPECT_EQ(positions.at({0, 1}), HashOfId(11));
  EXPECT_EQ(positions.at({0, 3}), HashOfId(13));
  EXPECT_EQ(c->HashAt("mem0", 3 * kPageSize + 17), HashOfId(13));
  EXPECT_EQ(c->HashAt("mem0", 2 * kPageSize), std::nullopt);
}

TEST(CatalogLearnerTest, MovedContentIsStaticByContentButNotByPosition) {
  // Content 7 sits at a different page in each sample (as KASLR does).
  auto samples = Samples({{7, 1, 0, 0}, {2, 0, 7, 0}, {3, 0, 0, 7}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(ContentSet(*c), std::set<PageHash>{HashOfId(7)});
  EXPECT_EQ(c->position_count(), 0u);
  EXPECT_TRUE(c->IsContent(HashOfId(7)));
  EXPECT_FALSE(c->IsContent(HashOfId(1)));
}

TEST(CatalogLearnerTest, PositionNeedsEverySampleNotJustMost) {
  // Page 0 holds 5 in two samples and 6 in the third; 5 also appears at page 3
  // of the third sample, so 5 is content but nothing is static at page 0.
  auto samples = Samples({{5, 9, 0, 0}, {5, 9, 0, 0}, {6, 9, 0, 5}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(ContentSet(*c), (std::set<PageHash>{HashOfId(5), HashOfId(9)}));
  auto positions = PositionMap(*c);
  EXPECT_EQ(positions.count({0, 0}), 0u);
  EXPECT_EQ(positions.at({0, 1}), HashOfId(9));
  EXPECT_EQ(positions.size(), 1u);
}

TEST(CatalogLearnerTest, ContentMissingFromOneSampleIsNotCatalog) {
  // 4 appears three times in total (as often as there are samples), but
  // never in the middle sample.
  auto samples = Samples({{4, 0, 8}, {0, 1, 8}, {4, 4, 8}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(ContentSet(*c), std::set<PageHash>{HashOfId(8)});
}

TEST(CatalogLearnerTest, ContentMissingFromTheFirstSampleIsNotCatalog) {
  auto samples = Samples({{1, 0}, {3, 3}, {3, 3}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->content_count(), 0u);
  EXPECT_EQ(c->position_count(), 0u);
}

TEST(CatalogLearnerTest, ZeroPagesAreNeverCatalogContent) {
  auto samples = Samples({{0, 0, 3}, {0, 3, 0}, {0, 0, 3}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_FALSE(c->IsContent(HashOfId(0)));
  EXPECT_EQ(ContentSet(*c), std::set<PageHash>{HashOfId(3)});
  // Page 2 is 3 in two samples but zero in one: not static by position.
  EXPECT_EQ(c->position_count(), 0u);
}

TEST(CatalogLearnerTest, PositionsAreKeptPerBlock) {
  // The same content at the same page index but in different blocks is not
  // static by position.
  std::vector<RamBlockInfo> blocks = {{"mem0", 4 * kPageSize}, {"pc.rom", 2 * kPageSize}};
  std::vector<FakeMemoryImage> samples;
  for (int s = 0; s < 2; ++s) samples.emplace_back("s" + std::to_string(s), blocks);
  samples[0].SetPage(0, 1, 50);
  samples[1].SetPage(1, 1, 50);
  samples[0].SetPage(1, 0, 60);
  samples[1].SetPage(1, 0, 60);
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(ContentSet(*c), (std::set<PageHash>{HashOfId(50), HashOfId(60)}));
  auto positions = PositionMap(*c);
  ASSERT_EQ(positions.size(), 1u);
  EXPECT_EQ(positions.at({1, 0}), HashOfId(60));
  EXPECT_EQ(c->blocks(), blocks);
}

TEST(CatalogLearnerTest, ContentIndicesFollowSortedHashOrder) {
  auto samples = Samples({{1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1}});
  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  ASSERT_EQ(c->content_count(), 6u);
  EXPECT_TRUE(std::is_sorted(c->content().begin(), c->content().end()));
  for (std::uint32_t i = 0; i < c->content_count(); ++i) {
    EXPECT_EQ(c->FindContent(c->ContentHash(i)), i);
  }
}

TEST(CatalogLearnerTest, FewerThanTwoSamplesIsAnError) {
  auto samples = Samples({{1, 2}});
  Result<Catalog> one = Learn(samples);
  ASSERT_FALSE(one.has_value());
  EXPECT_TRUE(one.error().IsInvalidArgument());
  EXPECT_THAT(one.error().message(), HasSubstr("at least 2 samples, got 1"));

  CatalogLearner learner(kKind);
  ASSERT_TRUE(learner.AddSample(samples[0]).ok());
  Result<Catalog> incremental = std::move(learner).Finish();
  ASSERT_FALSE(incremental.has_value());
  EXPECT_THAT(incremental.error().message(), HasSubstr("at least 2 samples, got 1"));

  EXPECT_FALSE(CatalogLearner(kKind).Finish().has_value());
}

TEST(CatalogLearnerTest, DifferentBlockNameIsRejectedNamingIt) {
  FakeMemoryImage a("a.ram", {{"mem0", 4 * kPageSize}});
  FakeMemoryImage b("b.ram", {{"pc.ram", 4 * kPageSize}});
  std::vector<const MemoryImage*> samples = {&a, &b};
  Result<Catalog> c = LearnCatalog(kKind, samples);
  ASSERT_FALSE(c.has_value());
  EXPECT_TRUE(c.error().IsInvalidArgument());
  EXPECT_THAT(c.error().message(), HasSubstr("a.ram"));
  EXPECT_THAT(c.error().message(), HasSubstr("b.ram"));
  EXPECT_THAT(c.error().message(), HasSubstr("\"mem0\""));
  EXPECT_THAT(c.error().message(), HasSubstr("\"pc.ram\""));
}

TEST(CatalogLearnerTest, DifferentBlockLengthIsRejectedNamingBothLengths) {
  FakeMemoryImage a("a.ram", {{"mem0", 4 * kPageSize}});
  FakeMemoryImage b("b.ram", {{"mem0", 8 * kPageSize}});
  std::vector<const MemoryImage*> samples = {&a, &b};
  Result<Catalog> c = LearnCatalog(kKind, samples);
  ASSERT_FALSE(c.has_value());
  EXPECT_THAT(c.error().message(), HasSubstr("16384"));
  EXPECT_THAT(c.error().message(), HasSubstr("32768"));
}

TEST(CatalogLearnerTest, ExtraBlockInALaterSampleIsRejected) {
  FakeMemoryImage a("a.ram", {{"mem0", 4 * kPageSize}});
  FakeMemoryImage b("b.ram", {{"mem0", 4 * kPageSize}, {"vga.vram", kPageSize}});
  CatalogLearner learner(kKind);
  ASSERT_TRUE(learner.AddSample(a).ok());
  Status s = learner.AddSample(b);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_THAT(s.message(), HasSubstr("\"vga.vram\" is only in b.ram"));
  // A rejected sample leaves the learner as it was.
  EXPECT_EQ(learner.sample_count(), 1u);
  ASSERT_TRUE(learner.AddSample(a).ok());
  EXPECT_TRUE(std::move(learner).Finish().has_value());
}

TEST(CatalogLearnerTest, MissingBlockInALaterSampleIsRejected) {
  FakeMemoryImage a("a.ram", {{"mem0", 4 * kPageSize}, {"pc.bios", kPageSize}});
  FakeMemoryImage b("b.ram", {{"mem0", 4 * kPageSize}});
  std::vector<const MemoryImage*> samples = {&a, &b};
  Result<Catalog> c = LearnCatalog(kKind, samples);
  ASSERT_FALSE(c.has_value());
  EXPECT_THAT(c.error().message(), HasSubstr("\"pc.bios\" is only in a.ram"));
}

TEST(CatalogLearnerTest, UnusableFirstSampleIsRejected) {
  FakeMemoryImage odd("odd.ram", {{"mem0", kPageSize + 100}});
  FakeMemoryImage ok("ok.ram", {{"mem0", kPageSize + 100}});
  std::vector<const MemoryImage*> samples = {&odd, &ok};
  Result<Catalog> c = LearnCatalog(kKind, samples);
  ASSERT_FALSE(c.has_value());
  EXPECT_THAT(c.error().message(), HasSubstr("odd.ram"));
  EXPECT_THAT(c.error().message(), HasSubstr("multiple of 4096"));
}

TEST(CatalogLearnerTest, InvalidKindIsRejected) {
  auto samples = Samples({{1}, {1}});
  std::vector<const MemoryImage*> ptrs = {&samples[0], &samples[1]};
  Result<Catalog> c = LearnCatalog(VmKind{"", "12", "qemu", "7.2"}, ptrs);
  ASSERT_FALSE(c.has_value());
  EXPECT_THAT(c.error().message(), HasSubstr("OS is empty"));
}

TEST(CatalogLearnerTest, SampleOrderDoesNotChangeTheCatalog) {
  auto samples = Samples({{1, 2, 3, 4, 0, 9}, {1, 3, 2, 4, 9, 0}, {1, 2, 2, 4, 4, 9}});
  Result<Catalog> forward = Learn(samples);
  std::vector<FakeMemoryImage> reversed;
  for (int s = 2; s >= 0; --s) reversed.push_back(std::move(samples[static_cast<std::size_t>(s)]));
  Result<Catalog> backward = Learn(reversed);
  ASSERT_TRUE(forward.has_value() && backward.has_value());
  EXPECT_EQ(EncodeCatalog(*forward), EncodeCatalog(*backward));
}

// The learner against a direct reading of the definition, on samples with
// shared, moved, duplicated, private and zero pages in two blocks.
TEST(CatalogLearnerTest, AgreesWithTheDefinitionOnMixedSamples) {
  std::mt19937_64 rng(20240611);  // fixed: the test is deterministic
  const std::vector<RamBlockInfo> blocks = {{"mem0", 512 * kPageSize}, {"pc.rom", 32 * kPageSize}};
  constexpr int kSamples = 4;
  // Ids per sample, per block, per page.
  std::vector<std::vector<std::vector<std::uint64_t>>> ids(kSamples);
  for (auto& per_block : ids) {
    per_block.resize(blocks.size());
    for (std::size_t b = 0; b < blocks.size(); ++b) per_block[b].resize(blocks[b].length / kPageSize);
  }
  std::uint64_t private_id = 1'000'000;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    for (std::size_t i = 0; i < ids[0][b].size(); ++i) {
      const std::uint64_t shared = 1 + rng() % 300;  // small pool: duplicates
      const int kind_of_page = static_cast<int>(rng() % 6);
      for (int s = 0; s < kSamples; ++s) {
        std::uint64_t id = shared;
        if (kind_of_page == 1) id = 0;                                   // zero everywhere
        if (kind_of_page == 2) id = private_id++;                        // private
        if (kind_of_page == 3 && s == kSamples - 1) id = private_id++;   // differs in one
        if (kind_of_page == 4) id = 1 + rng() % 300;                     // shuffled
        if (kind_of_page == 5 && s == 1) id = 0;                         // zero in one
        ids[static_cast<std::size_t>(s)][b][i] = id;
      }
    }
  }
  std::vector<FakeMemoryImage> samples;
  for (int s = 0; s < kSamples; ++s) {
    samples.emplace_back("s" + std::to_string(s), blocks);
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      for (std::size_t i = 0; i < ids[0][b].size(); ++i) {
        samples.back().SetPage(b, i, ids[static_cast<std::size_t>(s)][b][i]);
      }
    }
  }

  // Expected content: non-zero ids present in every sample.
  std::set<std::uint64_t> common;
  for (int s = 0; s < kSamples; ++s) {
    std::set<std::uint64_t> here;
    for (const auto& block_ids : ids[static_cast<std::size_t>(s)]) {
      for (std::uint64_t id : block_ids) {
        if (id != 0) here.insert(id);
      }
    }
    if (s == 0) {
      common = here;
    } else {
      std::set<std::uint64_t> both;
      std::set_intersection(common.begin(), common.end(), here.begin(), here.end(),
                            std::inserter(both, both.begin()));
      common = both;
    }
  }
  std::set<PageHash> want_content;
  for (std::uint64_t id : common) want_content.insert(HashOfId(id));
  // Expected positions: the same non-zero id at (b, i) in every sample.
  std::map<std::pair<std::size_t, std::uint64_t>, PageHash> want_positions;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    for (std::size_t i = 0; i < ids[0][b].size(); ++i) {
      bool same = ids[0][b][i] != 0;
      for (int s = 1; s < kSamples && same; ++s) same = ids[static_cast<std::size_t>(s)][b][i] == ids[0][b][i];
      if (same) want_positions[{b, i}] = HashOfId(ids[0][b][i]);
    }
  }
  ASSERT_GT(want_positions.size(), 50u);
  ASSERT_GT(want_content.size(), 50u);

  Result<Catalog> c = Learn(samples);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(ContentSet(*c), want_content);
  EXPECT_EQ(PositionMap(*c), want_positions);
  EXPECT_EQ(c->position_count(), want_positions.size());
}

}  // namespace
}  // namespace escdr
