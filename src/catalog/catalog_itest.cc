// The catalog on real guests: four 256 MiB test guests of one kind (booted
// together, TCG), a catalog learned from three, matched against the fourth;
// once with nokaslr and once with KASLR. Also: learning from saved migration
// streams of the same (paused) guests gives the same "mem0" positions as
// learning from their RAM files, and the escdr binary agrees with the library.
//
// Bounds are loose on purpose: they catch a broken learner or matcher, not a
// change in the guest. Measured figures are printed as "[ catalog ]" lines.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "catalog/cli_runner.h"
#include "escdr/catalog/catalog_format.h"
#include "escdr/catalog/catalog_learner.h"
#include "escdr/catalog/catalog_match.h"
#include "escdr/image/memory_image.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/qemu/launch_spec.h"
#include "testing/test_guest.h"

namespace escdr {
namespace {

using catalog_test::CliResult;
using catalog_test::RunEscdr;
using testing::GuestOptions;
using testing::TestGuest;

// The QEMU series of the guests: $ESCDR_CATALOG_QEMU, "7.2" (the host's) by
// default; "10.0" runs them on tools/install-qemu.sh's tree (CTest runs this
// file once more that way: the qemu10. tests).
std::string Series() {
  const char* env = std::getenv("ESCDR_CATALOG_QEMU");
  return env != nullptr && *env != '\0' ? env : "7.2";
}
const VmKind kKind{"escdr-test-guest", "1", "qemu", Series()};
const std::vector<std::string> kKeyFlags = {"--os", kKind.os, "--os-version", kKind.os_version,
                                            "--hypervisor", kKind.hypervisor,
                                            "--hypervisor-version", kKind.hypervisor_version};

std::vector<std::string> Args(std::vector<std::string> head, const std::vector<std::string>& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

double Percent(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

void Print(const char* label, const Catalog& catalog, const PageCounts& c) {
  const std::uint64_t non_zero = c.total - c.zero;
  std::printf(
      "[ catalog ] QEMU %s, %s: catalog %zu content / %zu position pages, %zu bytes encoded; "
      "4th guest: %lu pages, %lu zero, %lu non-zero: by position %lu (%.1f%%), by content only "
      "%lu (%.1f%%), other %lu (%.1f%%); by content in all %.1f%%; saved %.1f%% of RAM\n",
      kKind.hypervisor_version.c_str(), label, catalog.content_count(), catalog.position_count(), EncodeCatalog(catalog).size(),
      c.total, c.zero, non_zero, c.by_position, Percent(c.by_position, non_zero),
      c.by_content_only, Percent(c.by_content_only, non_zero), c.other,
      Percent(c.other, non_zero), Percent(c.by_position + c.by_content_only, non_zero),
      c.SavedPercent());
  std::fflush(stdout);
}

// Four paused guests of one kind and their RAM files, opened.
struct Fleet {
  std::vector<std::unique_ptr<TestGuest>> guests;
  std::vector<std::unique_ptr<MemoryImage>> rams;

  std::vector<const MemoryImage*> Learners() const {
    return {rams[0].get(), rams[1].get(), rams[2].get()};
  }
};

void BootFleet(bool kaslr, Fleet* fleet) {
  GuestOptions options;
  options.memory_mib = 256;
  options.kaslr = kaslr;
  options.seed = 1;  // guests get seeds 1..4: private data differs per guest
  options.name = kaslr ? "catalog-kaslr" : "catalog-nokaslr";
  if (kKind.hypervisor_version != "7.2") {
    options.qemu = testing::Qemu10Dir();
    ASSERT_FALSE(options.qemu.empty()) << "no QEMU 10.0 tree (tools/install-qemu.sh)";
  }
  auto guests = TestGuest::BootMany(options, 4);
  ASSERT_TRUE(guests.has_value()) << guests.error().message();
  fleet->guests = std::move(guests).value();
  // Paused guests hold still, so the RAM files and the streams saved later
  // show the same memory.
  for (auto& g : fleet->guests) ASSERT_TRUE(g->Pause().ok());
  for (auto& g : fleet->guests) {
    auto image = OpenRamFile(g->ram_path());
    ASSERT_TRUE(image.has_value()) << image.error().message();
    fleet->rams.push_back(std::move(image).value());
  }
}

// What must hold for any sane catalog learned from `samples`.
void ExpectSaneCatalog(const Catalog& catalog, const std::vector<const MemoryImage*>& samples) {
  EXPECT_GT(catalog.content_count(), 0u);
  EXPECT_GT(catalog.position_count(), 0u);
  const std::size_t encoded = EncodeCatalog(catalog).size();
  for (const MemoryImage* sample : samples) {
    auto own = MatchImage(catalog, *sample);
    ASSERT_TRUE(own.has_value()) << own.error().message();
    const std::uint64_t non_zero = own->total.total - own->total.zero;
    // Smaller than the non-zero memory it summarises, by count and by bytes.
    EXPECT_LT(catalog.content_count(), non_zero) << sample->source();
    EXPECT_LT(catalog.position_count(), non_zero) << sample->source();
    EXPECT_LT(encoded, non_zero * kPageSize) << sample->source();
    // Each learning sample holds every position entry, and every non-zero
    // page it has in common with all samples is matched.
    EXPECT_EQ(own->total.by_position, catalog.position_count()) << sample->source();
    EXPECT_GE(own->total.by_position + own->total.by_content_only, catalog.content_count());
  }
}

TEST(CatalogGuestTest, NokaslrGuestsAreMostlyStaticByPosition) {
  Fleet fleet;
  ASSERT_NO_FATAL_FAILURE(BootFleet(/*kaslr=*/false, &fleet));
  auto catalog = LearnCatalog(kKind, fleet.Learners());
  ASSERT_TRUE(catalog.has_value()) << catalog.error().message();
  auto report = MatchImage(*catalog, *fleet.rams[3]);
  ASSERT_TRUE(report.has_value()) << report.error().message();
  const PageCounts& c = report->total;
  Print("nokaslr", *catalog, c);
  const std::uint64_t non_zero = c.total - c.zero;
  EXPECT_GT(c.by_position, non_zero / 2);  // measured: about 76%
  EXPECT_GT(c.other, 0u);  // the guests' private data (escdr.seed) is not static
  ExpectSaneCatalog(*catalog, fleet.Learners());

  // ---- the escdr binary on the same RAM files ----
  auto work = TempDir::Create("escdr-catalog-itest");
  ASSERT_TRUE(work.has_value()) << work.error().message();
  const std::string state = work->File("state");
  CliResult learn = RunEscdr(work->path(), state,
                             Args({"--json", "catalog", "learn"},
                                  Args(kKeyFlags, {fleet.guests[0]->ram_path(),
                                                   fleet.guests[1]->ram_path(),
                                                   fleet.guests[2]->ram_path()})));
  ASSERT_EQ(learn.exit_code, 0) << learn.err;
  nlohmann::json doc = learn.Json();
  EXPECT_EQ(doc["samples"], 3);
  EXPECT_EQ(doc["content_pages"], catalog->content_count());
  EXPECT_EQ(doc["position_pages"], catalog->position_count());
  EXPECT_EQ(doc["blocks"][0]["name"], "mem0");
  EXPECT_EQ(doc["blocks"][0]["length"], (256u << 20) + kTcgRamPadBytes);

  CliResult match = RunEscdr(work->path(), state,
                             Args({"--json", "catalog", "match"},
                                  Args(kKeyFlags, {fleet.guests[3]->ram_path()})));
  ASSERT_EQ(match.exit_code, 0) << match.err;
  doc = match.Json();
  EXPECT_EQ(doc["pages"]["total"], c.total);
  EXPECT_EQ(doc["pages"]["zero"], c.zero);
  EXPECT_EQ(doc["pages"]["by_position"], c.by_position);
  EXPECT_EQ(doc["pages"]["by_content_only"], c.by_content_only);
  EXPECT_EQ(doc["pages"]["other"], c.other);
  EXPECT_EQ(doc["saved_bytes"], c.SavedBytes());
  EXPECT_DOUBLE_EQ(doc["saved_percent"].get<double>(), c.SavedPercent());

  const std::string exported = work->File("catalog.bin");
  CliResult exp = RunEscdr(work->path(), state,
                           Args({"--json", "catalog", "export"}, Args(kKeyFlags, {exported})));
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  EXPECT_EQ(catalog_test::Slurp(exported), EncodeCatalog(*catalog));
  CliResult imp = RunEscdr(work->path(), work->File("state2"),
                           {"--json", "catalog", "import", "--os", kKind.os, exported});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_EQ(imp.Json()["content_pages"], catalog->content_count());
  CliResult list = RunEscdr(work->path(), work->File("state2"), {"--json", "catalog", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  ASSERT_EQ(list.Json()["catalogs"].size(), 1u);

  // ---- the same guests, learned from saved migration streams ----
  CatalogLearner learner(kKind);
  std::vector<std::string> streams;
  for (int g = 0; g < 3; ++g) {
    streams.push_back(work->File("vm" + std::to_string(g) + ".stream"));
    auto info = fleet.guests[static_cast<std::size_t>(g)]->SaveStream(streams.back());
    ASSERT_TRUE(info.has_value()) << info.error().message();
    // One stream in memory at a time.
    auto stream = LoadMigrationStream(streams.back());
    ASSERT_TRUE(stream.has_value()) << stream.error().message();
    ASSERT_GE((*stream)->FindBlock("mem0"), 0);
    EXPECT_GT((*stream)->blocks().size(), 1u);  // firmware and device blocks too
    ASSERT_TRUE(learner.AddSample(**stream).ok());
  }
  auto from_streams = std::move(learner).Finish();
  ASSERT_TRUE(from_streams.has_value()) << from_streams.error().message();
  const int mem0 = from_streams->FindBlock("mem0");
  ASSERT_GE(mem0, 0);
  auto stream_positions = from_streams->Positions(static_cast<std::size_t>(mem0));
  auto ram_positions = catalog->Positions(0);
  ASSERT_EQ(stream_positions.size(), ram_positions.size());
  for (std::size_t i = 0; i < ram_positions.size(); ++i) {
    ASSERT_EQ(stream_positions[i].page_index, ram_positions[i].page_index) << i;
    ASSERT_EQ(from_streams->ContentHash(stream_positions[i].content_index),
              catalog->ContentHash(ram_positions[i].content_index))
        << "page " << ram_positions[i].page_index;
  }
  // The streams' extra blocks can only add content.
  for (const PageHash& h : catalog->content()) ASSERT_TRUE(from_streams->IsContent(h));
  EXPECT_GE(from_streams->content_count(), catalog->content_count());
  std::printf("[ catalog ] nokaslr from streams: %zu blocks, %zu content / %zu position pages\n",
              from_streams->blocks().size(), from_streams->content_count(),
              from_streams->position_count());

  // A stream image against the RAM-file catalog: its extra blocks are allowed
  // and matched by content only.
  CliResult stream_match =
      RunEscdr(work->path(), state,
               Args({"--json", "catalog", "match"}, Args(kKeyFlags, {streams[0]})));
  ASSERT_EQ(stream_match.exit_code, 0) << stream_match.err;
  doc = stream_match.Json();
  EXPECT_GT(doc["blocks"].size(), 1u);
  for (const auto& block : doc["blocks"]) {
    if (block["name"] == "mem0") {
      EXPECT_TRUE(block["in_catalog"].get<bool>());
      EXPECT_EQ(block["pages"]["by_position"], catalog->position_count());
    } else {
      EXPECT_FALSE(block["in_catalog"].get<bool>());
      EXPECT_EQ(block["pages"]["by_position"], 0);
    }
  }
}

TEST(CatalogGuestTest, KaslrGuestsNeedContentMatching) {
  Fleet fleet;
  ASSERT_NO_FATAL_FAILURE(BootFleet(/*kaslr=*/true, &fleet));
  auto catalog = LearnCatalog(kKind, fleet.Learners());
  ASSERT_TRUE(catalog.has_value()) << catalog.error().message();
  auto report = MatchImage(*catalog, *fleet.rams[3]);
  ASSERT_TRUE(report.has_value()) << report.error().message();
  const PageCounts& c = report->total;
  Print("kaslr", *catalog, c);
  const std::uint64_t non_zero = c.total - c.zero;
  // KASLR moves the kernel: position matching alone loses much of what
  // content matching finds (measured: about 26% by position, 58% by content).
  EXPECT_GT(c.by_position + c.by_content_only, non_zero * 2 / 5);
  EXPECT_GT(c.by_content_only, non_zero / 10);
  ExpectSaneCatalog(*catalog, fleet.Learners());
}

}  // namespace
}  // namespace escdr
