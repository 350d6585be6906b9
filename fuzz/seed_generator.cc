// escdr_fuzz_seeds: writes the seed corpora of the fuzz harnesses.
//
//   escdr_fuzz_seeds STREAM_FILE OUT_DIR
//   escdr_fuzz_seeds --stream-only NAME STREAM_FILE OUT_DIR
//
// STREAM_FILE is a real QEMU migration stream of the test guest, saved by
// fuzz/save-guest-stream.sh (the guest booted, stopped, migrated to a file).
// From that stream it writes, into OUT_DIR/stream_parser/, a prefix (header,
// configuration, ram START, the first records) and a complete stream cut down
// to a few hundred KiB (the first records of the first PART section, closed
// with EOS and its footer, QEMU's SWITCHOVER_START if the stream has one
// there, then QEMU's own END section, device state and vmdesc), each checked
// with the parser. With --stream-only only the stream_parser seeds are
// written, named NAME-complete-mixed-chunks and NAME-head-small-chunks (used
// for the QEMU 10.0 streams, next to the 7.2 ones). OUT_DIR/wire_frames/ gets
// frames of every type encoded by the library, payloads from the same stream, and
// OUT_DIR/catalog/ a catalog of the stream's first pages encoded by
// EncodeCatalog. Every seed carries the harness's steering bytes
// (fuzz/fuzz_targets.h). Exit status 1 with a message on any failure.
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "escdr/catalog/catalog.h"
#include "escdr/catalog/catalog_format.h"
#include "escdr/page/page.h"
#include "escdr/qemu/stream_parser.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/coding.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"
#include "fuzz_targets.h"

namespace escdr::fuzz {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

constexpr std::size_t kHeadRecords = 100;  // records kept of the first PART and of END
// With --stream-only, also at most this many bytes of each (QEMU 10.0's first
// records are mostly PAGEs, 7.2's mostly ZEROs): the seed stays near 7.2's size.
constexpr std::uint64_t kNamedHeadBytes = 24 << 10;
constexpr std::size_t kMaxCompleteSeed = 1200 << 10;

Status WriteSeed(const fs::path& dir, const std::string& name, const Bytes& steer,
                 std::span<const std::uint8_t> body) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IOError(fmt::format("cannot create {}: {}", dir.string(), ec.message()));
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(steer.data()), static_cast<std::streamsize>(steer.size()));
  out.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
  out.close();
  if (!out) return Status::IOError(fmt::format("cannot write {}", (dir / name).string()));
  std::printf("%s/%s: %zu bytes\n", dir.c_str(), name.c_str(), steer.size() + body.size());
  return Status::OK();
}

// Where things are in a stream: phase starts, record ends, page payloads.
class Mapper : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t> b) override {
    pos += b.size();
    return Status::OK();
  }
  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
    pos += kPageSize;
    record_ends.push_back(pos);
    if (pages.size() < 64) pages.push_back({block, offset, Bytes(data, data + kPageSize)});
    return Status::OK();
  }
  Status OnZero(std::uint32_t, std::uint64_t, std::uint8_t) override {
    record_ends.push_back(pos);
    return Status::OK();
  }
  Status OnBlockList(const std::vector<RamBlockInfo>& b) override {
    blocks = b;
    start_footer_end = pos;
    return Status::OK();
  }
  Status OnPhase(StreamPhase phase) override {
    phase_at[phase] = pos;
    return Status::OK();
  }

  struct Page {
    std::uint32_t block;
    std::uint64_t offset;
    Bytes data;
  };
  std::uint64_t pos = 0;
  std::uint64_t start_footer_end = 0;
  std::vector<std::uint64_t> record_ends;
  std::vector<Page> pages;
  std::vector<RamBlockInfo> blocks;
  std::map<StreamPhase, std::uint64_t> phase_at;
};

class Counter : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t>) override { return Status::OK(); }
  Status OnPage(std::uint32_t, std::uint64_t, const std::uint8_t*) override { return Status::OK(); }
};

Status CheckComplete(const Bytes& stream) {
  Counter c;
  StreamParser p(&c);
  ESCDR_RETURN_IF_ERROR(p.Feed(stream));
  return p.Finish();
}

