#include "escdr/image/memory_image.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <random>

#include "escdr/page/page.h"
#include "escdr/sys/temp_dir.h"
#include "qemu/stream_builder.h"

namespace escdr {
namespace {

using test::StreamBuilder;
using ::testing::HasSubstr;
using Bytes = std::vector<std::uint8_t>;

Bytes PatternPage(std::uint32_t seed) {
  Bytes p(kPageSize);
  std::mt19937 rng(seed);
  for (auto& b : p) b = static_cast<std::uint8_t>(rng());
  return p;
}

class ImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("escdr-image-test");
    ASSERT_TRUE(d.has_value()) << d.error().ToString();
    dir_ = std::move(*d);
  }

  std::string Write(const std::string& name, const Bytes& content) {
    std::string p = dir_.File(name);
    std::FILE* f = std::fopen(p.c_str(), "wb");
    EXPECT_NE(f, nullptr) << p;
    if (f != nullptr) {
      // fwrite's buffer must not be null, which an empty vector's data() is.
      if (!content.empty()) {
        EXPECT_EQ(std::fwrite(content.data(), 1, content.size(), f), content.size());
      }
      std::fclose(f);
    }
    return p;
  }

  const std::uint8_t* Page(const MemoryImage& image, const std::string& block,
                           std::uint64_t offset) {
    int i = image.FindBlock(block);
    EXPECT_GE(i, 0) << block;
    return image.BlockData(static_cast<std::size_t>(i)) + offset;
  }

  TempDir dir_;
};

// ---- RAM files --------------------------------------------------------------

TEST_F(ImageTest, RamFileIsOneBlockWithTheFileContent) {
  Bytes content;
  for (std::uint32_t i = 0; i < 4; ++i) {
    Bytes p = PatternPage(i);
    content.insert(content.end(), p.begin(), p.end());
  }
  std::string path = Write("ram", content);
  auto image = OpenRamFile(path);
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  const MemoryImage& m = **image;
  ASSERT_EQ(m.blocks().size(), 1u);
  EXPECT_EQ(m.blocks()[0], (RamBlockInfo{"mem0", 4 * kPageSize}));
  EXPECT_EQ(m.TotalBytes(), 4 * kPageSize);
  EXPECT_EQ(m.source(), path);
  EXPECT_EQ(std::memcmp(m.BlockData(0), content.data(), content.size()), 0);
  EXPECT_EQ(m.FindBlock("mem0"), 0);
  EXPECT_EQ(m.FindBlock("pc.ram"), -1);

  auto named = OpenRamFile(path, "pc.ram");
  ASSERT_TRUE(named.has_value());
  EXPECT_EQ((*named)->blocks()[0].name, "pc.ram");
}

TEST_F(ImageTest, RamFileShowsWritesMadeAfterItWasOpened) {
  std::string path = Write("ram", Bytes(2 * kPageSize, 0));
  auto image = OpenRamFile(path);
  ASSERT_TRUE(image.has_value());
  // What a running guest does to its share=on backend.
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const char msg[] = "written later";
  ASSERT_EQ(::pwrite(fd, msg, sizeof msg, kPageSize + 10), static_cast<ssize_t>(sizeof msg));
  ::close(fd);
  EXPECT_STREQ(reinterpret_cast<const char*>((*image)->BlockData(0) + kPageSize + 10), msg);
}

TEST_F(ImageTest, RamFileOfSizeNotAMultipleOfThePageSizeIsRejected) {
  std::string path = Write("ram", Bytes(kPageSize + 1, 1));
  auto image = OpenRamFile(path);
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image.error().message(),
            "RAM file " + path + " has size 4097, not a positive multiple of 4096");
}

TEST_F(ImageTest, EmptyRamFileIsRejected) {
  std::string path = Write("ram", {});
  auto image = OpenRamFile(path);
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(image.error().message(), HasSubstr("has size 0"));
}

TEST_F(ImageTest, MissingRamFileIsNotFound) {
  auto image = OpenRamFile(dir_.File("nosuch"));
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(image.error().message(),
            "cannot open RAM file " + dir_.File("nosuch") + ": No such file or directory");
}

TEST_F(ImageTest, DirectoryIsNotARamFile) {
  auto image = OpenRamFile(dir_.path());
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(image.error().message(), HasSubstr("is not a regular file"));
}

// ---- Saved migration streams ------------------------------------------------

const std::vector<RamBlockInfo> kBlocks = {
    {"mem0", 16 * kPageSize},
    {"pc.bios", 4 * kPageSize},
};

