// `escdr catalog ...` end to end: the real binary on synthetic RAM files,
// checked against the library, and every bad input it must refuse with one
// clear line and a non-zero exit.
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "catalog/cli_runner.h"
#include "catalog/fake_memory_image.h"
#include "escdr/catalog/catalog_format.h"
#include "escdr/catalog/catalog_learner.h"
#include "escdr/catalog/catalog_match.h"
#include "escdr/sys/temp_dir.h"

namespace escdr {
namespace {

using catalog_test::CliResult;
using catalog_test::FillPage;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::vector<std::string> kKeyFlags = {"--os", "debian", "--os-version", "12",
                                            "--hypervisor", "qemu", "--hypervisor-version", "7.2"};

std::vector<std::string> Args(std::vector<std::string> head, const std::vector<std::string>& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

class CatalogCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("escdr-catalog-cli");
    ASSERT_TRUE(dir.has_value()) << dir.error().message();
    dir_ = std::move(dir).value();
    state_ = dir_.File("state");
    // Four 1 MiB "guests": half the pages shared in place, some shared but
    // moved per sample, some zero, the rest private.
    for (int s = 0; s < 4; ++s) {
      std::vector<std::uint64_t> ids(256);
      for (std::size_t i = 0; i < ids.size(); ++i) {
        switch (i % 8) {
          case 0: case 1: case 2: case 3: ids[i] = 100 + i; break;
          case 4: ids[i] = 1000 + (i + 8 * static_cast<std::size_t>(s)) % 256; break;
          case 5: ids[i] = 0; break;
          default: ids[i] = 100000 * static_cast<std::size_t>(s + 1) + i;
        }
      }
      WriteRaw(Ram(s), ids);
    }
  }

  std::string Ram(int s) const { return dir_.File("vm" + std::to_string(s) + ".ram"); }

  static void WriteRaw(const std::string& path, const std::vector<std::uint64_t>& ids) {
    std::string bytes(ids.size() * kPageSize, '\0');
    for (std::size_t i = 0; i < ids.size(); ++i) {
      FillPage(ids[i], reinterpret_cast<std::uint8_t*>(bytes.data() + i * kPageSize));
    }
    std::ofstream(path, std::ios::binary) << bytes;
  }

  CliResult Run(const std::vector<std::string>& args) {
    return catalog_test::RunEscdr(dir_.path(), state_, args);
  }

  // The command failed with exit code 1 and exactly one "escdr: ..." line.
  void ExpectOneLineError(const CliResult& r, const std::string& phrase) {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("escdr: "));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(phrase));
    EXPECT_EQ(r.out, "");
  }

  void Learn() {
    CliResult r = Run(Args({"catalog", "learn"}, Args(kKeyFlags, {Ram(0), Ram(1), Ram(2)})));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  Catalog LearnInProcess() {
    std::vector<std::unique_ptr<MemoryImage>> images;
    std::vector<const MemoryImage*> ptrs;
    for (int s = 0; s < 3; ++s) {
      images.push_back(std::move(OpenImage(Ram(s))).value());
      ptrs.push_back(images.back().get());
    }
    return std::move(LearnCatalog(VmKind{"debian", "12", "qemu", "7.2"}, ptrs)).value();
  }

  TempDir dir_;
  std::string state_;
};

