#include "escdr/wire/frame_io.h"

#include "escdr/wire/crc32c.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <thread>

#include <fmt/format.h>

namespace escdr::wire {
namespace {

// Reads ask for at least this much beyond the current frame, so small frames
// are read in batches; a leftover partial frame is at most this big when the
// buffer is compacted.
constexpr std::size_t kReadAhead = 64 * 1024;
constexpr std::size_t kInitialBuffer = 256 * 1024;

std::string FrameLabel(std::uint16_t type, std::uint64_t length) {
  return fmt::format("{} frame of {} bytes", FrameTypeName(type), length);
}

}  // namespace

// ---- FrameBuffer ----

std::uint8_t* FrameBuffer::AppendOwned(std::size_t n) {
  const std::size_t at = owned_.size();
  owned_.resize(at + n);
  // Extend the last piece when it is the owned range just before.
  if (!pieces_.empty() && pieces_.back().external == nullptr &&
      pieces_.back().offset + pieces_.back().length == at &&
      (!frame_open() || pieces_.size() > open_first_piece_)) {
    pieces_.back().length += n;
  } else {
    pieces_.push_back(Piece{nullptr, at, n});
  }
  size_ += n;
  return owned_.data() + at;
}

void FrameBuffer::Append(FrameType type, std::span<const std::uint8_t> payload) {
  Begin(type);
  AppendPayload(payload);
  End();
}

void FrameBuffer::Begin(FrameType type) {
  assert(!frame_open());
  const std::size_t at = owned_.size();
  owned_.resize(at + kFrameHeaderSize);
  pieces_.push_back(Piece{nullptr, at, kFrameHeaderSize});
  size_ += kFrameHeaderSize;
  open_header_ = at;
  open_first_piece_ = pieces_.size();
  open_payload_size_ = 0;
  open_type_ = type;
}

void FrameBuffer::AppendPayload(std::span<const std::uint8_t> bytes) {
  assert(frame_open());
  if (bytes.empty()) return;
  std::memcpy(AppendOwned(bytes.size()), bytes.data(), bytes.size());
  open_payload_size_ += bytes.size();
}

void FrameBuffer::AppendPayloadRef(std::span<const std::uint8_t> bytes) {
  assert(frame_open());
  if (bytes.empty()) return;
  // Consecutive references to adjacent memory (a record header and its page
  // in the same read buffer) become one piece.
  if (pieces_.size() > open_first_piece_ && pieces_.back().external != nullptr &&
      pieces_.back().external + pieces_.back().length == bytes.data()) {
    pieces_.back().length += bytes.size();
  } else {
    pieces_.push_back(Piece{bytes.data(), 0, bytes.size()});
  }
  size_ += bytes.size();
  open_payload_size_ += bytes.size();
}

std::uint8_t* FrameBuffer::ExtendPayload(std::size_t n) {
  assert(frame_open());
  open_payload_size_ += n;
  return AppendOwned(n);
}

void FrameBuffer::TrimPayload(std::size_t n) {
  assert(frame_open() && n <= open_payload_size_);
  open_payload_size_ -= n;
  size_ -= n;
  while (n > 0) {
    Piece& last = pieces_.back();
    const std::size_t take = std::min(n, last.length);
    last.length -= take;
    if (last.external == nullptr && last.offset + last.length + take == owned_.size()) {
      owned_.resize(owned_.size() - take);
    }
    n -= take;
    if (last.length == 0) pieces_.pop_back();
  }
}

bool FrameBuffer::CopyPayloadTail(std::uint8_t* out, std::size_t n) const {
  if (!frame_open() || open_payload_size_ < n) return false;
  std::size_t i = pieces_.size();
  std::size_t left = n;
  while (left > 0) {
    const Piece& p = pieces_[--i];
    const std::size_t take = std::min(left, p.length);
    std::memcpy(out + left - take, PieceData(p) + p.length - take, take);
    left -= take;
  }
  return true;
}

void FrameBuffer::PatchPayload(std::size_t offset, std::span<const std::uint8_t> bytes) {
  assert(frame_open() && offset + bytes.size() <= open_payload_size_);
  std::size_t at = 0;
  for (std::size_t i = open_first_piece_; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    if (offset < at + p.length) {
      assert(p.external == nullptr && offset + bytes.size() <= at + p.length);
      std::memcpy(owned_.data() + p.offset + (offset - at), bytes.data(), bytes.size());
      return;
    }
    at += p.length;
  }
  assert(false && "PatchPayload past the end of the payload");
}

void FrameBuffer::End(bool drop_if_empty) {
  assert(frame_open());
  if (open_payload_size_ == 0 && drop_if_empty) {
    pieces_.pop_back();  // the header piece (an empty payload has no pieces)
    owned_.resize(open_header_);
    size_ -= kFrameHeaderSize;
    open_header_ = kNone;
    return;
  }
  assert(open_payload_size_ <= MaxPayloadLength(static_cast<std::uint16_t>(open_type_)));
  FrameHeader h;
  h.type = static_cast<std::uint16_t>(open_type_);
  h.length = open_payload_size_;
  std::uint8_t* header = owned_.data() + open_header_;
  EncodeFrameHeader(h, header);
  // FrameCrc() over the pieces: header bytes 0-3 and 8-15, then the payload.
  std::uint32_t crc = Crc32cExtend(0, header, 4);
  crc = Crc32cExtend(crc, header + 8, 8);
  for (std::size_t i = open_first_piece_; i < pieces_.size(); ++i) {
    crc = Crc32cExtend(crc, PieceData(pieces_[i]), pieces_[i].length);
  }
  h.crc = crc;
  EncodeFrameHeader(h, header);
  open_header_ = kNone;
}

void FrameBuffer::Segments(std::vector<std::span<const std::uint8_t>>* out) const {
  assert(!frame_open());
  out->clear();
  for (const Piece& p : pieces_) out->emplace_back(PieceData(p), p.length);
}

std::span<const std::uint8_t> FrameBuffer::bytes() const {
  assert(!frame_open());
  assert(std::none_of(pieces_.begin(), pieces_.end(),
                      [](const Piece& p) { return p.external != nullptr; }));
  return owned_;
}

void FrameBuffer::Clear() {
  owned_.clear();
  pieces_.clear();
  size_ = 0;
  open_header_ = kNone;
  open_payload_size_ = 0;
}

// ---- FrameWriter ----

Status FrameWriter::WriteLocked(std::span<const std::uint8_t> bytes, std::uint64_t frames,
                                Deadline deadline) {
  ESCDR_RETURN_IF_ERROR(conn_->WriteAll(bytes, deadline));
  bytes_.fetch_add(bytes.size(), std::memory_order_relaxed);
  frames_.fetch_add(frames, std::memory_order_relaxed);
  last_write_.store(MonotonicClock::now().time_since_epoch().count(), std::memory_order_relaxed);
  return Status::OK();
}

void FrameWriter::PaceLocked(std::size_t n) {
  const std::uint64_t rate = rate_.load();
  if (rate == 0) return;
  const auto now = MonotonicClock::now();
  // Unused credit is kept for at most a 20 ms burst.
  const auto burst = std::chrono::milliseconds(20);
  if (paced_until_ < now - burst) paced_until_ = now - burst;
  const auto wait = paced_until_ - now;
  paced_until_ += std::chrono::nanoseconds(
      static_cast<std::int64_t>(static_cast<double>(n) * 1e9 / static_cast<double>(rate)));
  if (wait > MonotonicClock::duration::zero()) {
    std::this_thread::sleep_for(wait);
    paced_micros_.fetch_add(
        static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(wait).count()),
        std::memory_order_relaxed);
  }
}

