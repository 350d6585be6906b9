#include "escdr/wire/codec.h"

#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "escdr/sys/clock.h"
#include "escdr/wire/coding.h"

namespace escdr::wire {
namespace {

ZSTD_CCtx* Cctx(void* p) { return static_cast<ZSTD_CCtx*>(p); }
ZSTD_DCtx* Dctx(void* p) { return static_cast<ZSTD_DCtx*>(p); }

std::uint64_t ThreadCpuMicros() { return static_cast<std::uint64_t>(ThreadCpuTime().count()); }

}  // namespace

// ---- codec names ----

std::string CodecName(std::uint8_t codec) {
  switch (static_cast<Codec>(codec)) {
    case Codec::kNone: return "none";
    case Codec::kZstd: return "zstd";
    case Codec::kLz4: return "lz4";
  }
  return fmt::format("codec {}", codec);
}

std::string CodecSpec::ToString() const {
  if (codec == Codec::kZstd) return fmt::format("zstd:{}", level);
  return CodecName(static_cast<std::uint8_t>(codec));
}

Result<CodecSpec> ParseCodecSpec(std::string_view text) {
  if (text == "none") return CodecSpec{Codec::kNone, 0};
  if (text == "lz4") return CodecSpec{Codec::kLz4, 0};
  if (text == "zstd") return CodecSpec{Codec::kZstd, 1};
  if (text.starts_with("zstd:")) {
    std::string_view digits = text.substr(5);
    int level = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), level);
    if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() &&
        level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel()) {
      return CodecSpec{Codec::kZstd, level};
    }
    return Err(Status::InvalidArgument(fmt::format(
        "'{}': the zstd level must be an integer from {} to {}", text, ZSTD_minCLevel(),
        ZSTD_maxCLevel())));
  }
  return Err(Status::InvalidArgument(
      fmt::format("'{}' is not a codec: use none, zstd, zstd:LEVEL or lz4", text)));
}

// ---- BatchPacker ----

BatchPacker::BatchPacker(CodecSpec spec) : spec_(spec) {
  if (spec_.codec == Codec::kZstd) zstd_ = ZSTD_createCCtx();
}

BatchPacker::~BatchPacker() {
  if (zstd_ != nullptr) ZSTD_freeCCtx(Cctx(zstd_));
}

bool BatchPacker::Pack(std::span<const std::uint8_t> frames, std::vector<std::uint8_t>* out,
                       std::size_t part_bytes) {
  if (spec_.codec == Codec::kNone || frames.empty() || frames.size() > kMaxPackedDecoded) {
    return false;
  }
  if (spec_.codec == Codec::kZstd && zstd_ == nullptr) return false;
  std::size_t parts = (frames.size() + std::max<std::size_t>(part_bytes, 1) - 1) /
                      std::max<std::size_t>(part_bytes, 1);
  parts = std::clamp<std::size_t>(parts, 1, kMaxPackedParts);
  const std::size_t head = kPackedFixedSize + 4 * parts;
  out->resize(head);
  std::uint8_t* h = out->data();
  h[0] = static_cast<std::uint8_t>(spec_.codec);
  h[1] = static_cast<std::uint8_t>(parts);
  StoreFixed16(h + 2, 0);
  StoreFixed32(h + 4, static_cast<std::uint32_t>(frames.size()));
  std::size_t at = 0;
  for (std::size_t k = 0; k < parts; ++k) {
    const std::size_t n = PackedPartSize(frames.size(), parts, k);
    const std::span<const std::uint8_t> in = frames.subspan(at, n);
    at += n;
    const std::size_t bound = spec_.codec == Codec::kZstd
                                  ? ZSTD_compressBound(n)
                                  : static_cast<std::size_t>(LZ4_compressBound(static_cast<int>(n)));
    const std::size_t base = out->size();
    out->resize(base + bound);
    std::size_t got = 0;
    if (spec_.codec == Codec::kZstd) {
      got = ZSTD_compressCCtx(Cctx(zstd_), out->data() + base, bound, in.data(), n, spec_.level);
      if (ZSTD_isError(got)) return false;  // the frames go as they are: always valid
    } else {
      const int r = LZ4_compress_default(reinterpret_cast<const char*>(in.data()),
                                         reinterpret_cast<char*>(out->data() + base),
                                         static_cast<int>(n), static_cast<int>(bound));
      if (r <= 0) return false;
      got = static_cast<std::size_t>(r);
    }
    out->resize(base + got);
    StoreFixed32(out->data() + kPackedFixedSize + 4 * k, static_cast<std::uint32_t>(got));
    // Give up as soon as it cannot end up smaller.
    if (kFrameHeaderSize + out->size() >= frames.size()) return false;
  }
  return true;
}

