// Test support for the migration sessions: an in-memory donor image,
// synthetic migration scenarios, fake source and destination QEMUs, and a
// harness that runs a whole migration over real sockets (loopback TCP between
// the agents, socket pairs to the QEMUs).
//
// Header-only; used by src/migrate/*_test.cc and bench/proxy_bench.cc, not
// part of the library. Streams are built with qemu/stream_builder.h.
#ifndef ESCDR_MIGRATE_SESSION_TEST_UTIL_H_
#define ESCDR_MIGRATE_SESSION_TEST_UTIL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "escdr/image/memory_image.h"
#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/migrate/static_content.h"
#include "escdr/page/page.h"
#include "escdr/wire/connection.h"
#include "escdr/wire/socket.h"
#include "qemu/stream_builder.h"

namespace escdr::test {

// A MemoryImage held in vectors; tests may change its pages at any time.
class VectorImage final : public MemoryImage {
 public:
  explicit VectorImage(std::vector<RamBlockInfo> blocks) : blocks_(std::move(blocks)) {
    for (const RamBlockInfo& b : blocks_) data_.emplace_back(b.length, 0);
  }
  const std::vector<RamBlockInfo>& blocks() const override { return blocks_; }
  const std::uint8_t* BlockData(std::size_t block) const override { return data_[block].data(); }
  const std::string& source() const override { return source_; }
  std::uint8_t* MutablePage(std::size_t block, std::uint64_t offset) {
    return data_[block].data() + offset;
  }

