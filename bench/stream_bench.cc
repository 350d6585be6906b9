// Throughput of the migration-stream parser on a 1 GiB synthetic stream.
//
// The stream is what a QEMU 7.2 source writes for a guest whose RAM is the
// page_bench mix (3/8 zero pages sent as ZERO records, 5/8 random or text
// pages sent as PAGE records with CONTINUE), in PART sections of ~50 MiB,
// grown until it is $ESCDR_BENCH_MIB (default 1024) MiB long. Parsed:
//   * in memory, in 1 MiB chunks (and 64 KiB, a socket-sized read), with a
//     visitor that does nothing and with one that hashes every page (the
//     source proxy's real work);
//   * from a file in /dev/shm with ParseStreamFile, against a plain read()
//     loop over the same file with the same 1 MiB buffer (the limit).
//   build/bench/stream_bench   (figures: docs/benchmarks-core.md)
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "escdr/page/page.h"
#include "escdr/qemu/stream_parser.h"
#include "escdr/sys/temp_dir.h"
#include "qemu/stream_builder.h"

namespace escdr {
namespace {

std::uint64_t BenchBytes() {
  const char* mib = std::getenv("ESCDR_BENCH_MIB");
  std::uint64_t m = mib != nullptr ? std::strtoull(mib, nullptr, 10) : 1024;
  return (m == 0 ? 1024 : m) << 20;
}

struct Stream {
  std::vector<std::uint8_t> bytes;
  std::uint64_t pages = 0;
  std::uint64_t zeros = 0;
  TempDir dir;
  std::string path;

  Stream() {
    const std::uint64_t target = BenchBytes();
    // RAM large enough that one pass over it makes the target size.
    const std::uint64_t ram_pages = (target / kPageSize) * 8 / 5 + 1024;
    test::StreamBuilder b;
    b.bytes().reserve(target + (64 << 20));
    b.Header().Config().ReturnPathAndPing();
    b.Start(2, {{"mem0", ram_pages * kPageSize}, {"pc.bios", 64 * kPageSize}});
    std::vector<std::uint8_t> page(kPageSize);
    std::uint64_t rng = 0x9e3779b97f4a7c15ULL;
    std::uint64_t i = 0;
    while (b.size() < target - (1 << 20)) {
      b.Part(2);
      std::size_t section_end = b.size() + (50 << 20);
      for (; i < ram_pages && b.size() < section_end && b.size() < target - (1 << 20); ++i) {
        int kind = static_cast<int>(i % 8);
        if (kind < 3) {
          b.Zero("mem0", i * kPageSize);
          ++zeros;
          continue;
        }
        for (std::size_t k = 0; k < kPageSize; k += 8) {
          rng ^= rng << 13;
          rng ^= rng >> 7;
          rng ^= rng << 17;
          std::uint64_t w = kind < 6 ? rng : 0x2020746e69206369ULL + i;  // random or text-ish
          std::memcpy(page.data() + k, &w, 8);
        }
        b.Page("mem0", i * kPageSize, page.data());
        ++pages;
      }
      b.EndSection(2);
    }
    b.End(2).EndSection(2).Tail(30, std::string(100000, ' ').insert(0, "{").append("}"));
    bytes = std::move(b.bytes());

    auto d = TempDir::Create("escdr-stream-bench", "/dev/shm");
    if (!d.has_value()) {
      std::fprintf(stderr, "stream_bench: %s\n", d.error().ToString().c_str());
      std::abort();
    }
    dir = std::move(*d);
    path = dir.File("stream.mig");
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
    std::fclose(f);
    std::fprintf(stderr, "stream_bench: %zu-byte stream, %llu PAGE and %llu ZERO records\n",
                 bytes.size(), static_cast<unsigned long long>(pages),
                 static_cast<unsigned long long>(zeros));
  }
};

Stream& GetStream() {
  static Stream s;
  return s;
}

class NullVisitor : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t> b) override {
    bytes += b.size();
    return Status::OK();
  }
  Status OnPage(std::uint32_t, std::uint64_t, const std::uint8_t*) override {
    ++pages;
    return Status::OK();
  }
  std::uint64_t bytes = 0;
  std::uint64_t pages = 0;
};

class HashingVisitor : public NullVisitor {
 public:
  Status OnPage(std::uint32_t, std::uint64_t, const std::uint8_t* data) override {
    acc += HashPage(data).lo;
    ++pages;
    return Status::OK();
  }
  std::uint64_t acc = 0;
};

template <typename Visitor>
void ParseInMemory(benchmark::State& state) {
  Stream& s = GetStream();
  const std::size_t chunk = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    Visitor v;
    StreamParser parser(&v);
    for (std::size_t off = 0; off < s.bytes.size(); off += chunk) {
      Status st = parser.Feed({s.bytes.data() + off, std::min(chunk, s.bytes.size() - off)});
      if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    }
    Status st = parser.Finish();
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    if (v.pages != s.pages) state.SkipWithError("page count differs from the builder's");
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * s.bytes.size()));
  state.counters["pages/s"] = benchmark::Counter(static_cast<double>(state.iterations() * s.pages),
                                                 benchmark::Counter::kIsRate);
}

void BM_Parse_NullVisitor(benchmark::State& state) { ParseInMemory<NullVisitor>(state); }
BENCHMARK(BM_Parse_NullVisitor)->Arg(1 << 20)->Arg(64 << 10)->Unit(benchmark::kMillisecond);

void BM_Parse_HashEveryPage(benchmark::State& state) { ParseInMemory<HashingVisitor>(state); }
BENCHMARK(BM_Parse_HashEveryPage)->Arg(1 << 20)->Arg(64 << 10)->Unit(benchmark::kMillisecond);

// Plain read() of the stream file in 1 MiB chunks: what any relay pays.
void BM_ReadFile(benchmark::State& state) {
  Stream& s = GetStream();
  std::vector<std::uint8_t> buf(1 << 20);
  for (auto _ : state) {
    int fd = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) state.SkipWithError("cannot open the stream file");
    std::uint64_t total = 0;
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n <= 0) break;
      total += static_cast<std::uint64_t>(n);
    }
    ::close(fd);
    if (total != s.bytes.size()) state.SkipWithError("short read");
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * s.bytes.size()));
}
BENCHMARK(BM_ReadFile)->Unit(benchmark::kMillisecond);

template <typename Visitor>
void ParseFile(benchmark::State& state) {
  Stream& s = GetStream();
  for (auto _ : state) {
    Visitor v;
    Status st = ParseStreamFile(s.path, &v);
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * s.bytes.size()));
}
void BM_ParseStreamFile_NullVisitor(benchmark::State& state) { ParseFile<NullVisitor>(state); }
BENCHMARK(BM_ParseStreamFile_NullVisitor)->Unit(benchmark::kMillisecond);
void BM_ParseStreamFile_HashEveryPage(benchmark::State& state) { ParseFile<HashingVisitor>(state); }
BENCHMARK(BM_ParseStreamFile_HashEveryPage)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace escdr

BENCHMARK_MAIN();