// ---- BatchUnpacker ----

BatchUnpacker::BatchUnpacker(int threads) : zstd_(ZSTD_createDCtx()) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { Worker(); });
}

BatchUnpacker::~BatchUnpacker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  if (zstd_ != nullptr) ZSTD_freeDCtx(Dctx(zstd_));
}

std::chrono::microseconds BatchUnpacker::worker_cpu_time() const {
  return std::chrono::microseconds(worker_cpu_micros_.load());
}

Status BatchUnpacker::DecodePart(void* dctx, std::uint8_t codec, const Part& part) const {
  std::size_t got = 0;
  if (codec == static_cast<std::uint8_t>(Codec::kZstd)) {
    if (dctx == nullptr) return Status::Internal("no zstd decompression context");
    const unsigned long long content = ZSTD_getFrameContentSize(part.src.data(), part.src.size());
    if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != part.size) {
      return Status::Corruption(fmt::format(
          "part {} of a Packed frame should decode to {} bytes, its zstd frame {}", part.index,
          part.size,
          content == ZSTD_CONTENTSIZE_ERROR ? std::string("is not valid")
                                            : fmt::format("says {}", content)));
    }
    // The output is exactly the part's share: data that would decode to
    // more fails here instead of growing anything.
    got = ZSTD_decompressDCtx(Dctx(dctx), part.dst, part.size, part.src.data(), part.src.size());
    if (ZSTD_isError(got)) {
      return Status::Corruption(fmt::format("part {} of a Packed frame does not decode (zstd: {})",
                                            part.index, ZSTD_getErrorName(got)));
    }
  } else {
    const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(part.src.data()),
                                      reinterpret_cast<char*>(part.dst),
                                      static_cast<int>(part.src.size()),
                                      static_cast<int>(part.size));
    if (r < 0) {
      return Status::Corruption(
          fmt::format("part {} of a Packed frame does not decode (lz4)", part.index));
    }
    got = static_cast<std::size_t>(r);
  }
  if (got != part.size) {
    return Status::Corruption(fmt::format(
        "part {} of a Packed frame decodes to {} bytes, not the {} its declared size gives",
        part.index, got, part.size));
  }
  return Status::OK();
}

void BatchUnpacker::Drain(void* dctx) {
  std::unique_lock<std::mutex> lock(mu_);
  while (next_part_ < parts_.size()) {
    const Part part = parts_[next_part_++];
    const std::uint8_t codec = codec_;
    lock.unlock();
    Status s = DecodePart(dctx, codec, part);
    lock.lock();
    if (!s.ok() && error_.ok()) error_ = s;
    ++parts_done_;
  }
  cv_.notify_all();
}

void BatchUnpacker::Worker() {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || (generation_ != seen && next_part_ < parts_.size()); });
    if (stop_) break;
    seen = generation_;
    lock.unlock();
    const auto cpu0 = ThreadCpuTime();
    Drain(dctx);
    worker_cpu_micros_.fetch_add((ThreadCpuTime() - cpu0).count());
    lock.lock();
  }
  lock.unlock();
  ZSTD_freeDCtx(dctx);
}