 private:
  std::vector<RamBlockInfo> blocks_;
  std::vector<std::vector<std::uint8_t>> data_;
  std::string source_ = "test donor";
};

// Fills a page with bytes that depend only on `seed` (never all zero).
inline void FillPage(std::uint8_t* page, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (std::size_t i = 0; i < kPageSize; i += 8) {
    x += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(page + i, &z, 8);
  }
  page[0] |= 1;
}

inline VmKind TestKind() { return VmKind{"debian", "12", "qemu", "7.2"}; }

// A synthetic migration of `ram_pages` pages of block "pc.ram" plus a small
// "vga.vram". Page i of pc.ram is, by i % 10: 0-5 static by position (the
// donor holds it at the same offset), 6-7 static by content (the donor holds
// it in vga.vram: "KASLR"), 8 private (not catalog content), 9 zero. The
// stream sends every page in a first PART, a few vga.vram pages (block
// switches: records with an idstr), every 5th pc.ram page again in a second
// PART (private ones with new content), the last pages in END, then device
// state, EOF and vmdesc.
struct ScenarioOptions {
  std::uint64_t ram_pages = 1000;
  bool return_path = true;
  std::uint64_t seed = 1;
};

struct Scenario {
  std::vector<RamBlockInfo> blocks;
  std::vector<std::uint8_t> stream;
  std::unique_ptr<VectorImage> donor;
  std::unique_ptr<StaticContentTable> content;
  // Expected elision if the donor offers everything and the window is large.
  std::uint64_t expect_by_position = 0;
  std::uint64_t expect_by_content = 0;
  std::uint64_t page_records = 0;
  std::uint64_t zero_records = 0;
  // pc.ram offsets of the pages static by position (for tests that change them).
  std::vector<std::uint64_t> position_offsets;
};

inline Scenario MakeScenario(const ScenarioOptions& o = {}) {
  Scenario s;
  const std::uint64_t vram_pages = (o.ram_pages + 9) / 10 * 2 + 16;
  s.blocks = {{"pc.ram", o.ram_pages * kPageSize}, {"vga.vram", vram_pages * kPageSize}};
  s.donor = std::make_unique<VectorImage>(s.blocks);
  std::vector<PageHash> hashes;
  std::vector<StaticContentTable::Position> positions;
  std::vector<std::uint8_t> page(kPageSize);
  const std::uint64_t base = o.seed << 40;
  std::uint64_t vram_next = 0;

  StreamBuilder b;
  b.Header().Config();
  if (o.return_path) b.ReturnPathAndPing();
  b.Start(2, s.blocks);

  auto send_ram_page = [&](std::uint64_t i, std::uint64_t round) {
    const std::uint64_t off = i * kPageSize;
    switch (i % 10) {
      case 0: case 1: case 2: case 3: case 4: case 5:
        FillPage(page.data(), base + i);
        b.Page("pc.ram", off, page.data());
        ++s.expect_by_position;
        ++s.page_records;
        break;
      case 6: case 7:
        FillPage(page.data(), base + 1000000 + i);
        b.Page("pc.ram", off, page.data());
        ++s.expect_by_content;
        ++s.page_records;
        break;
      case 8:
        FillPage(page.data(), base + 2000000 + i + round * 7777777);
        b.Page("pc.ram", off, page.data());
        ++s.page_records;
        break;
      default:
        b.Zero("pc.ram", off);
        ++s.zero_records;
    }
  };
  // Catalog and donor.
  for (std::uint64_t i = 0; i < o.ram_pages; ++i) {
    const std::uint64_t off = i * kPageSize;
    if (i % 10 <= 5) {
      FillPage(s.donor->MutablePage(0, off), base + i);
      PageHash h = HashPage(s.donor->MutablePage(0, off));
      hashes.push_back(h);
      positions.push_back({"pc.ram", off, h});
      s.position_offsets.push_back(off);
    } else if (i % 10 <= 7) {
      std::uint8_t* p = s.donor->MutablePage(1, vram_next++ * kPageSize);
      FillPage(p, base + 1000000 + i);
      hashes.push_back(HashPage(p));
    }
  }
  // Round 1: every page; a few vga.vram pages in the middle switch blocks.
  b.Part(2);
  for (std::uint64_t i = 0; i < o.ram_pages; ++i) {
    send_ram_page(i, 0);
    if (i == o.ram_pages / 2) {
      for (std::uint64_t v = 0; v < 4; ++v) {
        FillPage(page.data(), base + 3000000 + v);
        b.Page("vga.vram", (vram_pages - 1 - v) * kPageSize, page.data());
        ++s.page_records;
      }
    }
  }
  b.EndSection(2);
  // Round 2: every 5th page again.
  b.Part(2);
  for (std::uint64_t i = 0; i < o.ram_pages; i += 5) send_ram_page(i, 1);
  b.EndSection(2);
  // END: the last 10 pages once more (the VM is stopped).
  b.End(2);
  for (std::uint64_t i = o.ram_pages >= 10 ? o.ram_pages - 10 : 0; i < o.ram_pages; ++i) {
    send_ram_page(i, 2);
  }
  b.EndSection(2);
  b.Tail();
  s.stream = std::move(b.bytes());
  auto table = StaticContentTable::Create(TestKind(), 0xC0FFEEull + o.seed, std::move(hashes),
                                          std::move(positions));
  s.content = std::move(*table);
  return s;
}

// QEMU's return-path messages (stream spec §2.5).
inline std::vector<std::uint8_t> PongMessage(std::uint32_t v = 1) {
  return {0, 2, 0, 4, std::uint8_t(v >> 24), std::uint8_t(v >> 16), std::uint8_t(v >> 8),
          std::uint8_t(v)};
}
inline std::vector<std::uint8_t> ShutMessage(std::uint32_t v = 0) {
  return {0, 1, 0, 4, 0, 0, 0, std::uint8_t(v)};
}

// Plays the source QEMU: writes `stream` in `chunk`-byte writes, then (return
// path on) reads until `expect_back` bytes came back or the socket closed,
// then closes its socket.
//
// `written`, if set, counts the stream bytes the session has accepted.
class FakeSourceQemu {
 public:
  FakeSourceQemu(std::unique_ptr<wire::Connection> conn, std::span<const std::uint8_t> stream,
                 std::size_t expect_back, std::size_t chunk = 100000,
                 std::atomic<std::uint64_t>* written = nullptr)
      : conn_(std::move(conn)),
        written_(written),
        thread_([this, stream, expect_back, chunk] { Play(stream, expect_back, chunk); }) {}
  ~FakeSourceQemu() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<std::uint8_t>& returned() const { return back_; }
  const Status& write_status() const { return write_status_; }

 private:
  void Play(std::span<const std::uint8_t> stream, std::size_t expect_back, std::size_t chunk) {
    const Deadline deadline = Deadline::After(std::chrono::seconds(60));
    for (std::size_t at = 0; at < stream.size() && write_status_.ok(); at += chunk) {
      const std::size_t n = std::min(chunk, stream.size() - at);
      write_status_ = conn_->WriteAll(stream.subspan(at, n), deadline);
      if (write_status_.ok() && written_ != nullptr) written_->fetch_add(n);
    }
    std::vector<std::uint8_t> buf(4096);
    while (expect_back > 0 && back_.size() < expect_back) {
      auto n = conn_->ReadSome(buf, deadline);
      if (!n.has_value() || *n == 0) break;
      back_.insert(back_.end(), buf.begin(), buf.begin() + *n);
    }
    conn_.reset();  // QEMU closes its migration socket
  }

