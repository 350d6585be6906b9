#include "agent/catalog_content.h"

#include <gtest/gtest.h>

#include "escdr/catalog/catalog_format.h"
#include "escdr/page/page.h"

namespace escdr::agent {
namespace {

PageHash HashOf(std::uint8_t fill) {
  std::vector<std::uint8_t> page(kPageSize, fill);
  return HashPage(page.data());
}

std::string Encoded(std::uint8_t salt) {
  std::vector<PageHash> content = {HashOf(1), HashOf(2), HashOf(salt)};
  std::sort(content.begin(), content.end());
  const std::uint32_t at = static_cast<std::uint32_t>(
      std::find(content.begin(), content.end(), HashOf(2)) - content.begin());
  auto c = Catalog::Create({"debian", "12", "qemu", "7.2"}, 2, {{"mem0", 16 * kPageSize}},
                           content, {{{3, at}}});
  EXPECT_TRUE(c.has_value()) << c.error().ToString();
  return EncodeCatalog(*c);
}

TEST(CatalogContentTest, AnswersAsTheCatalog) {
  const std::string bytes = Encoded(9);
  auto content = CatalogContent::FromBytes(bytes);
  ASSERT_TRUE(content.has_value()) << content.error().ToString();
  const CatalogContent& c = **content;
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.kind().os, "debian");
  const std::uint32_t two = c.Find(HashOf(2));
  ASSERT_NE(two, kNoContent);
  EXPECT_EQ(c.hash(two), HashOf(2));
  EXPECT_EQ(c.Find(HashOf(77)), kNoContent);
  const int block = c.FindBlock("mem0");
  ASSERT_GE(block, 0);
  EXPECT_EQ(c.ContentAt(block, 3), two);
  EXPECT_EQ(c.ContentAt(block, 4), kNoContent);
  EXPECT_EQ(c.FindBlock("pc.bios"), -1);
}

TEST(CatalogContentTest, ChecksumIsTheEncodingTrailerAndNamesTheVersion) {
  const std::string a = Encoded(9);
  const std::string b = Encoded(10);
  EXPECT_EQ(CatalogContent::FromBytes(a).value()->checksum(), CatalogChecksum(a));
  EXPECT_NE(CatalogChecksum(a), CatalogChecksum(b));
  // The same catalog encodes to the same bytes, hence the same identity.
  EXPECT_EQ(CatalogChecksum(a), CatalogChecksum(Encoded(9)));
}

TEST(CatalogContentTest, CorruptEncodingIsRefused) {
  std::string bytes = Encoded(9);
  bytes[bytes.size() / 2] ^= 0x10;
  auto content = CatalogContent::FromBytes(bytes);
  ASSERT_FALSE(content.has_value());
  EXPECT_EQ(content.error().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace escdr::agent
