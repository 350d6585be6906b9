// Replays every seed (fuzz/corpus/<harness>/) and every input a fuzzer once
// failed on (fuzz/regressions/<harness>/) through the harness's entry
// function, so the normal GCC build catches regressions without clang or
// libFuzzer. A broken contract aborts the test binary with the check that
// failed; the file being replayed is printed before each run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_targets.h"

namespace escdr::fuzz {
namespace {

namespace fs = std::filesystem;
using Entry = int (*)(const std::uint8_t*, std::size_t);

// Replays the files of fuzz/<kind>/<harness>/; returns how many there were.
std::size_t Replay(const std::string& kind, const std::string& harness, Entry entry) {
  const fs::path dir = fs::path(ESCDR_SOURCE_DIR) / "fuzz" / kind / harness;
  if (!fs::is_directory(dir)) return 0;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    EXPECT_TRUE(in.good() || in.eof()) << "cannot read " << f;
    std::fprintf(stderr, "replaying %s (%zu bytes)\n", f.c_str(), bytes.size());
    EXPECT_EQ(entry(bytes.data(), bytes.size()), 0) << f;
  }
  return files.size();
}

TEST(FuzzRegressionTest, StreamParserSeedsAndRegressionsPass) {
  EXPECT_GT(Replay("corpus", "stream_parser", FuzzStreamParser), 0u);
  Replay("regressions", "stream_parser", FuzzStreamParser);
}

TEST(FuzzRegressionTest, WireFramesSeedsAndRegressionsPass) {
  EXPECT_GT(Replay("corpus", "wire_frames", FuzzWireFrames), 0u);
  Replay("regressions", "wire_frames", FuzzWireFrames);
}

TEST(FuzzRegressionTest, CatalogSeedsAndRegressionsPass) {
  EXPECT_GT(Replay("corpus", "catalog", FuzzCatalog), 0u);
  Replay("regressions", "catalog", FuzzCatalog);
}

// Inputs shorter than the bytes that steer a harness are skipped, not read.
TEST(FuzzRegressionTest, ShortInputsAreIgnored) {
  const std::uint8_t none[1] = {0};
  EXPECT_EQ(FuzzStreamParser(none, 0), 0);
  EXPECT_EQ(FuzzWireFrames(none, 1), 0);
  EXPECT_EQ(FuzzCatalog(none, 1), 0);
}

}  // namespace
}  // namespace escdr::fuzz
