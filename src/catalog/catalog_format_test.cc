#include "escdr/catalog/catalog_format.h"

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "catalog/fake_memory_image.h"

namespace escdr {
namespace {

using ::testing::HasSubstr;

const VmKind kKind{"debian", "12", "qemu", "7.2"};

Catalog MakeCatalog() {
  Result<Catalog> c = Catalog::Create(
      kKind, 3, {{"mem0", 16 * kPageSize}, {"pc.bios", 2 * kPageSize}},
      {PageHash{1, 1}, PageHash{1, 2}, PageHash{0xfedcba9876543210, 3}},
      {{{0, 2}, {5, 0}, {15, 0}}, {{1, 1}}});
  EXPECT_TRUE(c.has_value());
  return std::move(c).value();
}

// ---- byte-patching helpers (little-endian, as the format) ----

std::uint64_t GetLE(const std::string& b, std::size_t off, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[off + static_cast<std::size_t>(i)]);
  return v;
}

void PutLE(std::string* b, std::size_t off, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) (*b)[off + static_cast<std::size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
}

std::string LE(std::uint64_t v, int n) {
  std::string s(static_cast<std::size_t>(n), '\0');
  PutLE(&s, 0, v, n);
  return s;
}

// Recomputes the trailer so that a deliberate edit passes the checksum and
// reaches the check under test.
void FixChecksum(std::string* b) {
  PutLE(b, b->size() - 8, XXH3_64bits(b->data(), b->size() - 8), 8);
}

// Appends a section just before the trailer and fixes count, length, checksum.
std::string WithExtraSection(std::string b, std::uint32_t type, const std::string& body) {
  std::string section = LE(type, 4) + LE(0, 4) + LE(body.size(), 8) + body;
  b.insert(b.size() - 8, section);
  PutLE(&b, 20, GetLE(b, 20, 4) + 1, 4);
  PutLE(&b, 24, b.size(), 8);
  FixChecksum(&b);
  return b;
}

// Offsets in the encoding of MakeCatalog(), derived from the documented layout.
constexpr std::size_t kSummaryBody = kCatalogHeaderSize + kCatalogSectionHeaderSize;
// os(2+6) os_version(2+2) hypervisor(2+4) hypervisor_version(2+3)
constexpr std::size_t kSampleCountOffset = kSummaryBody + 8 + 4 + 6 + 5;
constexpr std::size_t kContentCountOffset = kSampleCountOffset + 4;

TEST(CatalogFormatTest, RoundTripKeepsEverything) {
  const Catalog c = MakeCatalog();
  const std::string bytes = EncodeCatalog(c);
  Result<Catalog> d = DecodeCatalog(bytes);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(d->kind(), c.kind());
  EXPECT_EQ(d->sample_count(), 3u);
  EXPECT_EQ(d->blocks(), c.blocks());
  EXPECT_TRUE(std::equal(d->content().begin(), d->content().end(), c.content().begin(),
                         c.content().end()));
  for (std::size_t b = 0; b < c.blocks().size(); ++b) {
    EXPECT_TRUE(std::equal(d->Positions(b).begin(), d->Positions(b).end(),
                           c.Positions(b).begin(), c.Positions(b).end()));
  }
  EXPECT_EQ(d->FindContent(PageHash{1, 2}), 1u);
  // Deterministic: decoding and encoding again gives the same bytes.
  EXPECT_EQ(EncodeCatalog(*d), bytes);
}

TEST(CatalogFormatTest, EmptyCatalogRoundTrips) {
  Result<Catalog> c = Catalog::Create(kKind, 2, {{"mem0", kPageSize}}, {}, {{}});
  ASSERT_TRUE(c.has_value());
  Result<Catalog> d = DecodeCatalog(EncodeCatalog(*c));
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(d->content_count(), 0u);
  EXPECT_EQ(d->position_count(), 0u);
}

TEST(CatalogFormatTest, LayoutIsAsDocumented) {
  const std::string b = EncodeCatalog(MakeCatalog());
  EXPECT_EQ(b.substr(0, 8), "ESCDRCAT");
  EXPECT_EQ(GetLE(b, 8, 4), 1u);      // format version
  EXPECT_EQ(GetLE(b, 12, 4), 1u);     // XXH3-128
  EXPECT_EQ(GetLE(b, 16, 4), 4096u);  // page size
  EXPECT_EQ(GetLE(b, 20, 4), 3u);     // sections
  EXPECT_EQ(GetLE(b, 24, 8), b.size());
  EXPECT_EQ(GetLE(b, 32, 4), 1u);  // SUMMARY
  EXPECT_EQ(b.substr(kSummaryBody, 8), std::string("\x06\x00" "debian", 8));
  EXPECT_EQ(GetLE(b, kSampleCountOffset, 4), 3u);
  EXPECT_EQ(GetLE(b, kContentCountOffset, 8), 3u);
  EXPECT_EQ(GetLE(b, kContentCountOffset + 8, 8), 4u);  // positions
  EXPECT_EQ(GetLE(b, kContentCountOffset + 16, 4), 2u);  // blocks
  // 3 content hashes, 4 positions of 16 bytes each, and the checksum close the file.
  const std::size_t positions = b.size() - 8 - 4 * 16;
  EXPECT_EQ(GetLE(b, positions - 16, 4), 3u);  // POSITIONS section type
  EXPECT_EQ(GetLE(b, positions, 4), 0u);       // block 0
  EXPECT_EQ(GetLE(b, positions + 4, 4), 2u);   // content index 2
  EXPECT_EQ(GetLE(b, positions + 8, 8), 0u);   // page 0
  const std::size_t content = positions - 16 - 3 * 16;
  EXPECT_EQ(GetLE(b, content - 16, 4), 2u);  // CONTENT section type
  EXPECT_EQ(GetLE(b, content + 32, 8), 0xfedcba9876543210u);  // hi of the third hash
  EXPECT_EQ(GetLE(b, b.size() - 8, 8), XXH3_64bits(b.data(), b.size() - 8));
}

TEST(CatalogFormatTest, HashAlgorithmOneIsXxh3Of4096Bytes) {
  // The format promises algorithm 1 = XXH3-128 with hi = high64; a change in
  // page hashing must change the algorithm id, and this test catches it.
  std::vector<std::uint8_t> page(kPageSize);
  catalog_test::FillPage(12345, page.data());
  const XXH128_hash_t h = XXH3_128bits(page.data(), page.size());
  EXPECT_EQ(HashPage(page.data()), (PageHash{h.high64, h.low64}));
}

TEST(CatalogFormatTest, EveryFlippedByteIsRejected) {
  const std::string good = EncodeCatalog(MakeCatalog());
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    Result<Catalog> d = DecodeCatalog(bad);
    ASSERT_FALSE(d.has_value()) << "flipping byte " << i << " went unnoticed";
  }
}

