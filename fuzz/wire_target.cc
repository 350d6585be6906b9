// Fuzz target: the wire-frame reader and every payload decoder (src/wire).
//
// The frames are read by a FrameReader from an in-memory Connection that
// hands out the bytes in reads whose sizes come from the input, so buffer
// refills and frames split across reads are exercised. Every payload the
// reader returns goes through every decoder (a frame of one type with another
// type's payload is what a confused peer sends), and every Packed payload
// (protocol version 4) through the batch decoder and its frame walk. A payload that decodes must
// encode to something that decodes to the same value, and must be within the
// limits its encoder requires.
#include <algorithm>
#include <array>
#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "escdr/page/page.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/coding.h"
#include "escdr/wire/connection.h"
#include "escdr/wire/format.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"
#include "fuzz_targets.h"

namespace escdr::fuzz {
namespace {

using namespace escdr::wire;

constexpr std::size_t kTapeSize = 4;

// A Connection that reads from a byte string, `tape` deciding each read's size.
class MemoryConnection : public Connection {
 public:
  MemoryConnection(std::span<const std::uint8_t> bytes, const std::uint8_t* tape)
      : bytes_(bytes), tape_(tape) {}

  Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline) override {
    FUZZ_CHECK_MSG(!buf.empty(), "ReadSome with an empty buffer");
    std::size_t n = tape_[reads_++ % kTapeSize];
    n = n == 0 ? buf.size() : n * 37;  // 0: as much as asked
    n = std::min({n, buf.size(), bytes_.size() - pos_});
    std::copy_n(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_), n, buf.begin());
    pos_ += n;
    return n;
  }
  Status WriteAllV(std::span<const std::span<const std::uint8_t>>, Deadline) override {
    return Status::IOError("memory connection is read-only");
  }
  Status ShutdownWrite() override { return Status::OK(); }
  void Shutdown() override {}
  const std::string& name() const override { return name_; }

 private:
  std::span<const std::uint8_t> bytes_;
  const std::uint8_t* tape_;
  std::size_t pos_ = 0;
  std::size_t reads_ = 0;
  std::string name_ = "memory";
};

// Rewrites each frame's CRC32C so that the fuzzer gets past the checksum.
void FixCrcs(std::vector<std::uint8_t>* bytes) {
  std::size_t pos = 0;
  while (bytes->size() - pos >= kFrameHeaderSize) {
    std::uint8_t* h = bytes->data() + pos;
    FrameHeader header = DecodeFrameHeader(h);
    std::size_t rest = bytes->size() - pos - kFrameHeaderSize;
    if (header.length > rest) return;
    std::span<const std::uint8_t> payload(h + kFrameHeaderSize, header.length);
    header.crc = FrameCrc(h, payload);
    EncodeFrameHeader(header, h);
    pos += kFrameHeaderSize + header.length;
  }
}

