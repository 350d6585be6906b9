// Proxy throughput: a synthetic 1 GiB QEMU migration stream pushed through
//   BM_Relay: a plain byte relay (unix socket -> TCP loopback -> unix socket),
//   BM_Proxy: SourceSession (parse, hash, frame) -> the same TCP loopback ->
//             DestinationSession (check, rebuild, verified donor copies),
// from a writer thread playing the source QEMU to a sink thread playing the
// destination QEMU. The argument of BM_Proxy is the share (%) of pages that
// are catalog content the donor holds; at 0 every page is still hashed and
// looked up, so it is the proxy's worst case for CPU.
//
// Run: build-dir/bench/proxy_bench [--benchmark_repetitions=3]
// Environment: ESCDR_BENCH_STREAM_MIB (default 1024).
// Rates are bytes of the source QEMU's stream per second of wall time, from
// the first byte written to the sink's end of file. docs/wire-protocol.md
// has the protocol; the figures measured are recorded in the final report.
#include <benchmark/benchmark.h>

#include <pthread.h>
#include <time.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/wire/crc32c.h"
#include "escdr/wire/socket.h"
#include "migrate/session_test_util.h"
#include "qemu/stream_builder.h"

namespace escdr {
namespace {

using std::chrono::seconds;

constexpr std::size_t kCatalogPages = 16384;  // distinct catalog contents (64 MiB donor)
constexpr std::size_t kChunk = 256 * 1024;

std::uint64_t StreamPages() {
  const char* env = std::getenv("ESCDR_BENCH_STREAM_MIB");
  std::uint64_t mib = env != nullptr ? std::strtoull(env, nullptr, 10) : 1024;
  return std::max<std::uint64_t>(mib, 1) * 256;
}

// The donor and the catalog: kCatalogPages distinct pages.
struct Catalog {
  std::unique_ptr<test::VectorImage> donor;
  std::unique_ptr<StaticContentTable> content;
};

const Catalog& SharedCatalog() {
  static const Catalog* c = [] {
    auto* cat = new Catalog;
    cat->donor = std::make_unique<test::VectorImage>(
        std::vector<RamBlockInfo>{{"donor.ram", kCatalogPages * kPageSize}});
    std::vector<PageHash> hashes;
    for (std::size_t k = 0; k < kCatalogPages; ++k) {
      std::uint8_t* p = cat->donor->MutablePage(0, k * kPageSize);
      test::FillPage(p, 0xCA7A106ull + k);
      hashes.push_back(HashPage(p));
    }
    cat->content = std::move(*StaticContentTable::Create(test::TestKind(), 42, hashes));
    return cat;
  }();
  return *c;
}

// A stream of StreamPages() PAGE records in one PART; `share` % of them are
// catalog content (spread evenly), the rest distinct private pages. Catalog
// pages come in donor order, as they do when pages match by position (99 % of
// the elided pages in the real-guest test); the donor is cycled through.
const std::vector<std::uint8_t>& SharedStream(int share) {
  static std::map<int, std::vector<std::uint8_t>> streams;
  auto it = streams.find(share);
  if (it != streams.end()) return it->second;
  const std::uint64_t pages = StreamPages();
  const Catalog& cat = SharedCatalog();
  test::StreamBuilder b;
  b.bytes().reserve(pages * (kPageSize + 8) + (1 << 20));
  b.Header().Config().Start(2, {{"pc.ram", pages * kPageSize}});
  b.Part(2);
  std::vector<std::uint8_t> page(kPageSize);
  std::uint64_t next_catalog_page = 0;
  for (std::uint64_t i = 0; i < pages; ++i) {
    if (static_cast<int>(i % 100) < share) {
      const std::uint64_t k = next_catalog_page++ % kCatalogPages;
      b.Page("pc.ram", i * kPageSize, cat.donor->BlockData(0) + k * kPageSize);
    } else {
      test::FillPage(page.data(), 0x5EED0000000ull + i);
      b.Page("pc.ram", i * kPageSize, page.data());
    }
  }
  b.EndSection(2).End(2).EndSection(2).Tail();
  return streams.emplace(share, std::move(b.bytes())).first->second;
}

// CPU seconds used by the whole process (all threads) so far. On a machine
// shared with other work, CPU per byte compares relay and proxy more fairly
// than wall time, which depends on how much CPU the others left.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "proxy_bench: %s: %s\n", what, s.ToString().c_str());
    std::abort();
  }
}
template <typename T>
T Take(Result<T> r, const char* what) {
  if (!r.has_value()) Check(r.error(), what);
  return std::move(*r);
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// CPU seconds of the benchmark's own threads in the timed part, by role; the
// sessions' internal threads are the process total minus these.
struct CpuByRole {
  double writer = 0, sink = 0, source = 0, destination = 0, total = 0;
};

// Names the calling thread, so that profiles show which stage costs what.
void Name(const char* name) { pthread_setname_np(pthread_self(), name); }

// The source QEMU: writes the stream, then half-closes.
void Writer(wire::Connection* c, const std::vector<std::uint8_t>& stream, double* cpu) {
  Name("qemu-src");
  for (std::size_t at = 0; at < stream.size(); at += kChunk) {
    const std::size_t n = std::min(kChunk, stream.size() - at);
    Check(c->WriteAll(std::span(stream).subspan(at, n), Deadline::After(seconds(60))), "writer");
  }
  Check(c->ShutdownWrite(), "writer shutdown");
  *cpu += ThreadCpuSeconds();
}

// The destination QEMU: reads to end of file; returns the byte count.
std::uint64_t Sink(wire::Connection* c) {
  Name("qemu-dst");
  std::vector<std::uint8_t> buf(kChunk);
  std::uint64_t total = 0;
  for (;;) {
    std::size_t n = Take(c->ReadSome(buf, Deadline::After(seconds(60))), "sink");
    if (n == 0) return total;
    total += n;
  }
}

// One relay hop: copies `in` to `out` until end of file, then half-closes.
void Pump(wire::Connection* in, wire::Connection* out, const char* name) {
  Name(name);
  std::vector<std::uint8_t> buf(kChunk);
  for (;;) {
    std::size_t n = Take(in->ReadSome(buf, Deadline::After(seconds(60))), "relay read");
    if (n == 0) break;
    Check(out->WriteAll(std::span(buf).first(n), Deadline::After(seconds(60))), "relay write");
  }
  Check(out->ShutdownWrite(), "relay shutdown");
}

struct Links {
  std::unique_ptr<wire::Connection> qemu_src, src_agent_qemu;  // source QEMU <-> source agent
  std::unique_ptr<wire::Connection> src_agent_peer, dst_agent_peer;  // agents, TCP loopback
  std::unique_ptr<wire::Connection> dst_agent_qemu, qemu_dst;  // destination agent <-> QEMU
};

Links MakeLinks() {
  Links l;
  auto a = Take(wire::ConnectionPair(), "socketpair");
  auto b = Take(wire::ConnectionPair(), "socketpair");
  l.qemu_src = std::move(a.first);
  l.src_agent_qemu = std::move(a.second);
  l.dst_agent_qemu = std::move(b.first);
  l.qemu_dst = std::move(b.second);
  auto listener = Take(wire::TcpListener::Listen("127.0.0.1", 0), "listen");
  std::thread t([&] { l.dst_agent_peer = Take(listener.Accept(Deadline::After(seconds(10))), "accept"); });
  l.src_agent_peer = Take(wire::ConnectTcp("127.0.0.1", listener.port(), Deadline::After(seconds(10))), "connect");
  t.join();
  return l;
}

void BM_Relay(benchmark::State& state) {
  const auto& stream = SharedStream(0);
  double cpu = 0;
  for (auto _ : state) {
    Links l = MakeLinks();
    const double cpu0 = ProcessCpuSeconds();
    const auto start = MonotonicClock::now();
    double writer_cpu = 0;
    std::thread w(Writer, l.qemu_src.get(), std::cref(stream), &writer_cpu);
    std::thread r1(Pump, l.src_agent_qemu.get(), l.src_agent_peer.get(), "relay-src");
    std::thread r2(Pump, l.dst_agent_peer.get(), l.dst_agent_qemu.get(), "relay-dst");
    std::uint64_t got = Sink(l.qemu_dst.get());
    w.join();
    r1.join();
    r2.join();
    state.SetIterationTime(std::chrono::duration<double>(MonotonicClock::now() - start).count());
    cpu += ProcessCpuSeconds() - cpu0;
    if (got != stream.size()) state.SkipWithError("relay lost bytes");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
  state.counters["wire_MiB"] = stream.size() / double(1 << 20);
  state.counters["cpu_s_per_GiB"] =
      cpu / (state.iterations() * double(stream.size()) / double(1ull << 30));
}

void BM_Proxy(benchmark::State& state) {
  const int share = static_cast<int>(state.range(0));
  const auto& stream = SharedStream(share);
  const Catalog& cat = SharedCatalog();
  MigrationReport last;
  double cpu = 0;
  CpuByRole roles;
  for (auto _ : state) {
    Links l = MakeLinks();
    // Handshake and donor scan are setup, not throughput: outside the timing.
    std::unique_ptr<DestinationSession> dst;
    std::thread accept([&] {
      dst = Take(DestinationSession::Accept(std::move(l.dst_agent_peer)), "accept session");
      Check(dst->Offer(cat.content.get(), cat.donor.get()), "offer");
    });
    auto src = Take(SourceSession::Connect(std::move(l.src_agent_peer), cat.content.get(),
                                           SourceParams{"bench", test::TestKind(), 0}),
                    "connect session");
    accept.join();

    const double cpu0 = ProcessCpuSeconds();
    const auto start = MonotonicClock::now();
    std::thread w(Writer, l.qemu_src.get(), std::cref(stream), &roles.writer);
    Result<MigrationReport> src_report = Err(Status::Internal("not run"));
    std::thread s([&] {
      Name("agent-src");  // the back thread it starts inherits the name
      src_report = src->Run(std::move(l.src_agent_qemu));
      roles.source += ThreadCpuSeconds();
    });
    Result<MigrationReport> dst_report = Err(Status::Internal("not run"));
    std::thread d([&] {
      Name("agent-dst");
      dst_report = dst->Run(std::move(l.dst_agent_qemu));
      roles.destination += ThreadCpuSeconds();
    });
    const double sink0 = ThreadCpuSeconds();
    std::uint64_t got = Sink(l.qemu_dst.get());
    roles.sink += ThreadCpuSeconds() - sink0;
    l.qemu_dst.reset();  // the destination QEMU closes once it has the stream
    w.join();
    s.join();
    d.join();
    state.SetIterationTime(std::chrono::duration<double>(MonotonicClock::now() - start).count());
    cpu += ProcessCpuSeconds() - cpu0;
    if (!src_report.has_value() || !dst_report.has_value() || got != stream.size()) {
      state.SkipWithError(src_report.has_value() ? (dst_report.has_value() ? "byte count"
                                                                           : "destination failed")
                                                 : "source failed");
      break;
    }
    last = *src_report;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
  state.counters["wire_MiB"] = (last.wire_bytes_sent + last.wire_bytes_received) / double(1 << 20);
  state.counters["elided"] = static_cast<double>(last.pages_elided());
  const double gib = state.iterations() * double(stream.size()) / double(1ull << 30);
  state.counters["cpu_s_per_GiB"] = cpu / gib;
  state.counters["cpu_src_fwd"] = roles.source / gib;
  state.counters["cpu_dst_fwd"] = roles.destination / gib;
  state.counters["cpu_qemus"] = (roles.writer + roles.sink) / gib;
}

BENCHMARK(BM_Relay)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Proxy)->Arg(0)->Arg(50)->Arg(90)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);

// CRC32C alone, for reference (both sides checksum every frame).
void BM_Crc32c(benchmark::State& state) {
  std::vector<std::uint8_t> buf(1 << 20, 0x5a);
  for (auto _ : state) benchmark::DoNotOptimize(wire::Crc32c(buf));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * buf.size()));
  state.SetLabel(wire::Crc32cIsHardwareAccelerated() ? "sse4.2" : "table");
}
BENCHMARK(BM_Crc32c);

}  // namespace
}  // namespace escdr

BENCHMARK_MAIN();