void PutBe(Bytes* out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// `name` empty: the seeds of the 7.2 stream ("real-..."), all three;
// otherwise "<name>-complete-mixed-chunks" and "<name>-head-small-chunks".
Status StreamSeeds(const Bytes& stream, const fs::path& out, Mapper* map,
                   const std::string& name = "") {
  StreamParser parser(map);
  ESCDR_RETURN_IF_ERROR(parser.Feed(stream));
  ESCDR_RETURN_IF_ERROR(parser.Finish());
  if (!map->phase_at.contains(StreamPhase::kRamIterate) ||
      !map->phase_at.contains(StreamPhase::kRamComplete)) {
    return Status::Internal("the saved stream has no PART or no END section");
  }
  const std::uint64_t part = map->phase_at[StreamPhase::kRamIterate];
  const std::uint64_t end = map->phase_at[StreamPhase::kRamComplete];
  const std::uint64_t tail = map->phase_at[StreamPhase::kTail];
  // The end of the last of the first kHeadRecords records in [from, to)
  // (for a named seed: that end at most kNamedHeadBytes after `from`).
  const std::uint64_t budget = name.empty() ? ~std::uint64_t{0} : kNamedHeadBytes;
  auto cut_after = [&](std::uint64_t from, std::uint64_t to) {
    std::uint64_t cut = from;
    std::size_t kept = 0;
    for (std::uint64_t e : map->record_ends) {
      if (e > from && e < to && kept < kHeadRecords && e - from <= budget) {
        cut = e;
        ++kept;
      }
    }
    return cut;
  };
  const std::uint64_t cut = cut_after(part, end);
  const std::uint64_t end_cut = cut_after(end, tail);
  const fs::path dir = out / "stream_parser";
  const std::span<const std::uint8_t> all(stream);
  const Bytes big_chunks(8, 0xff), small_chunks = {1, 2, 3, 5, 7, 64, 127, 200};
  const std::string prefix = name.empty() ? "real" : name;
  if (name.empty()) {
    ESCDR_RETURN_IF_ERROR(WriteSeed(dir, "real-head-big-chunks", big_chunks, all.first(cut)));
  }
  ESCDR_RETURN_IF_ERROR(WriteSeed(dir, prefix + "-head-small-chunks", small_chunks,
                                  all.first(map->start_footer_end + 64)));

  // The first PART and the END section each cut after kHeadRecords records
  // and closed with EOS and the footer, then QEMU's device state and vmdesc.
  const std::uint32_t ram_id = (std::uint32_t{stream[part + 1]} << 24) |
                               (std::uint32_t{stream[part + 2]} << 16) |
                               (std::uint32_t{stream[part + 3]} << 8) | stream[part + 4];
  Bytes complete;
  auto append = [&](std::uint64_t from, std::uint64_t to) {
    complete.insert(complete.end(), stream.begin() + static_cast<std::ptrdiff_t>(from),
                    stream.begin() + static_cast<std::ptrdiff_t>(to));
  };
  auto close_section = [&] {
    PutBe(&complete, 0x10, 8);  // EOS
    complete.push_back(0x7e);   // footer
    PutBe(&complete, ram_id, 4);
  };
  append(0, cut);
  close_section();
  // QEMU 10.0's SWITCHOVER_START ("08 000b 0000") comes right before END.
  static constexpr std::uint8_t kSwitchoverStart[] = {0x08, 0x00, 0x0b, 0x00, 0x00};
  if (end >= cut + sizeof kSwitchoverStart &&
      std::memcmp(stream.data() + end - sizeof kSwitchoverStart, kSwitchoverStart,
                  sizeof kSwitchoverStart) == 0) {
    append(end - sizeof kSwitchoverStart, end);
  }
  append(end, end_cut);
  close_section();
  append(tail, stream.size());
  if (Status s = CheckComplete(complete); !s.ok()) {
    return Status::Internal("the cut-down complete stream does not parse: " + s.ToString());
  }
  if (complete.size() > kMaxCompleteSeed) {
    return Status::Internal(fmt::format("the cut-down stream has {} bytes (tail of {})",
                                        complete.size(), stream.size() - tail));
  }
  ESCDR_RETURN_IF_ERROR(WriteSeed(dir, prefix + "-complete-mixed-chunks",
                                  {0xff, 0x90, 3, 0xa0, 0, 17, 0xff, 0x81}, complete));
  return Status::OK();
}

Status WireSeeds(const Bytes& stream, const Mapper& map, const fs::path& out) {
  using namespace escdr::wire;
  const fs::path dir = out / "wire_frames";
  const std::uint8_t* page = map.pages.at(0).data.data();
  Prepare prep;
  prep.migration_id = 0x1234;
  prep.catalog_checksum = 0xfeedfacecafebeefull;
  prep.catalog_entries = 5000;
  prep.window_pages = 256;
  prep.dedup_pages = 16384;
  prep.codec = static_cast<std::uint8_t>(Codec::kZstd);
  prep.vm_name = "vm-web-1";
  prep.kind = VmKind{"escdr-test", "6.1", "qemu", "7.2"};
  Availability small;
  small.catalog_entries = 20;
  small.bitmap = {0x5a, 0x01, 0x08};
  for (std::size_t i = 0; i < small.key.size(); ++i) small.key[i] = static_cast<std::uint8_t>(i * 29 + 3);
  Availability big;  // above kRawBitmapCompressThreshold: zstd
  big.catalog_entries = 80000;
  big.bitmap.assign(BitmapBytes(big.catalog_entries), 0);
  for (std::uint32_t i = 0; i < big.catalog_entries; i += 3) BitmapSet(big.bitmap, i);
  big.key = small.key;
  PageTag tag;
  for (std::size_t i = 0; i < tag.size(); ++i) tag[i] = static_cast<std::uint8_t>(0xc0 ^ (i * 13));
  Bytes refs;
  AppendRefsHeader(&refs, 7, 3);
  refs.resize(kRefsFixedSize + 3 * kRefEntrySize);
  StoreRefEntry(refs.data() + kRefsFixedSize, {0, 4, tag});
  StoreRefEntry(refs.data() + kRefsFixedSize + kRefEntrySize,
                {0x3000 | kPageContinueFlags, 9, tag});
  StoreRefEntry(refs.data() + kRefsFixedSize + 2 * kRefEntrySize, {0, 4999, {}});
  // The version 2 layouts a destination still serves (§7).
  Bytes refs_v2;
  AppendRefsHeader(&refs_v2, 7, 2);
  refs_v2.resize(kRefsFixedSize + 2 * kRefEntrySizeV2);
  StoreRefEntry(refs_v2.data() + kRefsFixedSize, {0, 4, {}}, 2);
  StoreRefEntry(refs_v2.data() + kRefsFixedSize + kRefEntrySizeV2,
                {0x3000 | kPageContinueFlags, 9, {}}, 2);
  EndSummary end{stream.size(), 3, 100, 50, 1, 2, 0};
  DestinationResult result{stream.size(), 3, 0, 42, 32768, 1500};
  const Bytes data(stream.begin(), stream.begin() + 2048);
  // Version 4: a Dup frame, and a Packed frame (zstd, then lz4) of Data,
  // Refs and Dup frames made of the stream's own bytes.
  Bytes dup(kDupFixedSize + 2 * kDupEntrySize);
  StoreFixed32(dup.data(), 2);
  StoreDupEntry(dup.data() + kDupFixedSize, {0, 0, 0x1234});
  StoreDupEntry(dup.data() + kDupFixedSize + kDupEntrySize,
                {0x5000 | kPageContinueFlags, 4096, 0x5678});
  FrameBuffer batch;
  batch.Append(FrameType::kData, Bytes(stream.begin(), stream.begin() + 16384));
  batch.Append(FrameType::kRefs, refs);
  batch.Append(FrameType::kDup, dup);
  Bytes packed_zstd, packed_lz4;
  if (!BatchPacker(CodecSpec{Codec::kZstd, 1}).Pack(batch.bytes(), &packed_zstd) ||
      !BatchPacker(CodecSpec{Codec::kLz4, 0}).Pack(batch.bytes(), &packed_lz4)) {
    return Status::Internal("the stream's first 16 KiB do not compress");
  }

  struct Seed {
    std::string name;
    FrameType type;
    Bytes payload;
  };
  const std::vector<Seed> seeds = {
      {"hello-source", FrameType::kHello, Hello{kProtocolVersion, Role::kSource}.Encode()},
      {"hello-destination", FrameType::kHello, Hello{kProtocolVersion, Role::kDestination}.Encode()},
      {"prepare", FrameType::kPrepare, prep.Encode()},
      {"availability-raw", FrameType::kAvailability, small.Encode()},
      {"availability-zstd", FrameType::kAvailability, big.Encode()},
      {"data", FrameType::kData, data},
      {"refs", FrameType::kRefs, refs},
      {"refs-v2", FrameType::kRefs, refs_v2},
      {"dup", FrameType::kDup, dup},
      {"packed-zstd", FrameType::kPacked, packed_zstd},
      {"packed-lz4", FrameType::kPacked, packed_lz4},
      {"availability-v2", FrameType::kAvailability, small.Encode(2)},
      {"page-request", FrameType::kPageRequest, PageRequest{8}.Encode()},
      {"page-response", FrameType::kPageResponse, EncodePageResponse(8, page)},
      {"ack", FrameType::kAck, Ack{10}.Encode()},
      {"return-path", FrameType::kReturnPath, Bytes{0, 1, 0, 4, 0, 0, 0, 1}},
      {"end", FrameType::kEnd, end.Encode()},
      {"result", FrameType::kResult, result.Encode()},
      {"error", FrameType::kError,
       EncodeError(Status::Corruption("page 0x3000 of pc.ram does not match its hash"))},
      {"abort", FrameType::kAbort, EncodeAbort("the source QEMU exited")},
      {"keepalive", FrameType::kKeepalive, Bytes{}},
  };
  FrameBuffer session;
  for (const Seed& s : seeds) {
    FrameBuffer one;
    one.Append(s.type, s.payload);
    session.Append(s.type, s.payload);
    ESCDR_RETURN_IF_ERROR(WriteSeed(dir, s.name, {1, 0, 0, 0, 0}, one.bytes()));
  }
  // An unknown optional frame, skipped by the reader.
  session.Append(static_cast<FrameType>(0x8abc), Bytes{1, 2, 3});
  ESCDR_RETURN_IF_ERROR(WriteSeed(dir, "session-whole-reads", {0, 0, 0, 0, 0}, session.bytes()));
  ESCDR_RETURN_IF_ERROR(WriteSeed(dir, "session-split-reads", {1, 1, 2, 60, 3}, session.bytes()));
  return Status::OK();
}

Status CatalogSeeds(const Mapper& map, const fs::path& out) {
  // The stream's first non-zero pages, static by position in their blocks.
  std::set<PageHash> hashes;
  for (const auto& p : map.pages) hashes.insert(HashPage(p.data.data()));
  std::vector<PageHash> content(hashes.begin(), hashes.end());
  std::vector<std::vector<CatalogPosition>> positions(map.blocks.size());
  for (const auto& p : map.pages) {
    auto it = std::lower_bound(content.begin(), content.end(), HashPage(p.data.data()));
    auto& list = positions[p.block];
    std::uint64_t index = p.offset / kPageSize;
    if (!list.empty() && list.back().page_index >= index) continue;
    list.push_back(CatalogPosition{index, static_cast<std::uint32_t>(it - content.begin())});
  }
  ESCDR_ASSIGN_OR_RETURN(Catalog catalog,
                         Catalog::Create(VmKind{"escdr-test", "6.1", "qemu", "7.2"}, 2, map.blocks,
                                         std::move(content), std::move(positions)));
  const std::string bytes = EncodeCatalog(catalog);
  const std::span<const std::uint8_t> body(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                           bytes.size());
  const fs::path dir = out / "catalog";
  ESCDR_RETURN_IF_ERROR(WriteSeed(dir, "real-pages", {1}, body));
  ESCDR_RETURN_IF_ERROR(WriteSeed(dir, "real-pages-checksum-as-is", {0}, body));
  return Status::OK();
}

Status Main(int argc, char** argv) {
  std::string name;
  if (argc == 5 && std::strcmp(argv[1], "--stream-only") == 0 && argv[2][0] != '\0') {
    name = argv[2];
    argv += 2;
    argc -= 2;
  }
  if (argc != 3) {
    return Status::InvalidArgument(
        "usage: escdr_fuzz_seeds [--stream-only NAME] STREAM_FILE OUT_DIR");
  }
  const std::string stream_path = argv[1];
  const fs::path out = argv[2];
  std::ifstream in(stream_path, std::ios::binary);
  Bytes stream((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (stream.empty()) return Status::IOError("cannot read the stream " + stream_path);
  std::printf("stream %s: %zu bytes\n", stream_path.c_str(), stream.size());
  Mapper map;
  ESCDR_RETURN_IF_ERROR(StreamSeeds(stream, out, &map, name));
  if (!name.empty()) return Status::OK();
  if (map.pages.empty()) return Status::Internal("the stream has no PAGE record");
  ESCDR_RETURN_IF_ERROR(WireSeeds(stream, map, out));
  return CatalogSeeds(map, out);
}

}  // namespace
}  // namespace escdr::fuzz

int main(int argc, char** argv) {
  escdr::Status s = escdr::fuzz::Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "escdr_fuzz_seeds: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