Status FrameWriter::WriteEncoded(std::span<const std::uint8_t> bytes, std::uint64_t frames) {
  if (bytes.empty()) return Status::OK();
  std::lock_guard<std::mutex> lock(mu_);
  PaceLocked(bytes.size());
  return WriteLocked(bytes, frames, Deadline::After(timeout_));
}

Status FrameWriter::Write(const FrameBuffer& buffer) {
  if (buffer.empty()) return Status::OK();
  std::vector<std::span<const std::uint8_t>> segments;
  buffer.Segments(&segments);
  std::lock_guard<std::mutex> lock(mu_);
  PaceLocked(buffer.size());
  Status s = conn_->WriteAllV(segments, Deadline::After(timeout_));
  if (!s.ok()) return s;
  bytes_.fetch_add(buffer.size(), std::memory_order_relaxed);
  frames_.fetch_add(1, std::memory_order_relaxed);  // statistics only: a buffer usually holds 1-3
  last_write_.store(MonotonicClock::now().time_since_epoch().count(), std::memory_order_relaxed);
  return Status::OK();
}

Status FrameWriter::WriteFrame(FrameType type, std::span<const std::uint8_t> payload) {
  FrameBuffer b;
  b.Append(type, payload);
  std::lock_guard<std::mutex> lock(mu_);
  PaceLocked(b.size());
  return WriteLocked(b.bytes(), 1, Deadline::After(timeout_));
}

bool FrameWriter::TryWriteFrame(FrameType type, std::span<const std::uint8_t> payload,
                                std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  FrameBuffer b;
  b.Append(type, payload);
  return WriteLocked(b.bytes(), 1, Deadline::After(timeout)).ok();
}

