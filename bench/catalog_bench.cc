// Catalog learn/match throughput, in bytes of guest RAM per second of CPU
// time on one core (docs/benchmarks-catalog.md).
//
// Synthetic guests of ESCDR_BENCH_SAMPLE_MIB MiB each (default 1024), one
// block "mem0". Page i of sample s is, by i mod 10:
//   0-5  shared content at the same position in every sample (60%)
//   6    shared content, shuffled: a different position per sample (10%)
//   7    zero (10%)
//   8-9  private to the sample (20%)
// Learning reads three samples; matching reads a fourth.
//
// Run: build/bench/catalog_bench [--benchmark_filter=Learn]
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "escdr/catalog/catalog_format.h"
#include "escdr/catalog/catalog_learner.h"
#include "escdr/catalog/catalog_match.h"
#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"

namespace escdr {
namespace {

const VmKind kKind{"bench", "1", "qemu", "7.2"};

std::uint64_t SampleBytes() {
  const char* env = std::getenv("ESCDR_BENCH_SAMPLE_MIB");
  const std::uint64_t mib = env && *env ? std::strtoull(env, nullptr, 10) : 1024;
  return (mib == 0 ? 1024 : mib) << 20;
}

// Fills one page with bytes determined by `id` alone (splitmix64).
void FillPage(std::uint64_t id, std::uint8_t* out) {
  std::uint64_t x = id * 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i < kPageSize; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(out + i, &z, 8);  // page bytes, not an encoding: byte order is irrelevant
  }
}

// An anonymous mapping holding one synthetic guest.
class SyntheticImage final : public MemoryImage {
 public:
  SyntheticImage(int sample, std::uint64_t bytes)
      : source_("synthetic-" + std::to_string(sample)), blocks_{{"mem0", bytes}} {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    data_ = static_cast<std::uint8_t*>(p);
    const std::uint64_t pages = bytes / kPageSize;
    const auto s = static_cast<std::uint64_t>(sample);
    const std::uint64_t shuffled = pages / 10 + (pages % 10 > 6 ? 1 : 0);
    for (std::uint64_t i = 0; i < pages; ++i) {
      std::uint8_t* page = data_ + i * kPageSize;
      switch (i % 10) {
        case 6:  // the same set of pages in every sample, rotated per sample
          FillPage(1ull << 50 | ((i / 10 + 7919 * s) % shuffled), page);
          break;
        case 7:
          // Written, not left untouched: a guest's zero pages are backed
          // memory, and reading unbacked ones would time page faults.
          std::memset(page, 0, kPageSize);
          break;
        case 8:
        case 9:
          FillPage((s + 1) << 40 | i, page);
          break;
        default:
          FillPage(1 + i, page);
      }
    }
  }
  ~SyntheticImage() override { ::munmap(data_, blocks_[0].length); }

  const std::vector<RamBlockInfo>& blocks() const override { return blocks_; }
  const std::uint8_t* BlockData(std::size_t) const override { return data_; }
  const std::string& source() const override { return source_; }

 private:
  std::string source_;
  std::vector<RamBlockInfo> blocks_;
  std::uint8_t* data_ = nullptr;
};

// Built once, on first use, and shared by the benchmarks.
struct Fixture {
  std::vector<std::unique_ptr<SyntheticImage>> samples;  // 0..2 learn, 3 match
  std::unique_ptr<Catalog> catalog;

  static Fixture& Get() {
    static Fixture* f = [] {
      auto* fx = new Fixture;
      for (int s = 0; s < 4; ++s) fx->samples.push_back(std::make_unique<SyntheticImage>(s, SampleBytes()));
      std::vector<const MemoryImage*> learn = {fx->samples[0].get(), fx->samples[1].get(),
                                               fx->samples[2].get()};
      fx->catalog = std::make_unique<Catalog>(std::move(LearnCatalog(kKind, learn)).value());
      return fx;
    }();
    return *f;
  }
};

void BM_Learn3Samples(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  std::vector<const MemoryImage*> learn = {f.samples[0].get(), f.samples[1].get(),
                                           f.samples[2].get()};
  std::size_t content = 0, positions = 0;
  for (auto _ : state) {
    Result<Catalog> c = LearnCatalog(kKind, learn);
    if (!c) {
      state.SkipWithError(c.error().message().c_str());
      return;
    }
    content = c->content_count();
    positions = c->position_count();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 3 * SampleBytes()));
  state.counters["content"] = static_cast<double>(content);
  state.counters["positions"] = static_cast<double>(positions);
}
BENCHMARK(BM_Learn3Samples)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_Match(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  PageCounts counts;
  for (auto _ : state) {
    Result<MatchReport> r = MatchImage(*f.catalog, *f.samples[3]);
    if (!r) {
      state.SkipWithError(r.error().message().c_str());
      return;
    }
    counts = r->total;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * SampleBytes()));
  state.counters["by_position_%"] = 100.0 * static_cast<double>(counts.by_position) / static_cast<double>(counts.total);
  state.counters["by_content_only_%"] = 100.0 * static_cast<double>(counts.by_content_only) / static_cast<double>(counts.total);
}
BENCHMARK(BM_Match)->Unit(benchmark::kMillisecond)->Iterations(5);

// The migration path's question, per page: is this hash catalog content?
// Random probes into the learned catalog, half of them hits.
void BM_FindContent(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  const Catalog& c = *f.catalog;
  std::mt19937_64 rng(7);
  std::vector<PageHash> probes(1 << 16);
  for (std::size_t i = 0; i < probes.size(); ++i) {
    probes[i] = i % 2 == 0 ? c.ContentHash(static_cast<std::uint32_t>(rng() % c.content_count()))
                           : PageHash{rng(), rng()};
  }
  std::size_t i = 0, hits = 0;
  for (auto _ : state) {
    hits += c.FindContent(probes[i++ & (probes.size() - 1)]) != PageHashIndex::kAbsent;
  }
  benchmark::DoNotOptimize(hits);
  state.counters["content"] = static_cast<double>(c.content_count());
}
BENCHMARK(BM_FindContent);

// What the learner and matcher cannot go below: hash every non-zero page.
void BM_ZeroTestAndHashOnly(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  const SyntheticImage& image = *f.samples[3];
  const std::uint64_t pages = SampleBytes() / kPageSize;
  for (auto _ : state) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < pages; ++i) {
      const std::uint8_t* page = image.BlockData(0) + i * kPageSize;
      if (!IsZeroPage(page)) acc += HashPage(page).lo;
    }
    benchmark::DoNotOptimize(acc);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * SampleBytes()));
}
BENCHMARK(BM_ZeroTestAndHashOnly)->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_EncodeCatalog(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  std::size_t size = 0;
  for (auto _ : state) size = EncodeCatalog(*f.catalog).size();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  state.counters["file_bytes"] = static_cast<double>(size);
}
BENCHMARK(BM_EncodeCatalog)->Unit(benchmark::kMillisecond);

void BM_DecodeCatalog(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  const std::string bytes = EncodeCatalog(*f.catalog);
  for (auto _ : state) {
    Result<Catalog> c = DecodeCatalog(bytes);
    if (!c) {
      state.SkipWithError(c.error().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(c->content_count());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK(BM_DecodeCatalog)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace escdr

BENCHMARK_MAIN();