TEST_F(ImageTest, StreamImageRebuildsEveryBlockAndLaterRecordsWin) {
  StreamBuilder b;
  b.Prologue(3, kBlocks).Part(3);
  b.Page("mem0", 0, PatternPage(1).data());
  b.Page("mem0", kPageSize, PatternPage(2).data());
  b.Page("mem0", 2 * kPageSize, PatternPage(3).data());
  b.Zero("mem0", 3 * kPageSize, 0xab);  // non-zero fill byte
  b.Page("pc.bios", 3 * kPageSize, PatternPage(4).data());
  b.EndSection(3);
  b.Part(3);
  b.Page("mem0", 0, PatternPage(10).data());  // PAGE over PAGE
  b.Zero("mem0", kPageSize, 0);               // ZERO over PAGE
  b.Zero("mem0", 4 * kPageSize, 0);           // ZERO over an untouched page
  b.EndSection(3);
  b.End(3);
  b.Zero("mem0", 2 * kPageSize, 0x5a);  // ZERO(fill) over PAGE, in END
  b.EndSection(3).Tail();
  std::string path = Write("vm.mig", b.bytes());

  auto image = LoadMigrationStream(path);
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  const MemoryImage& m = **image;
  EXPECT_EQ(m.blocks(), kBlocks);
  EXPECT_EQ(m.TotalBytes(), 20 * kPageSize);
  EXPECT_EQ(m.source(), path);

  EXPECT_EQ(HashPage(Page(m, "mem0", 0)), HashPage(PatternPage(10).data()));
  EXPECT_TRUE(IsZeroPage(Page(m, "mem0", kPageSize)));
  Bytes fill5a(kPageSize, 0x5a), fillab(kPageSize, 0xab);
  EXPECT_EQ(std::memcmp(Page(m, "mem0", 2 * kPageSize), fill5a.data(), kPageSize), 0);
  EXPECT_EQ(std::memcmp(Page(m, "mem0", 3 * kPageSize), fillab.data(), kPageSize), 0);
  for (std::uint64_t p = 4; p < 16; ++p) {
    EXPECT_TRUE(IsZeroPage(Page(m, "mem0", p * kPageSize))) << "page never sent " << p;
  }
  EXPECT_EQ(HashPage(Page(m, "pc.bios", 3 * kPageSize)), HashPage(PatternPage(4).data()));
  EXPECT_TRUE(IsZeroPage(Page(m, "pc.bios", 0)));
}

TEST_F(ImageTest, StreamImageFollowsContinueAcrossSections) {
  StreamBuilder b;
  b.Prologue(2, kBlocks);
  b.Part(2).Page("pc.bios", 0, PatternPage(1).data()).EndSection(2);
  b.Part(2).Page("pc.bios", kPageSize, PatternPage(2).data()).EndSection(2);  // CONTINUE
  b.End(2).EndSection(2).Tail();
  auto image = LoadMigrationStream(Write("vm.mig", b.bytes()));
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  EXPECT_EQ(HashPage(Page(**image, "pc.bios", kPageSize)), HashPage(PatternPage(2).data()));
  EXPECT_TRUE(IsZeroPage(Page(**image, "mem0", kPageSize)));
}

TEST_F(ImageTest, TruncatedStreamIsAnErrorNamingTheFile) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Page("mem0", 0, PatternPage(1).data());
  std::string path = Write("cut.mig", b.bytes());
  auto image = LoadMigrationStream(path);
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kProtocolError);
  EXPECT_THAT(image.error().message(), HasSubstr(path + ": truncated migration stream"));
}

TEST_F(ImageTest, RefusedStreamKeepsItsCode) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Be64(0x40).Counted("mem0").U8(1).Be16(0);
  auto image = LoadMigrationStream(Write("xbzrle.mig", b.bytes()));
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotSupported);
}

TEST_F(ImageTest, MissingStreamIsNotFound) {
  auto image = LoadMigrationStream(dir_.File("nosuch.mig"));
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotFound);
}

TEST_F(ImageTest, OpenImageDetectsStreamsByTheirMagic) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Page("mem0", 0, PatternPage(1).data()).EndSection(2);
  b.End(2).EndSection(2).Tail();
  auto stream = OpenImage(Write("vm.mig", b.bytes()));
  ASSERT_TRUE(stream.has_value()) << stream.error().ToString();
  EXPECT_EQ((*stream)->blocks(), kBlocks);

  auto raw = OpenImage(Write("ram", PatternPage(5)));
  ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
  ASSERT_EQ((*raw)->blocks().size(), 1u);
  EXPECT_EQ((*raw)->blocks()[0], (RamBlockInfo{"mem0", kPageSize}));
  EXPECT_EQ(HashPage((*raw)->BlockData(0)), HashPage(PatternPage(5).data()));

  auto tiny = OpenImage(Write("tiny", Bytes{'Q', 'E'}));
  ASSERT_FALSE(tiny.has_value());
  EXPECT_EQ(tiny.error().code(), StatusCode::kInvalidArgument);

  auto missing = OpenImage(dir_.File("nosuch"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace escdr