MonotonicClock::time_point FrameWriter::last_write() const {
  return MonotonicClock::time_point(
      MonotonicClock::duration(last_write_.load(std::memory_order_relaxed)));
}

// ---- FrameReader ----

FrameReader::FrameReader(Connection* conn, std::string peer)
    : conn_(conn), peer_(std::move(peer)), buf_(kInitialBuffer) {}

Status FrameReader::Fill(std::size_t n, Deadline deadline, std::chrono::milliseconds idle_timeout,
                         std::string_view state, const FrameHeader* header) {
  if (end_ - begin_ >= n) return Status::OK();
  if (buf_.size() - begin_ < n) {
    // Move the partial frame to the front; grow only for frames larger than
    // the buffer (bounded by MaxPayloadLength, checked by the caller).
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    if (buf_.size() < n) buf_.resize(n);
  }
  // Messages are built only on failure: this runs for every frame.
  auto what = [header] {
    return header == nullptr ? std::string("a frame header")
                             : FrameLabel(header->type, header->length);
  };
  while (end_ - begin_ < n) {
    std::size_t want = std::min(buf_.size() - end_, (n - (end_ - begin_)) + kReadAhead);
    auto got = conn_->ReadSome(std::span<std::uint8_t>(buf_.data() + end_, want), deadline);
    if (!got.has_value()) {
      const Status& s = got.error();
      if (s.code() == StatusCode::kTimeout) {
        return Status::Timeout(fmt::format("no frame from the {} for {} s in state {}", peer_,
                                           idle_timeout.count() / 1000.0, state));
      }
      return Status(s.code(), fmt::format("reading {} from the {} in state {}: {}", what(), peer_,
                                          state, s.message()));
    }
    if (*got == 0) {
      std::size_t have = end_ - begin_;
      if (have == 0 && header == nullptr) {
        return Status::Unavailable(
            fmt::format("the {} closed the connection in state {}", peer_, state));
      }
      return Status::Unavailable(fmt::format(
          "the {} closed the connection after {} of {} bytes of {} in state {}", peer_, have, n,
          what(), state));
    }
    end_ += *got;
  }
  return Status::OK();
}

bool FrameReader::HasBufferedFrame() const {
  if (end_ - begin_ < kFrameHeaderSize) return false;
  const FrameHeader h = DecodeFrameHeader(buf_.data() + begin_);
  return h.length <= end_ - begin_ - kFrameHeaderSize;
}

Result<FrameView> FrameReader::Next(std::chrono::milliseconds idle_timeout,
                                    std::string_view state) {
  for (;;) {
    Deadline deadline = Deadline::After(idle_timeout);
    if (begin_ == end_) begin_ = end_ = 0;
    ESCDR_RETURN_IF_ERROR(Fill(kFrameHeaderSize, deadline, idle_timeout, state, nullptr));
    FrameHeader h = DecodeFrameHeader(buf_.data() + begin_);
    if (h.type == 0) {
      return Err(Status::ProtocolError(fmt::format(
          "frame of type 0 (invalid) from the {} in state {}", peer_, state)));
    }
    const bool known = IsKnownFrameType(h.type);
    if (!known && !IsOptionalFrameType(h.type)) {
      return Err(Status::ProtocolError(fmt::format(
          "unknown mandatory frame {} of {} bytes from the {} in state {}", FrameTypeName(h.type),
          h.length, peer_, state)));
    }
    const std::size_t limit = MaxPayloadLength(h.type);
    if (h.length > limit) {
      return Err(Status::ProtocolError(fmt::format(
          "{} from the {} exceeds the limit of {} bytes in state {}", FrameLabel(h.type, h.length),
          peer_, limit, state)));
    }
    const std::size_t total = kFrameHeaderSize + static_cast<std::size_t>(h.length);
    ESCDR_RETURN_IF_ERROR(Fill(total, deadline, idle_timeout, state, &h));
    const std::uint8_t* frame = buf_.data() + begin_;
    std::span<const std::uint8_t> payload(frame + kFrameHeaderSize, h.length);
    std::uint32_t crc = FrameCrc(frame, payload);
    if (crc != h.crc) {
      return Err(Status::Corruption(fmt::format(
          "frame checksum mismatch: {} from the {} in state {} (crc32c {:#010x}, header says "
          "{:#010x})",
          FrameLabel(h.type, h.length), peer_, state, crc, h.crc)));
    }
    begin_ += total;
    bytes_.fetch_add(total, std::memory_order_relaxed);
    frames_.fetch_add(1, std::memory_order_relaxed);
    if (!known) {
      ++unknown_skipped_;
      continue;
    }
    if (static_cast<FrameType>(h.type) == FrameType::kKeepalive) continue;
    return FrameView{static_cast<FrameType>(h.type), payload};
  }
}

}  // namespace escdr::wire