TEST(CatalogFormatTest, FlippedBodyByteIsAChecksumMismatch) {
  std::string bad = EncodeCatalog(MakeCatalog());
  bad[bad.size() - 20] ^= 1;
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_TRUE(d.error().IsCorruption());
  EXPECT_THAT(d.error().message(), HasSubstr("checksum mismatch"));
}

TEST(CatalogFormatTest, EveryTruncationIsRejected) {
  const std::string good = EncodeCatalog(MakeCatalog());
  for (std::size_t n = 0; n < good.size(); ++n) {
    Result<Catalog> d = DecodeCatalog(std::string_view(good).substr(0, n));
    ASSERT_FALSE(d.has_value()) << "truncation to " << n << " bytes went unnoticed";
    EXPECT_TRUE(d.error().IsCorruption());
    if (n >= kCatalogHeaderSize + kCatalogTrailerSize) {
      EXPECT_THAT(d.error().message(), HasSubstr("truncated: its header says"));
    } else if (n >= kCatalogMagic.size() + 8) {
      EXPECT_THAT(d.error().message(), HasSubstr("truncated"));
    }
  }
}

TEST(CatalogFormatTest, TrailingBytesAreRejected) {
  std::string bad = EncodeCatalog(MakeCatalog()) + "x";
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_THAT(d.error().message(), HasSubstr("1 bytes after its end"));
}

TEST(CatalogFormatTest, WrongMagicIsRejected) {
  std::string bad = EncodeCatalog(MakeCatalog());
  bad.replace(0, 8, "SQLite f");
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_TRUE(d.error().IsCorruption());
  EXPECT_THAT(d.error().message(), HasSubstr("not an escdr catalog"));
}

TEST(CatalogFormatTest, NewerVersionIsRejectedBeforeAnythingElse) {
  // A newer version may checksum differently, so it is reported as such even
  // with a checksum this reader would not accept.
  std::string bad = EncodeCatalog(MakeCatalog());
  PutLE(&bad, 8, 2, 4);
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kVersionMismatch);
  EXPECT_THAT(d.error().message(), HasSubstr("format version 2 is newer"));
  FixChecksum(&bad);
  EXPECT_EQ(DecodeCatalog(bad).error().code(), StatusCode::kVersionMismatch);
  EXPECT_EQ(DecodeCatalogSummary(bad).error().code(), StatusCode::kVersionMismatch);
}

TEST(CatalogFormatTest, OtherHashAlgorithmIsRejected) {
  std::string bad = EncodeCatalog(MakeCatalog());
  PutLE(&bad, 12, 2, 4);
  FixChecksum(&bad);
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kNotSupported);
  EXPECT_THAT(d.error().message(), HasSubstr("hash algorithm 2"));
}