TEST_F(CatalogCliTest, LearnMatchExportImportAgreeWithTheLibrary) {
  const Catalog want = LearnInProcess();
  ASSERT_GT(want.position_count(), 0u);

  CliResult learn =
      Run(Args({"--json", "catalog", "learn"}, Args(kKeyFlags, {Ram(0), Ram(1), Ram(2)})));
  ASSERT_EQ(learn.exit_code, 0) << learn.err;
  nlohmann::json doc = learn.Json();
  EXPECT_EQ(doc["kind"]["os"], "debian");
  EXPECT_EQ(doc["kind"]["hypervisor_version"], "7.2");
  EXPECT_EQ(doc["samples"], 3);
  EXPECT_EQ(doc["content_pages"], want.content_count());
  EXPECT_EQ(doc["position_pages"], want.position_count());
  EXPECT_EQ(doc["blocks"][0]["name"], "mem0");
  EXPECT_EQ(doc["blocks"][0]["length"], 256 * kPageSize);

  CliResult match = Run(Args({"--json", "catalog", "match"}, Args(kKeyFlags, {Ram(3)})));
  ASSERT_EQ(match.exit_code, 0) << match.err;
  std::unique_ptr<MemoryImage> vm3 = std::move(OpenImage(Ram(3))).value();
  const PageCounts counts = MatchImage(want, *vm3)->total;
  doc = match.Json();
  EXPECT_EQ(doc["pages"]["total"], counts.total);
  EXPECT_EQ(doc["pages"]["zero"], counts.zero);
  EXPECT_EQ(doc["pages"]["by_position"], counts.by_position);
  EXPECT_EQ(doc["pages"]["by_content_only"], counts.by_content_only);
  EXPECT_EQ(doc["pages"]["other"], counts.other);
  EXPECT_EQ(doc["saved_bytes"], counts.SavedBytes());
  EXPECT_GT(counts.by_position, 0u);
  EXPECT_GT(counts.by_content_only, 0u);

  // Export writes exactly the library's encoding (the format is deterministic).
  const std::string exported = dir_.File("debian.catalog");
  CliResult exp = Run(Args({"--json", "catalog", "export"}, Args(kKeyFlags, {exported})));
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  EXPECT_EQ(exp.Json()["file"], exported);
  EXPECT_EQ(catalog_test::Slurp(exported), EncodeCatalog(want));

  // Import into a fresh state directory, with a matching key flag.
  const std::string other_state = dir_.File("other-state");
  CliResult imp = catalog_test::RunEscdr(dir_.path(), other_state,
                                         {"--json", "catalog", "import", "--os", "debian", exported});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_EQ(imp.Json()["position_pages"], want.position_count());
  CliResult list = catalog_test::RunEscdr(dir_.path(), other_state, {"--json", "catalog", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  doc = list.Json();
  ASSERT_EQ(doc["catalogs"].size(), 1u);
  EXPECT_EQ(doc["catalogs"][0]["kind"]["os_version"], "12");
  EXPECT_EQ(doc["catalogs"][0]["samples"], 3);
  EXPECT_EQ(doc["catalogs"][0]["size_bytes"], EncodeCatalog(want).size());

  CliResult show = Run(Args({"--json", "catalog", "show"}, kKeyFlags));
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_EQ(show.Json()["blocks"][0]["position_pages"], want.position_count());

  // The human forms print tables, not JSON.
  CliResult table = Run(Args({"catalog", "match"}, Args(kKeyFlags, {Ram(3)})));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("BY POSITION"));
  EXPECT_THAT(table.out, HasSubstr("expected saving:"));

  CliResult remove = Run(Args({"catalog", "remove"}, kKeyFlags));
  ASSERT_EQ(remove.exit_code, 0) << remove.err;
  ExpectOneLineError(Run(Args({"catalog", "show"}, kKeyFlags)), "no catalog for debian 12 / qemu 7.2");
}

TEST_F(CatalogCliTest, MissingKeyFlagsAreRefused) {
  ExpectOneLineError(Run({"catalog", "learn", Ram(0), Ram(1)}), "catalog learn needs --os");
  ExpectOneLineError(
      Run({"catalog", "learn", "--os", "debian", "--os-version", "12", "--hypervisor", "qemu",
           Ram(0), Ram(1)}),
      "catalog learn needs --hypervisor-version");
  ExpectOneLineError(Run({"catalog", "match", "--os", "debian", Ram(3)}),
                     "catalog match needs --os-version");
  ExpectOneLineError(Run({"catalog", "show"}), "catalog show needs --os");
  ExpectOneLineError(Run({"catalog", "export", "--os", "x"}), "catalog export needs --os-version");
}

TEST_F(CatalogCliTest, FewerThanTwoImagesAreRefused) {
  ExpectOneLineError(Run(Args({"catalog", "learn"}, Args(kKeyFlags, {Ram(0)}))),
                     "needs at least 2 images of debian 12 / qemu 7.2, got 1");
}

TEST_F(CatalogCliTest, ImagesWithDifferentBlocksAreRefused) {
  const std::string small = dir_.File("small.ram");
  WriteRaw(small, std::vector<std::uint64_t>(16, 7));
  ExpectOneLineError(Run(Args({"catalog", "learn"}, Args(kKeyFlags, {Ram(0), small}))),
                     "block \"mem0\" is 1048576 bytes in " + Ram(0) + " but 65536 bytes in " + small);
  Learn();
  ExpectOneLineError(Run(Args({"catalog", "match"}, Args(kKeyFlags, {small}))),
                     "RAM block \"mem0\" is 65536 bytes but the catalog of debian 12 / qemu 7.2 "
                     "expects 1048576 bytes");
}

TEST_F(CatalogCliTest, UnreadableImageIsRefused) {
  ExpectOneLineError(Run(Args({"catalog", "learn"}, Args(kKeyFlags, {Ram(0), dir_.File("nope")}))),
                     dir_.File("nope"));
}

TEST_F(CatalogCliTest, DamagedCatalogFilesAreRefused) {
  Learn();
  const std::string good_path = dir_.File("good.catalog");
  ASSERT_EQ(Run(Args({"catalog", "export"}, Args(kKeyFlags, {good_path}))).exit_code, 0);
  const std::string good = catalog_test::Slurp(good_path);
  auto write = [&](const std::string& name, const std::string& bytes) {
    const std::string path = dir_.File(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  };

  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  ExpectOneLineError(Run({"catalog", "import", write("flipped", flipped)}), "checksum mismatch");

  ExpectOneLineError(Run({"catalog", "import", write("truncated", good.substr(0, good.size() - 9))}),
                     "truncated");

  std::string magic = good;
  magic.replace(0, 8, "NOTACATL");
  ExpectOneLineError(Run({"catalog", "import", write("magic", magic)}), "not an escdr catalog");

  std::string newer = good;
  newer[8] = 2;  // format version, little-endian u32 at offset 8
  ExpectOneLineError(Run({"catalog", "import", write("newer", newer)}),
                     "format version 2 is newer than this escdr reads");

  ExpectOneLineError(Run({"catalog", "import", dir_.File("missing.catalog")}), "does not exist");
  ExpectOneLineError(Run({"catalog", "import", dir_.path()}), "not a regular file");

  ExpectOneLineError(Run({"catalog", "import", "--os", "alpine", good_path}),
                     "is for debian 12 / qemu 7.2, not --os alpine");
  ExpectOneLineError(Run({"catalog", "import", "--hypervisor-version", "8.0", good_path}),
                     "not --hypervisor-version 8.0");
}

TEST_F(CatalogCliTest, DamagedStoredCatalogIsReportedNotUsed) {
  Learn();
  // Damage the stored catalog behind the CLI's back: flip one bit of the
  // blob in the inventory (the default SQLite file in the state directory).
  const std::string db_path = state_ + "/inventory.db";
  ASSERT_TRUE(std::filesystem::exists(db_path));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* read = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT bytes FROM catalogs", -1, &read, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(read), SQLITE_ROW);
  std::string bytes(static_cast<const char*>(sqlite3_column_blob(read, 0)),
                    static_cast<std::size_t>(sqlite3_column_bytes(read, 0)));
  sqlite3_finalize(read);
  ASSERT_GT(bytes.size(), 100u);
  bytes[100] ^= 1;
  sqlite3_stmt* write = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "UPDATE catalogs SET bytes = ?", -1, &write, nullptr),
            SQLITE_OK);
  sqlite3_bind_blob(write, 1, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(write), SQLITE_DONE);
  sqlite3_finalize(write);
  sqlite3_close(db);

  ExpectOneLineError(Run(Args({"catalog", "match"}, Args(kKeyFlags, {Ram(3)}))), "checksum mismatch");
  ExpectOneLineError(Run(Args({"catalog", "export"}, Args(kKeyFlags, {dir_.File("x")}))),
                     "checksum mismatch");
  EXPECT_FALSE(std::filesystem::exists(dir_.File("x")));
  CliResult list = Run({"--json", "catalog", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.Json()["catalogs"][0]["error"].get<std::string>(), HasSubstr("checksum mismatch"));
}

}  // namespace
}  // namespace escdr
