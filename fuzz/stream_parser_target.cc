// Fuzz target: the incremental QEMU stream parser, 7.2 and 10.0 (src/qemu/stream_parser.cc).
//
// The input is parsed twice: as one chunk, and in chunks whose sizes come from
// the input's first 8 bytes. Both runs must report the same events (pages,
// zero pages, block list, phases, each at the same stream position), the same
// final status, statistics and machine type; the bytes each run reports (OnBytes
// spans and OnPage payloads, in order) must reproduce the input's bytes, all
// of them when the parse succeeded. This is the contract the migration proxy
// relies on (include/escdr/qemu/stream_parser.h).
#include <algorithm>
#include <array>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "escdr/page/page.h"
#include "escdr/qemu/stream_parser.h"
#include "fuzz_targets.h"

namespace escdr::fuzz {
namespace {

constexpr std::size_t kTapeSize = 8;

struct Event {
  int kind = 0;  // 1 phase, 2 block list, 3 page, 4 zero
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::uint64_t c = 0;
  std::uint64_t at = 0;  // bytes reported before the event
  friend bool operator==(const Event&, const Event&) = default;
};

class Recorder : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t> bytes) override {
    FUZZ_CHECK(bytes.data() != nullptr || bytes.empty());
    out.insert(out.end(), bytes.begin(), bytes.end());
    return Status::OK();
  }
  Status OnBlockList(const std::vector<RamBlockInfo>& list) override {
    FUZZ_CHECK_MSG(blocks.empty(), "OnBlockList called twice");
    blocks = list;
    events.push_back({2, list.size(), 0, 0, out.size()});
    return Status::OK();
  }
  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
    CheckPlace(block, offset);
    out.insert(out.end(), data, data + kPageSize);
    events.push_back({3, block, offset, 0, out.size() - kPageSize});
    return Status::OK();
  }
  Status OnZero(std::uint32_t block, std::uint64_t offset, std::uint8_t fill) override {
    CheckPlace(block, offset);
    events.push_back({4, block, offset, fill, out.size()});
    return Status::OK();
  }
  Status OnPhase(StreamPhase phase) override {
    events.push_back({1, static_cast<std::uint64_t>(phase), 0, 0, out.size()});
    return Status::OK();
  }

  std::vector<std::uint8_t> out;
  std::vector<Event> events;
  std::vector<RamBlockInfo> blocks;

 private:
  void CheckPlace(std::uint32_t block, std::uint64_t offset) const {
    FUZZ_CHECK_MSG(block < blocks.size(), "page of a block not in the block list");
    FUZZ_CHECK_MSG(offset % kPageSize == 0, "page offset not page-aligned");
    FUZZ_CHECK_MSG(offset < blocks[block].length, "page offset beyond its block");
  }
};

struct Run {
  Recorder rec;
  Status status;
  StreamStats stats;
  std::vector<RamBlockInfo> blocks;
  bool ram_complete = false;
  std::string machine;
};

// Chunk sizes from the tape: 0 -> an empty chunk, 1..127 -> that many bytes,
// 128..255 -> (b - 127) * 64 bytes (64 .. 8192, around a page).
std::size_t ChunkSize(std::uint8_t b) {
  if (b < 128) return b;
  return static_cast<std::size_t>(b - 127) * 64;
}

void Parse(std::span<const std::uint8_t> stream, const std::uint8_t* tape, Run* run) {
  StreamParser parser(&run->rec);
  Status s;
  if (tape == nullptr) {
    s = parser.Feed(stream);
  } else {
    bool all_empty = std::all_of(tape, tape + kTapeSize, [](std::uint8_t b) { return b == 0; });
    // At least one Feed, as in the whole-input run (an empty stream too).
    std::size_t pos = 0;
    std::size_t i = 0;
    do {
      std::size_t n = all_empty ? 1 : ChunkSize(tape[i++ % kTapeSize]);
      n = std::min(n, stream.size() - pos);
      // A chunk of its own copy, so ASan sees reads past its end.
      std::vector<std::uint8_t> chunk(stream.begin() + static_cast<std::ptrdiff_t>(pos),
                                      stream.begin() + static_cast<std::ptrdiff_t>(pos + n));
      s = parser.Feed(chunk);
      pos += n;
    } while (s.ok() && pos < stream.size());
  }
  if (s.ok()) s = parser.Finish();
  // After an error, every later call fails with the same error.
  if (!s.ok()) {
    Status again = parser.Feed(stream.first(std::min<std::size_t>(stream.size(), 1)));
    FUZZ_CHECK_MSG(again.code() == s.code() && again.message() == s.message(),
                   "Feed after an error did not return that error");
  }
  run->status = s;
  run->stats = parser.stats();
  run->blocks = parser.blocks();
  run->ram_complete = parser.ram_complete();
  run->machine = parser.machine();
}

}  // namespace

int FuzzStreamParser(const std::uint8_t* data, std::size_t size) {
  if (size < kTapeSize) return 0;
  const std::uint8_t* tape = data;
  // Copied so that ASan sees any read past the end of the stream.
  std::vector<std::uint8_t> copy(data + kTapeSize, data + size);
  std::span<const std::uint8_t> stream(copy);

  Run whole;
  Parse(stream, nullptr, &whole);
  Run chunked;
  Parse(stream, tape, &chunked);

  for (const Run* r : {&whole, &chunked}) {
    // Reported bytes are the input's bytes in order: a prefix after an
    // error, all of them after success.
    FUZZ_CHECK_MSG(r->rec.out.size() <= stream.size(), "more bytes reported than fed");
    FUZZ_CHECK_MSG(std::equal(r->rec.out.begin(), r->rec.out.end(), stream.begin()),
                   "reported bytes differ from the input");
    if (r->status.ok()) {
      FUZZ_CHECK_MSG(r->rec.out.size() == stream.size(), "not every byte was reported");
      FUZZ_CHECK(r->ram_complete);
    }
    FUZZ_CHECK_MSG(r->blocks == r->rec.blocks || r->rec.blocks.empty(),
                   "blocks() differs from the block list reported");
  }
  // The same for any chunking: status, events, statistics, block list.
  const std::string detail = whole.status.ToString() + " vs " + chunked.status.ToString();
  FUZZ_CHECK_MSG(whole.status.code() == chunked.status.code(), detail.c_str());
  FUZZ_CHECK_MSG(whole.status.message() == chunked.status.message(), detail.c_str());
  FUZZ_CHECK_MSG(whole.rec.events == chunked.rec.events, "events differ between chunkings");
  FUZZ_CHECK(whole.blocks == chunked.blocks);
  FUZZ_CHECK(whole.ram_complete == chunked.ram_complete);
  FUZZ_CHECK_MSG(whole.machine == chunked.machine, "machine type differs between chunkings");
  if (whole.status.ok()) {
    FUZZ_CHECK(whole.stats.bytes == chunked.stats.bytes);
    FUZZ_CHECK(whole.stats.page_records == chunked.stats.page_records);
    FUZZ_CHECK(whole.stats.zero_records == chunked.stats.zero_records);
    FUZZ_CHECK(whole.stats.ram_sections == chunked.stats.ram_sections);
    FUZZ_CHECK(whole.stats.tail_bytes == chunked.stats.tail_bytes);
    FUZZ_CHECK(whole.stats.switchover_starts == chunked.stats.switchover_starts);
  }
  return 0;
}

}  // namespace escdr::fuzz