TEST(CatalogFormatTest, OtherPageSizeIsRejected) {
  std::string bad = EncodeCatalog(MakeCatalog());
  PutLE(&bad, 16, 65536, 4);
  FixChecksum(&bad);
  EXPECT_THAT(DecodeCatalog(bad).error().message(), HasSubstr("65536-byte pages"));
}

TEST(CatalogFormatTest, UnknownOptionalSectionIsSkipped) {
  const std::string good = EncodeCatalog(MakeCatalog());
  const std::string extended = WithExtraSection(good, 0x80000007u, "a later field");
  Result<Catalog> d = DecodeCatalog(extended);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(EncodeCatalog(*d), good);
}

TEST(CatalogFormatTest, UnknownMandatorySectionIsRejected) {
  const std::string bad = WithExtraSection(EncodeCatalog(MakeCatalog()), 9, "must understand");
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kNotSupported);
  EXPECT_THAT(d.error().message(), HasSubstr("mandatory section type 9"));
}

TEST(CatalogFormatTest, HugeCountIsRejectedBeforeAllocating) {
  std::string bad = EncodeCatalog(MakeCatalog());
  PutLE(&bad, kContentCountOffset, 1ull << 60, 8);
  FixChecksum(&bad);
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_TRUE(d.error().IsCorruption());
  EXPECT_THAT(d.error().message(), HasSubstr("CONTENT section has 48 bytes"));
}

TEST(CatalogFormatTest, HugeSectionLengthIsRejected) {
  std::string bad = EncodeCatalog(MakeCatalog());
  PutLE(&bad, kCatalogHeaderSize + 8, 1ull << 62, 8);  // SUMMARY length
  FixChecksum(&bad);
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_THAT(d.error().message(), HasSubstr("claims 4611686018427387904 bytes"));
}

TEST(CatalogFormatTest, InconsistentContentIsCorruption) {
  std::string bad = EncodeCatalog(MakeCatalog());
  // Swap the second hash's lo word (2) for 0: hashes no longer ascend.
  const std::size_t content = bad.size() - 8 - 4 * 16 - kCatalogSectionHeaderSize - 3 * 16;
  PutLE(&bad, content + 16 + 8, 0, 8);
  FixChecksum(&bad);
  Result<Catalog> d = DecodeCatalog(bad);
  ASSERT_FALSE(d.has_value());
  EXPECT_TRUE(d.error().IsCorruption());
  EXPECT_THAT(d.error().message(), HasSubstr("inconsistent"));
  EXPECT_THAT(d.error().message(), HasSubstr("not strictly ascending"));
}

TEST(CatalogFormatTest, SummaryDecodesWithoutTheArrays) {
  Result<CatalogSummary> s = DecodeCatalogSummary(EncodeCatalog(MakeCatalog()));
  ASSERT_TRUE(s.has_value()) << s.error().message();
  EXPECT_EQ(s->kind, kKind);
  EXPECT_EQ(s->sample_count, 3u);
  EXPECT_EQ(s->content_count, 3u);
  EXPECT_EQ(s->position_count, 4u);
  ASSERT_EQ(s->blocks.size(), 2u);
  EXPECT_EQ(s->blocks[1], (RamBlockInfo{"pc.bios", 2 * kPageSize}));
}

class CatalogFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/escdr-catalog-format-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

TEST_F(CatalogFileTest, WriteThenReadGivesTheSameBytesAndNoTemporaries) {
  const std::string path = dir_ + "/a.catalog";
  const std::string bytes = EncodeCatalog(MakeCatalog());
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  Result<std::string> read = ReadCatalogBytes(path);
  ASSERT_TRUE(read.has_value()) << read.error().message();
  EXPECT_EQ(*read, bytes);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST_F(CatalogFileTest, MissingFileIsNotFound) {
  Result<std::string> read = ReadCatalogBytes(dir_ + "/none.catalog");
  ASSERT_FALSE(read.has_value());
  EXPECT_TRUE(read.error().IsNotFound());
  EXPECT_THAT(read.error().message(), HasSubstr("none.catalog does not exist"));
}

TEST_F(CatalogFileTest, DirectoryIsNotACatalogFile) {
  Result<std::string> read = ReadCatalogBytes(dir_);
  ASSERT_FALSE(read.has_value());
  EXPECT_THAT(read.error().message(), HasSubstr("not a regular file"));
}

TEST_F(CatalogFileTest, WriteIntoMissingDirectoryFails) {
  Status s = WriteFileAtomically(dir_ + "/no/such/dir/a.catalog", "x");
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_THAT(s.message(), HasSubstr("cannot create"));
}

}  // namespace
}  // namespace escdr
