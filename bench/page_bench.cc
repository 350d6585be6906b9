// Throughput of the page primitives over 1 GiB of synthetic guest memory.
//
// Content: a fixed mix per 8 pages of 3 zero pages, 3 random pages and 2
// text-like pages (the shape of an idle Linux guest: much zero, some text and
// code, some high-entropy data). Size: $ESCDR_BENCH_MIB (default 1024).
//   build/bench/page_bench   (figures: docs/benchmarks-core.md)
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "escdr/page/page.h"

namespace escdr {
namespace {

std::uint64_t BenchBytes() {
  const char* mib = std::getenv("ESCDR_BENCH_MIB");
  std::uint64_t m = mib != nullptr ? std::strtoull(mib, nullptr, 10) : 1024;
  return (m == 0 ? 1024 : m) << 20;
}

// Pages of kind k (0..7): 0-2 zero, 3-5 random, 6-7 text.
void FillPage(std::uint8_t* p, std::uint64_t index, std::uint64_t& rng) {
  int kind = static_cast<int>(index % 8);
  if (kind < 3) return;  // anonymous memory is already zero
  if (kind < 6) {
    for (std::size_t i = 0; i < kPageSize; i += 8) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      std::memcpy(p + i, &rng, 8);
    }
    return;
  }
  static const char kText[] =
      "static int __init escdr_module_init(void) { return register_chrdev(0, \"escdr\"); }\n";
  std::size_t n = sizeof kText - 1;
  for (std::size_t i = 0; i < kPageSize; ++i)
    p[i] = static_cast<std::uint8_t>(kText[(i + index) % n]);
}

// The synthetic memory, built once.
struct Memory {
  std::uint8_t* data = nullptr;
  std::uint64_t bytes = 0;

  Memory() {
    bytes = BenchBytes();
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    data = static_cast<std::uint8_t*>(p);
    std::uint64_t rng = 0x9e3779b97f4a7c15ULL;
    for (std::uint64_t i = 0; i < bytes / kPageSize; ++i) FillPage(data + i * kPageSize, i, rng);
    // Touch the zero pages too, so every page is real memory (as guest RAM is).
    for (std::uint64_t i = 0; i < bytes / kPageSize; ++i) {
      if (i % 8 < 3) std::memset(data + i * kPageSize, 0, kPageSize);
    }
  }
  ~Memory() { ::munmap(data, bytes); }
};

const Memory& GetMemory() {
  static Memory m;
  return m;
}

void BM_HashPage(benchmark::State& state) {
  const Memory& m = GetMemory();
  std::uint64_t acc = 0;
  for (auto _ : state) {
    for (std::uint64_t off = 0; off < m.bytes; off += kPageSize) acc += HashPage(m.data + off).lo;
  }
  benchmark::DoNotOptimize(acc);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * m.bytes));
}
BENCHMARK(BM_HashPage)->Unit(benchmark::kMillisecond);

void BM_IsZeroPage_Mix(benchmark::State& state) {
  const Memory& m = GetMemory();
  std::uint64_t zeros = 0;
  for (auto _ : state) {
    for (std::uint64_t off = 0; off < m.bytes; off += kPageSize) zeros += IsZeroPage(m.data + off);
  }
  benchmark::DoNotOptimize(zeros);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * m.bytes));
}
BENCHMARK(BM_IsZeroPage_Mix)->Unit(benchmark::kMillisecond);

// The worst case: every page is zero, so every byte is read.
void BM_IsZeroPage_AllZero(benchmark::State& state) {
  const Memory& m = GetMemory();
  std::uint64_t zeros = 0;
  for (auto _ : state) {
    for (std::uint64_t off = 0; off < m.bytes; off += 8 * kPageSize) {
      for (int k = 0; k < 3; ++k) zeros += IsZeroPage(m.data + off + k * kPageSize);
    }
  }
  benchmark::DoNotOptimize(zeros);
  // Only the zero pages (3 of 8) were tested.
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * (m.bytes / 8 * 3)));
}
BENCHMARK(BM_IsZeroPage_AllZero)->Unit(benchmark::kMillisecond);

// What catalog learn/match do per page: the zero test, then a hash for the
// non-zero pages. Bytes are all bytes of RAM scanned.
void BM_ZeroTestThenHash(benchmark::State& state) {
  const Memory& m = GetMemory();
  std::uint64_t acc = 0;
  for (auto _ : state) {
    for (std::uint64_t off = 0; off < m.bytes; off += kPageSize) {
      const std::uint8_t* p = m.data + off;
      if (!IsZeroPage(p)) acc += HashPage(p).hi;
    }
  }
  benchmark::DoNotOptimize(acc);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * m.bytes));
}
BENCHMARK(BM_ZeroTestThenHash)->Unit(benchmark::kMillisecond);

// Reading the memory once (sum of words): the memory-bandwidth ceiling.
void BM_ReadMemory(benchmark::State& state) {
  const Memory& m = GetMemory();
  std::uint64_t acc = 0;
  for (auto _ : state) {
    const auto* w = reinterpret_cast<const std::uint64_t*>(m.data);
    std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (std::uint64_t i = 0; i < m.bytes / 8; i += 4) {
      a0 += w[i];
      a1 += w[i + 1];
      a2 += w[i + 2];
      a3 += w[i + 3];
    }
    acc += a0 + a1 + a2 + a3;
  }
  benchmark::DoNotOptimize(acc);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * m.bytes));
}
BENCHMARK(BM_ReadMemory)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace escdr

BENCHMARK_MAIN();
