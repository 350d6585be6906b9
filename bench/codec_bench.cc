// The wire codec on a recorded QEMU migration stream: which codec and level
// escdr compresses with, and what in-migration dedup finds.
//
//   build/bench/codec_bench --stream FILE [--batch BYTES] [--dedup-pages N,...]
//
// FILE is a real stream (fuzz/save-guest-stream.sh GUEST_DIR FILE MIB saves
// the test guest's). The stream is cut into batches of --batch bytes
// (default 256 KiB, the source agent's read from its QEMU), each framed as
// one Data frame, as the source session frames what it forwards, and:
//
//   * each codec (lz4, zstd at levels -5, -1, 1, 3, 6) packs every batch
//     with BatchPacker (a batch that would not shrink goes as it is, as on
//     the wire) and BatchUnpacker decodes every packed one; the table gives
//     the bytes out / in, and the thread CPU time per GiB of stream each way,
//     as GiB/s per core, and the cores each side needs for 10 Gbit/s of
//     wire (1.25e9 bytes/s of output);
//   * the stream is parsed and every PAGE payload looked up in a DedupIndex
//     of each --dedup-pages size (default 4096,16384,65536): the share of
//     PAGE records that would travel as Dup entries.
//
// CPU times are of the calling thread (CLOCK_THREAD_CPUTIME_ID), so other
// load on the machine slows the run but changes the figures little.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "escdr/page/page.h"
#include "escdr/qemu/stream_parser.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/dedup.h"
#include "escdr/wire/frame_io.h"

namespace escdr {
namespace {

struct Config {
  std::string stream;
  std::size_t batch = 256 << 10;
  std::vector<std::uint32_t> dedup_pages = {4096, 16384, 65536};
};

class DedupCounter : public StreamVisitor {
 public:
  explicit DedupCounter(std::uint32_t pages) : index_(wire::DedupIndex::Create(pages).value()) {}
  Status OnBytes(std::span<const std::uint8_t> bytes) override {
    position_ += bytes.size();
    return Status::OK();
  }
  Status OnPage(std::uint32_t, std::uint64_t, const std::uint8_t* data) override {
    ++pages_;
    const std::uint64_t key = wire::DedupKey(HashPage(data));
    if (index_.Find(key, data, position_)) ++dups_;
    index_.Insert(key, data, position_);
    position_ += kPageSize;
    return Status::OK();
  }
  std::uint64_t pages_ = 0;
  std::uint64_t dups_ = 0;