void CheckDecoders(std::span<const std::uint8_t> p) {
  if (auto h = Hello::Decode(p)) {
    auto again = Hello::Decode(h->Encode());
    FUZZ_CHECK(again && again->version == h->version && again->role == h->role);
  }
  if (auto prep = Prepare::Decode(p)) {
    Status valid = prep->Validate();
    FUZZ_CHECK_MSG(valid.ok(), valid.message().c_str());
    auto again = Prepare::Decode(prep->Encode());
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(again->migration_id == prep->migration_id &&
               again->catalog_checksum == prep->catalog_checksum &&
               again->catalog_entries == prep->catalog_entries &&
               again->window_pages == prep->window_pages && again->vm_name == prep->vm_name &&
               again->kind == prep->kind && again->dedup_pages == prep->dedup_pages &&
               again->codec == prep->codec);
  }
  // Version 4: Dup entries re-encode to the same bytes.
  if (auto dups = DupView::Parse(p)) {
    FUZZ_CHECK(dups->count() >= 1 && dups->count() <= kMaxDupsPerFrame);
    std::vector<std::uint8_t> out(kDupFixedSize + std::size_t{dups->count()} * kDupEntrySize);
    StoreFixed32(out.data(), dups->count());
    for (std::uint32_t k = 0; k < dups->count(); ++k) {
      DupEntry e = dups->entry(k);
      FUZZ_CHECK(e.record_word == 0 || (e.record_word & kRecordFlagsMask) == kPageContinueFlags);
      StoreDupEntry(out.data() + kDupFixedSize + std::size_t{k} * kDupEntrySize, e);
    }
    FUZZ_CHECK(std::equal(out.begin() + kDupFixedSize, out.end(),
                          p.begin() + static_cast<std::ptrdiff_t>(kDupFixedSize), p.end()));
  }
  // Availability and Refs have a layout per protocol version (2: no key and
  // no tags; 3: both); a destination serves both.
  for (std::uint16_t version : {std::uint16_t{2}, kProtocolVersion}) {
    if (auto a = Availability::Decode(p, version)) {
      FUZZ_CHECK(a->catalog_entries <= kMaxCatalogEntries);
      FUZZ_CHECK(a->bitmap.size() == BitmapBytes(a->catalog_entries));
      std::uint32_t set = 0;
      for (std::uint32_t i = 0; i < a->catalog_entries; ++i) set += BitmapTest(a->bitmap, i);
      FUZZ_CHECK(set == a->available_count());
      auto again = Availability::Decode(a->Encode(version), version);
      FUZZ_CHECK(again.has_value());
      FUZZ_CHECK(again->catalog_entries == a->catalog_entries && again->bitmap == a->bitmap &&
                 again->key == a->key);
    }
    if (auto refs = RefsView::Parse(p, version)) {
      FUZZ_CHECK(refs->count() >= 1 && refs->count() <= kMaxRefsPerFrame);
      const std::size_t entry_size = RefEntrySize(version);
      std::vector<std::uint8_t> out;
      AppendRefsHeader(&out, refs->first_seq(), refs->count());
      out.resize(kRefsFixedSize + std::size_t{refs->count()} * entry_size);
      for (std::uint32_t k = 0; k < refs->count(); ++k) {
        RefEntry e = refs->entry(k);
        FUZZ_CHECK(e.record_word == 0 ||
                   (e.record_word & kRecordFlagsMask) == kPageContinueFlags);
        StoreRefEntry(out.data() + kRefsFixedSize + std::size_t{k} * entry_size, e, version);
      }
      auto again = RefsView::Parse(out, version);
      FUZZ_CHECK(again && again->first_seq() == refs->first_seq() &&
                 again->count() == refs->count());
      // The payload's reserved word is the only thing a re-encoding may change.
      FUZZ_CHECK(std::equal(out.begin() + kRefsFixedSize, out.end(),
                            p.begin() + static_cast<std::ptrdiff_t>(kRefsFixedSize), p.end()));
    }
  }
  if (auto r = PageRequest::Decode(p)) {
    auto again = PageRequest::Decode(r->Encode());
    FUZZ_CHECK(again && again->seq == r->seq);
  }
  if (auto r = PageResponseView::Parse(p)) {
    std::vector<std::uint8_t> out = EncodePageResponse(r->seq, r->page);
    FUZZ_CHECK(std::equal(out.begin(), out.end(), p.begin(), p.end()));
  }
  if (auto a = Ack::Decode(p)) {
    auto again = Ack::Decode(a->Encode());
    FUZZ_CHECK(again && again->next_seq == a->next_seq);
  }
  if (auto e = EndSummary::Decode(p)) {
    std::vector<std::uint8_t> out = e->Encode();
    FUZZ_CHECK(std::equal(out.begin(), out.end(), p.begin(), p.end()));
  }
  if (auto d = DestinationResult::Decode(p)) {
    std::vector<std::uint8_t> out = d->Encode();
    FUZZ_CHECK(std::equal(out.begin(), out.end(), p.begin(), p.end()));
  }
  if (auto s = DecodeError(p)) {
    FUZZ_CHECK_MSG(!s->ok(), "an Error frame decoded to OK");
    auto again = DecodeError(EncodeError(*s));
    FUZZ_CHECK(again && again->code() == s->code() && again->message() == s->message());
  }
  if (auto reason = DecodeAbort(p)) {
    auto again = DecodeAbort(EncodeAbort(*reason));
    FUZZ_CHECK(again && *again == *reason);
  }
}

// Version 4: a Packed payload decodes to at most its declared size (never
// past the cap), and the frames in it are walked with the frame checks;
// every frame that passes goes through every decoder.
void CheckPacked(std::span<const std::uint8_t> p) {
  BatchUnpacker unpacker;
  auto batch = unpacker.Unpack(p);
  if (!batch.has_value()) {
    FUZZ_CHECK(!batch.error().ok());
    return;
  }
  FUZZ_CHECK(p.size() > kPackedFixedSize);
  FUZZ_CHECK(batch->size() == LoadFixed32(p.data() + 4));
  FUZZ_CHECK(batch->size() <= kMaxPackedDecoded);
  PackedFrames frames(*batch);
  std::size_t walked = 0;
  for (;;) {
    auto f = frames.Next();
    if (!f.has_value() || !*f) break;
    const FrameType t = (*f)->type;
    FUZZ_CHECK(t == FrameType::kData || t == FrameType::kRefs || t == FrameType::kDup);
    walked += kFrameHeaderSize + (*f)->payload.size();
    FUZZ_CHECK(walked <= batch->size());
    CheckDecoders((*f)->payload);
  }
}

}  // namespace

int FuzzWireFrames(const std::uint8_t* data, std::size_t size) {
  if (size < 1 + kTapeSize) return 0;
  const std::uint8_t mode = data[0];
  const std::uint8_t* tape = data + 1;
  std::vector<std::uint8_t> bytes(data + 1 + kTapeSize, data + size);
  if ((mode & 1) != 0) FixCrcs(&bytes);

  MemoryConnection conn(bytes, tape);
  FrameReader reader(&conn, "fuzzer");
  std::uint64_t frames = 0;
  for (;;) {
    (void)reader.HasBufferedFrame();
    Result<FrameView> f = reader.Next(std::chrono::milliseconds(1000), "Fuzzing");
    if (!f.has_value()) {
      FUZZ_CHECK(!f.error().ok());
      break;
    }
    ++frames;
    FUZZ_CHECK(f->type != FrameType::kInvalid && f->type != FrameType::kKeepalive);
    FUZZ_CHECK(f->payload.size() <= MaxPayloadLength(static_cast<std::uint16_t>(f->type)));
    CheckDecoders(f->payload);
    if (f->type == FrameType::kPacked) CheckPacked(f->payload);
  }
  FUZZ_CHECK(reader.frames_read() >= frames);
  FUZZ_CHECK(reader.bytes_read() <= bytes.size());
  // The decoders also see the raw input, whatever the frame layer thinks of it.
  CheckDecoders(bytes);
  CheckPacked(bytes);
  return 0;
}

}  // namespace escdr::fuzz
