// The cost of TLS on the agents' connections: bytes per second through one
// TCP loopback connection, plaintext (wire::ConnectTcp, as with --insecure)
// and TLS 1.3 (wire::TlsContext with mutual certificates, and with a
// pre-shared key), in the frame sizes a migration uses: 4 MiB Data frames
// (the stream relayed in bulk) and 16 B + 4 KiB (a frame header and one page,
// written as two parts of one gather write, as PageResponse is). A writer
// thread sends, the benchmark thread reads; the rate is payload bytes per
// second of wall time, and cpu_s_per_GiB: CPU seconds (user + system, both
// threads, from getrusage) per GiB of payload, which a loaded machine
// disturbs less than wall time. Also the handshake: connect + full handshake
// + close.
//
// Run: build-dir/bench/tls_bench [--benchmark_repetitions=3]
// Environment: ESCDR_BENCH_TLS_MIB (bytes per iteration, default 512).
// The figures measured are in docs/benchmarks-migration.md §10.
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "escdr/sys/temp_dir.h"
#include "escdr/wire/socket.h"
#include "escdr/wire/tls.h"
#include "escdr/wire/tls_ca.h"

namespace escdr {
namespace {

using std::chrono::seconds;

enum Mode { kPlain = 0, kCertificates = 1, kPsk = 2 };

std::uint64_t BytesPerIteration() {
  const char* env = std::getenv("ESCDR_BENCH_TLS_MIB");
  std::uint64_t mib = env != nullptr ? std::strtoull(env, nullptr, 10) : 512;
  return std::max<std::uint64_t>(mib, 1) << 20;
}

struct Credentials {
  TempDir dir;
  std::shared_ptr<const wire::TlsContext> certs_client, certs_server, psk;
};

const Credentials& Creds() {
  static const Credentials* c = [] {
    auto* cr = new Credentials{TempDir::Create("escdr-tls-bench").value(), nullptr, nullptr, nullptr};
    const std::string ca = cr->dir.File("ca");
    if (!wire::CreateCa(ca, "bench-ca", 1).ok() ||
        !wire::IssueCertificate(ca, "a", 1, wire::PeerRole::kAgent).ok() ||
        !wire::IssueCertificate(ca, "b", 1, wire::PeerRole::kAgent).ok() ||
        !wire::WritePskFile(cr->dir.File("k")).ok()) {
      std::abort();
    }
    cr->certs_client = wire::TlsContext::FromDirectory(ca, "a").value();
    cr->certs_server = wire::TlsContext::FromDirectory(ca, "b").value();
    cr->psk = wire::TlsContext::FromPskFile(cr->dir.File("k")).value();
    return cr;
  }();
  return *c;
}

struct Pair {
  std::unique_ptr<wire::Connection> writer, reader;
};

Pair Connect(Mode mode) {
  auto listener = wire::TcpListener::Listen("127.0.0.1", 0).value();
  Pair p;
  std::thread t([&] { p.reader = listener.Accept(Deadline::After(seconds(10))).value(); });
  p.writer = wire::ConnectTcp("127.0.0.1", listener.port(), Deadline::After(seconds(10))).value();
  t.join();
  if (mode == kPlain) return p;
  const Credentials& c = Creds();
  auto client = mode == kPsk ? c.psk : c.certs_client;
  auto server = mode == kPsk ? c.psk : c.certs_server;
  std::unique_ptr<wire::TlsConnection> r;
  std::thread s([&] { r = server->Accept(std::move(p.reader), Deadline::After(seconds(10))).value(); });
  auto w = client->Connect(std::move(p.writer), Deadline::After(seconds(10))).value();
  s.join();
  return {std::move(w), std::move(r)};
}

double CpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

const char* ModeName(Mode m) {
  return m == kPlain ? "plaintext" : m == kCertificates ? "tls-certificates" : "tls-psk";
}

// range(0): Mode; range(1): payload bytes per write (a frame), split as
// header (16 B) + payload when it is a page.
void BM_Stream(benchmark::State& state) {
  const Mode mode = static_cast<Mode>(state.range(0));
  const std::size_t frame = static_cast<std::size_t>(state.range(1));
  const std::uint64_t total = BytesPerIteration() / frame * frame;
  state.SetLabel(ModeName(mode));
  std::vector<std::uint8_t> header(16, 0xa5), payload(frame);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::uint8_t>(i * 31);
  std::vector<std::uint8_t> buf(256 << 10);
  double cpu = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Pair p = Connect(mode);
    const double cpu_start = CpuSeconds();
    state.ResumeTiming();
    std::thread w([&] {
      std::span<const std::uint8_t> parts[2] = {header, payload};
      for (std::uint64_t sent = 0; sent < total; sent += frame) {
        if (!p.writer->WriteAllV(parts, Deadline::After(seconds(60))).ok()) std::abort();
      }
      (void)p.writer->ShutdownWrite();
    });
    std::uint64_t got = 0;
    for (;;) {
      auto n = p.reader->ReadSome(buf, Deadline::After(seconds(60)));
      if (!n.has_value() || *n == 0) break;
      got += *n;
    }
    w.join();
    cpu += CpuSeconds() - cpu_start;
    if (got != total / frame * (frame + header.size())) state.SkipWithError("short transfer");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * total));
  state.counters["cpu_s_per_GiB"] =
      cpu / (static_cast<double>(state.iterations() * total) / (1u << 30));
}
BENCHMARK(BM_Stream)
    ->ArgsProduct({{kPlain, kCertificates, kPsk}, {4 << 20, 4096}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Handshake(benchmark::State& state) {
  const Mode mode = static_cast<Mode>(state.range(0));
  state.SetLabel(ModeName(mode));
  for (auto _ : state) {
    Pair p = Connect(mode);
    benchmark::DoNotOptimize(p.writer.get());
  }
}
BENCHMARK(BM_Handshake)->Arg(kPlain)->Arg(kCertificates)->Arg(kPsk)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace escdr

BENCHMARK_MAIN();