  std::unique_ptr<wire::Connection> conn_;
  std::atomic<std::uint64_t>* written_;
  std::vector<std::uint8_t> back_;
  Status write_status_;
  std::thread thread_;
};

// How a fake destination QEMU reads: at most `read_bytes` per read, and
// `before_read(bytes received so far)` is called before each read (a test may
// block in it to stall the QEMU, or sleep to slow it down).
struct DestinationQemuPace {
  std::size_t read_bytes = 1 << 16;
  std::function<void(std::uint64_t)> before_read;
};

// True if `got` is a prefix of `full`.
inline bool IsPrefix(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& full) {
  return got.size() <= full.size() && std::equal(got.begin(), got.end(), full.begin());
}

// Fault injection on the source agent's connection to the destination.
class FaultyConnection : public wire::ConnectionWrapper {
 public:
  enum class Fault { kFlipByte, kCutConnection };
  // The fault hits the write that carries byte `at` of the outgoing stream.
  FaultyConnection(std::unique_ptr<wire::Connection> target, Fault fault, std::uint64_t at)
      : ConnectionWrapper(std::move(target)), fault_(fault), at_(at) {}

  Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                   Deadline deadline) override {
    std::vector<std::uint8_t> bytes;
    for (const auto& p : parts) bytes.insert(bytes.end(), p.begin(), p.end());
    const std::uint64_t before = written_;
    written_ += bytes.size();
    if (fired_ || written_ <= at_) return WriteAll(bytes, deadline);
    fired_ = true;
    if (fault_ == Fault::kFlipByte) {
      bytes[at_ - before] ^= 0x20;
      return WriteAll(bytes, deadline);
    }
    // Cut: write up to the byte, then the link dies.
    Status s = ConnectionWrapper::WriteAll(std::span(bytes).first(at_ - before), deadline);
    Shutdown();
    return s.ok() ? Status::Unavailable("test cut the connection") : s;
  }

 private:
  Status WriteAll(std::span<const std::uint8_t> data, Deadline deadline) {
    std::span<const std::uint8_t> one[1] = {data};
    return ConnectionWrapper::WriteAllV(one, deadline);
  }
  Fault fault_;
  std::uint64_t at_;
  std::uint64_t written_ = 0;
  bool fired_ = false;
};

// Plays the destination QEMU: reads the stream; after its first read writes
// `pong`; with a return path, once `stream_size` bytes arrived, writes `shut`
// and closes; without, reads to end of file and closes.
class FakeDestinationQemu {
 public:
  FakeDestinationQemu(std::unique_ptr<wire::Connection> conn, std::size_t stream_size,
                      bool return_path, std::vector<std::uint8_t> pong = PongMessage(),
                      std::vector<std::uint8_t> shut = ShutMessage(),
                      DestinationQemuPace pace = {})
      : conn_(std::move(conn)),
        pace_(std::move(pace)),
        thread_([this, stream_size, return_path, pong, shut] {
          Play(stream_size, return_path, pong, shut);
        }) {}
  ~FakeDestinationQemu() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<std::uint8_t>& received() const { return got_; }

 private:
  void Play(std::size_t stream_size, bool return_path, const std::vector<std::uint8_t>& pong,
            const std::vector<std::uint8_t>& shut) {
    const Deadline deadline = Deadline::After(std::chrono::seconds(60));
    std::vector<std::uint8_t> buf(pace_.read_bytes);
    bool ponged = !return_path;
    for (;;) {
      if (return_path && got_.size() >= stream_size) {
        (void)conn_->WriteAll(shut, deadline);
        break;
      }
      if (pace_.before_read) pace_.before_read(got_.size());
      auto n = conn_->ReadSome(buf, deadline);
      if (!n.has_value() || *n == 0) break;
      got_.insert(got_.end(), buf.begin(), buf.begin() + *n);
      if (!ponged) {
        (void)conn_->WriteAll(pong, deadline);
        ponged = true;
      }
    }
    conn_.reset();
  }

  std::unique_ptr<wire::Connection> conn_;
  DestinationQemuPace pace_;
  std::vector<std::uint8_t> got_;
  std::thread thread_;
};

// Everything a migration run produced.
struct Outcome {
  Result<MigrationReport> source = Err(Status::Internal("not run"));
  Result<MigrationReport> destination = Err(Status::Internal("not run"));
  std::vector<std::uint8_t> destination_qemu_bytes;  // what the destination QEMU read
  std::vector<std::uint8_t> source_qemu_returned;    // return-path bytes the source QEMU got
};