Result<std::span<const std::uint8_t>> BatchUnpacker::Unpack(std::span<const std::uint8_t> payload,
                                                            std::size_t max_decoded) {
  if (payload.size() < kPackedFixedSize) {
    return Err(Status::ProtocolError(fmt::format(
        "Packed payload of {} bytes is shorter than its {}-byte header", payload.size(),
        kPackedFixedSize)));
  }
  const std::uint8_t codec = payload[0];
  const std::size_t parts = payload[1];
  const std::size_t declared = LoadFixed32(payload.data() + 4);
  if (codec != static_cast<std::uint8_t>(Codec::kZstd) &&
      codec != static_cast<std::uint8_t>(Codec::kLz4)) {
    return Err(Status::ProtocolError(
        fmt::format("Packed frame with {}, which is not a codec of Packed frames",
                    CodecName(codec))));
  }
  const std::size_t cap = std::min(max_decoded, kMaxPackedDecoded);
  if (declared < kFrameHeaderSize || declared > cap) {
    return Err(Status::ProtocolError(fmt::format(
        "Packed frame declares {} decoded bytes, outside {}..{}", declared, kFrameHeaderSize,
        cap)));
  }
  if (parts == 0 || parts > kMaxPackedParts || parts > declared) {
    return Err(Status::ProtocolError(fmt::format(
        "Packed frame of {} decoded bytes in {} parts: 1..{} parts, at most one per byte",
        declared, parts, kMaxPackedParts)));
  }
  const std::size_t head = kPackedFixedSize + 4 * parts;
  if (payload.size() < head) {
    return Err(Status::ProtocolError(fmt::format(
        "Packed payload of {} bytes is shorter than its header of {} parts", payload.size(),
        parts)));
  }
  std::vector<Part> list(parts);
  std::size_t at = head;
  if (buf_.size() < declared) buf_.resize(declared);
  std::size_t out = 0;
  for (std::size_t k = 0; k < parts; ++k) {
    const std::size_t n = LoadFixed32(payload.data() + kPackedFixedSize + 4 * k);
    if (n == 0 || n > payload.size() - at) {
      return Err(Status::ProtocolError(fmt::format(
          "part {} of a Packed frame has {} bytes; {} are left in the payload", k, n,
          payload.size() - at)));
    }
    list[k] = Part{payload.subspan(at, n), buf_.data() + out,
                   PackedPartSize(declared, parts, k), k};
    at += n;
    out += list[k].size;
  }
  if (at != payload.size()) {
    return Err(Status::ProtocolError(fmt::format(
        "the parts of a Packed frame hold {} bytes, its payload {}", at - head,
        payload.size() - head)));
  }
  if (workers_.empty() || parts == 1) {
    for (const Part& part : list) {
      Status s = DecodePart(zstd_, codec, part);
      if (!s.ok()) return Err(s);
    }
  } else {
    {
      std::lock_guard<std::mutex> lock(mu_);
      parts_ = std::move(list);
      codec_ = codec;
      next_part_ = 0;
      parts_done_ = 0;
      error_ = Status::OK();
      ++generation_;
    }
    cv_.notify_all();
    Drain(zstd_);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return parts_done_ == parts_.size(); });
    if (!error_.ok()) return Err(error_);
  }
  return std::span<const std::uint8_t>(buf_.data(), declared);
}

// ---- PackedFrames ----

Result<std::optional<FrameView>> PackedFrames::Next() {
  if (rest_.empty()) return std::optional<FrameView>();
  const std::size_t k = index_++;
  if (rest_.size() < kFrameHeaderSize) {
    return Err(Status::ProtocolError(fmt::format(
        "a Packed frame ends with {} bytes, less than a frame header, after {} frames",
        rest_.size(), k)));
  }
  const FrameHeader h = DecodeFrameHeader(rest_.data());
  const auto type = static_cast<FrameType>(h.type);
  if (type != FrameType::kData && type != FrameType::kRefs && type != FrameType::kDup) {
    return Err(Status::ProtocolError(fmt::format(
        "frame {} in a Packed frame is {}: only Data, Refs and Dup frames may be packed", k,
        FrameTypeName(h.type))));
  }
  if (h.length > MaxPayloadLength(h.type) || h.length > rest_.size() - kFrameHeaderSize) {
    return Err(Status::ProtocolError(fmt::format(
        "frame {} in a Packed frame, a {} frame of {} bytes, exceeds its limit or the {} bytes "
        "left",
        k, FrameTypeName(h.type), h.length, rest_.size() - kFrameHeaderSize)));
  }
  const std::span<const std::uint8_t> payload =
      rest_.subspan(kFrameHeaderSize, static_cast<std::size_t>(h.length));
  if (FrameCrc(rest_.data(), payload) != h.crc) {
    return Err(Status::Corruption(fmt::format(
        "frame checksum mismatch: frame {} in a Packed frame, a {} frame of {} bytes", k,
        FrameTypeName(h.type), h.length)));
  }
  rest_ = rest_.subspan(kFrameHeaderSize + payload.size());
  return std::optional<FrameView>(FrameView{type, payload});
}

// ---- PackedWriter ----