 private:
  wire::DedupIndex index_;
  std::uint64_t position_ = 0;
};

int Run(const Config& cfg) {
  std::ifstream in(cfg.stream, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "codec_bench: cannot read %s\n", cfg.stream.c_str());
    return 1;
  }
  const std::vector<std::uint8_t> stream((std::istreambuf_iterator<char>(in)),
                                         std::istreambuf_iterator<char>());
  std::vector<std::vector<std::uint8_t>> batches;
  for (std::size_t at = 0; at < stream.size(); at += cfg.batch) {
    const std::size_t n = std::min(cfg.batch, stream.size() - at);
    wire::FrameBuffer b;
    for (std::size_t k = 0; k < n; k += wire::kMaxDataPayload) {
      b.Append(wire::FrameType::kData,
               std::span(stream).subspan(at + k, std::min(wire::kMaxDataPayload, n - k)));
    }
    batches.emplace_back(b.bytes().begin(), b.bytes().end());
  }
  std::printf("stream %s: %.1f MiB in %zu batches of %zu KiB\n\n", cfg.stream.c_str(),
              stream.size() / 1048576.0, batches.size(), cfg.batch >> 10);
  std::printf("| codec | out / in | batches packed | compress GiB/s per core | decompress GiB/s "
              "per core | cores for 10 Gbit/s (compress / decompress) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const char* name : {"lz4", "zstd:-5", "zstd:-1", "zstd:1", "zstd:3", "zstd:6"}) {
    const wire::CodecSpec spec = wire::ParseCodecSpec(name).value();
    wire::BatchPacker packer(spec);
    wire::BatchUnpacker unpacker;
    std::vector<std::vector<std::uint8_t>> packed(batches.size());
    std::vector<bool> is_packed(batches.size());
    std::uint64_t in_bytes = 0, out_bytes = 0, npacked = 0;
    const auto c0 = ThreadCpuTime();
    for (std::size_t i = 0; i < batches.size(); ++i) {
      is_packed[i] = packer.Pack(batches[i], &packed[i]);
      in_bytes += batches[i].size();
      out_bytes += is_packed[i] ? wire::kFrameHeaderSize + packed[i].size() : batches[i].size();
      npacked += is_packed[i];
    }
    const auto c1 = ThreadCpuTime();
    for (std::size_t i = 0; i < batches.size(); ++i) {
      if (!is_packed[i]) continue;
      auto d = unpacker.Unpack(packed[i]);
      if (!d.has_value() || !std::equal(d->begin(), d->end(), batches[i].begin(), batches[i].end())) {
        std::fprintf(stderr, "codec_bench: %s batch %zu does not round-trip\n", name, i);
        return 1;
      }
    }
    const auto c2 = ThreadCpuTime();
    const double cs = std::chrono::duration<double>(c1 - c0).count();
    const double ds = std::chrono::duration<double>(c2 - c1).count();
    const double ratio = static_cast<double>(out_bytes) / static_cast<double>(in_bytes);
    // At 10 Gbit/s of output the compressor eats 1.25e9 / ratio bytes/s.
    const double want = 1.25e9 / ratio;
    const double crate = static_cast<double>(in_bytes) / cs;
    const double drate = static_cast<double>(in_bytes) / std::max(ds, 1e-9);
    std::printf("| %s | %.3f | %llu / %zu | %.2f | %.2f | %.1f / %.1f |\n", name, ratio,
                static_cast<unsigned long long>(npacked), batches.size(), crate / (1 << 30),
                drate / (1 << 30), want / crate, want / drate);
  }
  std::printf("\n| dedup history | PAGE records | sent as Dup | share |\n|---:|---:|---:|---:|\n");
  for (std::uint32_t pages : cfg.dedup_pages) {
    DedupCounter counter(pages);
    StreamParser parser(&counter);
    Status s = parser.Feed(stream);
    if (s.ok()) s = parser.Finish();
    if (!s.ok()) {
      std::fprintf(stderr, "codec_bench: %s\n", s.message().c_str());
      return 1;
    }
    std::printf("| %u pages (%u MiB) | %llu | %llu | %.1f %% |\n", pages, pages / 256,
                static_cast<unsigned long long>(counter.pages_),
                static_cast<unsigned long long>(counter.dups_),
                100.0 * static_cast<double>(counter.dups_) /
                    static_cast<double>(std::max<std::uint64_t>(counter.pages_, 1)));
  }
  return 0;
}

}  // namespace
}  // namespace escdr

int main(int argc, char** argv) {
  escdr::Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "codec_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--stream") {
      cfg.stream = next();
    } else if (a == "--batch") {
      cfg.batch = std::stoull(next());
    } else if (a == "--dedup-pages") {
      cfg.dedup_pages.clear();
      std::string list = next();
      for (std::size_t at = 0; at <= list.size();) {
        std::size_t comma = list.find(',', at);
        if (comma == std::string::npos) comma = list.size();
        cfg.dedup_pages.push_back(static_cast<std::uint32_t>(std::stoul(list.substr(at, comma - at))));
        at = comma + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: codec_bench --stream FILE [--batch BYTES] [--dedup-pages N,...]\n");
      return 2;
    }
  }
  if (cfg.stream.empty() || cfg.batch == 0) {
    std::fprintf(stderr, "codec_bench: --stream FILE is required\n");
    return 2;
  }
  return escdr::Run(cfg);
}