struct RunOptions {
  SourceOptions source;
  DestinationOptions destination;
  bool return_path = true;
  bool source_has_catalog = true;
  bool destination_offers = true;  // false: Offer(nullptr, nullptr)
  // The destination's catalog, if not the source's (it must have the same
  // kind, checksum and size).
  const StaticContent* destination_content = nullptr;
  std::size_t source_qemu_chunk = 100000;
  // Counts the stream bytes the source session accepted from its QEMU.
  std::atomic<std::uint64_t>* source_qemu_written = nullptr;
  DestinationQemuPace destination_qemu;
  std::vector<std::uint8_t> shut = ShutMessage();
  // Wraps the source agent's connection to the destination (fault injection).
  std::function<std::unique_ptr<wire::Connection>(std::unique_ptr<wire::Connection>)> wrap_source_peer;
  // Called on the destination after Offer() and before Run() (e.g. to change donor pages).
  std::function<void()> after_offer;
  // Called with the source session once Connect() succeeded (e.g. to cancel
  // it from another thread), and after its Run() returned, before it is
  // destroyed (to join that thread).
  std::function<void(SourceSession*)> on_source;
  std::function<void()> after_source_run;
};

inline RunOptions FastTimeouts(RunOptions r = {}) {
  r.source.idle_timeout = std::chrono::seconds(20);
  r.destination.idle_timeout = std::chrono::seconds(20);
  r.destination.qemu_finish_timeout = std::chrono::seconds(20);
  return r;
}

// Runs one migration of `stream` end to end and returns what happened.
inline Outcome RunMigration(std::span<const std::uint8_t> stream, const StaticContent* content,
                            const MemoryImage* donor, const RunOptions& o) {
  Outcome out;
  auto listener = wire::TcpListener::Listen("127.0.0.1", 0);
  if (!listener.has_value()) {
    out.source = out.destination = Err(listener.error());
    return out;
  }
  auto src_qemu = wire::ConnectionPair();
  auto dst_qemu = wire::ConnectionPair();
  if (!src_qemu.has_value() || !dst_qemu.has_value()) {
    out.source = out.destination = Err(Status::IOError("cannot create socket pairs"));
    return out;
  }
  const std::size_t expect_back = o.return_path ? PongMessage().size() + o.shut.size() : 0;
  std::optional<FakeSourceQemu> fake_src;
  std::optional<FakeDestinationQemu> fake_dst;
  fake_src.emplace(std::move(src_qemu->first), stream, expect_back, o.source_qemu_chunk,
                   o.source_qemu_written);
  fake_dst.emplace(std::move(dst_qemu->first), stream.size(), o.return_path, PongMessage(), o.shut,
                   o.destination_qemu);

  std::thread dest([&] {
    auto peer = listener->Accept(Deadline::After(std::chrono::seconds(30)));
    if (!peer.has_value()) {
      out.destination = Err(peer.error());
      return;
    }
    auto session = DestinationSession::Accept(std::move(*peer), o.destination);
    if (!session.has_value()) {
      out.destination = Err(session.error());
      return;
    }
    const StaticContent* dest_content =
        o.destination_content != nullptr ? o.destination_content : content;
    Status s = o.destination_offers ? (*session)->Offer(dest_content, donor)
                                    : (*session)->Offer(nullptr, nullptr);
    if (!s.ok()) {
      out.destination = Err(s);
      return;
    }
    if (o.after_offer) o.after_offer();
    out.destination = (*session)->Run(std::move(dst_qemu->second));
  });
  auto peer = wire::ConnectTcp("127.0.0.1", listener->port(), Deadline::After(std::chrono::seconds(30)));
  std::unique_ptr<wire::Connection> src_qemu_end = std::move(src_qemu->second);
  if (!peer.has_value()) {
    out.source = Err(peer.error());
  } else {
    std::unique_ptr<wire::Connection> link = std::move(*peer);
    if (o.wrap_source_peer) link = o.wrap_source_peer(std::move(link));
    SourceParams params{"vm-test", content != nullptr ? content->kind() : TestKind(), 0};
    auto session = SourceSession::Connect(std::move(link),
                                          o.source_has_catalog ? content : nullptr, params,
                                          o.source);
    if (!session.has_value()) {
      out.source = Err(session.error());
      src_qemu_end.reset();
    } else {
      if (o.on_source) o.on_source(session->get());
      out.source = (*session)->Run(std::move(src_qemu_end));
      if (o.after_source_run) o.after_source_run();
    }
  }
  dest.join();
  dst_qemu->second.reset();  // if the destination never ran, its QEMU sees end of file
  fake_src->Join();
  fake_dst->Join();
  out.destination_qemu_bytes = fake_dst->received();
  out.source_qemu_returned = fake_src->returned();
  return out;
}

}  // namespace escdr::test

#endif  // ESCDR_MIGRATE_SESSION_TEST_UTIL_H_