PackedWriter::PackedWriter(FrameWriter* writer, CodecSpec spec, int threads)
    : writer_(writer), spec_(spec), threads_(spec.codec == Codec::kNone ? 1 : std::max(1, threads)) {
  if (spec_.codec == Codec::kNone) return;
  if (threads_ == 1) {
    inline_packer_ = std::make_unique<BatchPacker>(spec_);
    return;
  }
  for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] { Worker(); });
}

PackedWriter::~PackedWriter() {
  Stop();
  for (auto& t : workers_) t.join();
}

void PackedWriter::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  if (error_.ok()) error_ = Status::Aborted("the wire codec was stopped");
  cv_.notify_all();
}

CodecStats PackedWriter::stats() const {
  CodecStats s;
  s.batches = batches_.load();
  s.batches_packed = batches_packed_.load();
  s.frame_bytes = frame_bytes_.load();
  s.wire_bytes = wire_bytes_.load();
  s.cpu_micros = cpu_micros_.load();
  return s;
}

Status PackedWriter::Send(bool packed, std::span<const std::uint8_t> frames,
                          const std::vector<std::uint8_t>& payload) {
  Status s = packed ? writer_->WriteFrame(FrameType::kPacked, payload)
                    : writer_->WriteEncoded(frames, 1);
  if (!s.ok()) return s;
  batches_.fetch_add(1, std::memory_order_relaxed);
  if (packed) batches_packed_.fetch_add(1, std::memory_order_relaxed);
  frame_bytes_.fetch_add(frames.size(), std::memory_order_relaxed);
  wire_bytes_.fetch_add(packed ? kFrameHeaderSize + payload.size() : frames.size(),
                        std::memory_order_relaxed);
  return Status::OK();
}

bool PackedWriter::Compress(BatchPacker& packer, std::span<const std::uint8_t> frames,
                            std::vector<std::uint8_t>* payload) {
  const std::uint64_t cpu0 = ThreadCpuMicros();
  const bool packed = packer.Pack(frames, payload);
  cpu_micros_.fetch_add(ThreadCpuMicros() - cpu0, std::memory_order_relaxed);
  return packed;
}

Status PackedWriter::Write(const FrameBuffer& frames) {
  if (frames.empty()) return Status::OK();
  if (spec_.codec == Codec::kNone) {
    Status s = writer_->Write(frames);
    if (s.ok()) {
      batches_.fetch_add(1, std::memory_order_relaxed);
      frame_bytes_.fetch_add(frames.size(), std::memory_order_relaxed);
      wire_bytes_.fetch_add(frames.size(), std::memory_order_relaxed);
    }
    return s;
  }
  std::vector<std::span<const std::uint8_t>> segments;
  frames.Segments(&segments);
  if (threads_ == 1) {
    inline_frames_.clear();
    for (auto seg : segments) inline_frames_.insert(inline_frames_.end(), seg.begin(), seg.end());
    const bool packed = Compress(*inline_packer_, inline_frames_, &inline_scratch_);
    return Send(packed, inline_frames_, inline_scratch_);
  }
  std::unique_lock<std::mutex> lock(mu_);
  // Bounded: at most 2 * threads batches wait or are being compressed.
  cv_.wait(lock, [&] {
    return stop_ || !error_.ok() || next_seq_ - next_write_ < 2 * std::uint64_t(threads_);
  });
  if (!error_.ok()) return error_;
  Job& job = jobs_.emplace_back();
  job.seq = next_seq_++;
  job.frames.reserve(frames.size());
  for (auto seg : segments) job.frames.insert(job.frames.end(), seg.begin(), seg.end());
  cv_.notify_all();
  return Status::OK();
}

Status PackedWriter::Flush() {
  if (threads_ == 1) return Status::OK();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !error_.ok() || next_write_ == next_seq_; });
  return error_;
}

void PackedWriter::Worker() {
  BatchPacker packer(spec_);
  std::vector<std::uint8_t> scratch;
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    const bool packed = Compress(packer, job.frames, &scratch);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stop_ || next_write_ == job.seq; });
    if (stop_) return;
    if (error_.ok()) {
      // Our turn: no other worker writes until next_write_ moves on.
      lock.unlock();
      Status s = Send(packed, job.frames, scratch);
      lock.lock();
      if (!s.ok() && error_.ok()) error_ = s;
    }
    ++next_write_;
    cv_.notify_all();
  }
}

}  // namespace escdr::wire
