#include "escdr/catalog/catalog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace escdr {
namespace {

using ::testing::HasSubstr;

const VmKind kKind{"debian", "12", "qemu", "7.2"};
const PageHash kA{1, 1}, kB{1, 2}, kC{7, 0};

struct Parts {
  VmKind kind = kKind;
  std::uint32_t samples = 3;
  std::vector<RamBlockInfo> blocks = {{"mem0", 16 * kPageSize}, {"pc.bios", 2 * kPageSize}};
  std::vector<PageHash> content = {kA, kB, kC};
  std::vector<std::vector<CatalogPosition>> positions = {{{0, 2}, {5, 0}, {15, 0}}, {{1, 1}}};

  Result<Catalog> Create() {
    return Catalog::Create(kind, samples, blocks, content, positions);
  }
};

std::string ErrorOf(Parts p) {
  Result<Catalog> c = p.Create();
  if (c.has_value()) return "OK";
  EXPECT_TRUE(c.error().IsInvalidArgument());
  return c.error().message();
}

TEST(CatalogTest, LookupsByContentAndPosition) {
  Result<Catalog> c = Parts{}.Create();
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->content_count(), 3u);
  EXPECT_EQ(c->position_count(), 4u);
  EXPECT_EQ(c->FindContent(kB), 1u);
  EXPECT_EQ(c->FindContent(PageHash{2, 2}), PageHashIndex::kAbsent);
  EXPECT_TRUE(c->IsContent(kC));
  EXPECT_FALSE(c->IsContent(PageHash{}));
  EXPECT_EQ(c->ContentAt(0, 5), 0u);
  EXPECT_EQ(c->ContentAt(0, 4), std::nullopt);
  EXPECT_EQ(c->ContentAt(1, 1), 1u);
  EXPECT_EQ(c->ContentAt(2, 1), std::nullopt);
  EXPECT_EQ(c->HashAt("mem0", 0), kC);
  EXPECT_EQ(c->HashAt("mem0", 15 * kPageSize + 4095), kA);
  EXPECT_EQ(c->HashAt("pc.bios", kPageSize), kB);
  EXPECT_EQ(c->HashAt("vga.vram", 0), std::nullopt);
  EXPECT_EQ(c->FindBlock("pc.bios"), 1);
  EXPECT_EQ(c->FindBlock("nope"), -1);
  CatalogSummary s = c->Summary();
  EXPECT_EQ(s.kind, kKind);
  EXPECT_EQ(s.sample_count, 3u);
  EXPECT_EQ(s.content_count, 3u);
  EXPECT_EQ(s.position_count, 4u);
  EXPECT_GT(c->memory_bytes(), 0u);
}

TEST(CatalogTest, EmptyCatalogIsValid) {
  Parts p;
  p.content.clear();
  p.positions = {{}, {}};
  Result<Catalog> c = p.Create();
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_FALSE(c->IsContent(kA));
  EXPECT_EQ(c->ContentAt(0, 0), std::nullopt);
}

TEST(CatalogTest, InvariantsAreChecked) {
  Parts p;
  p.samples = 1;
  EXPECT_THAT(ErrorOf(p), HasSubstr("1 samples"));

  p = Parts{};
  p.kind.hypervisor.clear();
  EXPECT_THAT(ErrorOf(p), HasSubstr("hypervisor is empty"));

  p = Parts{};
  p.content = {kA, kC, kB};
  EXPECT_THAT(ErrorOf(p), HasSubstr("not strictly ascending at index 2"));

  p = Parts{};
  p.content = {kA, kA, kC};
  EXPECT_THAT(ErrorOf(p), HasSubstr("not strictly ascending at index 1"));

  p = Parts{};
  p.positions[0] = {{16, 0}};
  EXPECT_THAT(ErrorOf(p), HasSubstr("page 16 is outside the block"));

  p = Parts{};
  p.positions[0] = {{3, 0}, {3, 1}};
  EXPECT_THAT(ErrorOf(p), HasSubstr("not strictly ascending at page 3"));

  p = Parts{};
  p.positions[1] = {{0, 3}};
  EXPECT_THAT(ErrorOf(p), HasSubstr("content index 3 of 3"));

  p = Parts{};
  p.positions.pop_back();
  EXPECT_THAT(ErrorOf(p), HasSubstr("position lists for 1 blocks but 2 blocks"));

  p = Parts{};
  p.blocks[1].name = "mem0";
  EXPECT_THAT(ErrorOf(p), HasSubstr("\"mem0\" twice"));

  p = Parts{};
  p.blocks[1].length = kPageSize + 1;
  EXPECT_THAT(ErrorOf(p), HasSubstr("non-zero multiple of 4096"));

  p = Parts{};
  p.blocks[1].name = "";
  EXPECT_THAT(ErrorOf(p), HasSubstr("name of 0 bytes"));

  p = Parts{};
  p.blocks.clear();
  p.positions.clear();
  EXPECT_THAT(ErrorOf(p), HasSubstr("no RAM blocks"));
}

}  // namespace
}  // namespace escdr
