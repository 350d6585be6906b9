#include "escdr/wire/frame_io.h"

#include <algorithm>
#include <cassert>
#include <cstring>

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

void FrameBuffer::Append(FrameType type, std::span<const std::uint8_t> payload) {
  Begin(type);
  AppendPayload(payload);
  End();
}

void FrameBuffer::Begin(FrameType type) {
  assert(!frame_open());
  open_ = buf_.size();
  open_type_ = type;
  buf_.resize(buf_.size() + kFrameHeaderSize);
}

void FrameBuffer::AppendPayload(std::span<const std::uint8_t> bytes) {
  assert(frame_open());
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

std::uint8_t* FrameBuffer::ExtendPayload(std::size_t n) {
  assert(frame_open());
  std::size_t at = buf_.size();
  buf_.resize(at + n);
  return buf_.data() + at;
}

void FrameBuffer::TrimPayload(std::size_t n) {
  assert(frame_open() && n <= open_payload_size());
  buf_.resize(buf_.size() - n);
}

std::size_t FrameBuffer::open_payload_size() const {
  return frame_open() ? buf_.size() - open_ - kFrameHeaderSize : 0;
}

std::span<const std::uint8_t> FrameBuffer::open_payload() const {
  if (!frame_open()) return {};
  return std::span<const std::uint8_t>(buf_).subspan(open_ + kFrameHeaderSize);
}

std::span<std::uint8_t> FrameBuffer::mutable_open_payload() {
  if (!frame_open()) return {};
  return std::span<std::uint8_t>(buf_).subspan(open_ + kFrameHeaderSize);
}

void FrameBuffer::End(bool drop_if_empty) {
  assert(frame_open());
  std::size_t length = open_payload_size();
  if (length == 0 && drop_if_empty) {
    buf_.resize(open_);
    open_ = kNone;
    return;
  }
  assert(length <= MaxPayloadLength(static_cast<std::uint16_t>(open_type_)));
  FrameHeader h;
  h.type = static_cast<std::uint16_t>(open_type_);
  h.length = length;
  std::uint8_t* header = buf_.data() + open_;
  EncodeFrameHeader(h, header);
  h.crc = FrameCrc(header, std::span<const std::uint8_t>(header + kFrameHeaderSize, length));
  EncodeFrameHeader(h, header);
  open_ = kNone;
}

std::span<const std::uint8_t> FrameBuffer::bytes() const {
  assert(!frame_open());
  return buf_;
}

void FrameBuffer::Clear() {
  buf_.clear();
  open_ = kNone;
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

Status FrameWriter::Write(const FrameBuffer& buffer) {
  if (buffer.empty()) return Status::OK();
  std::lock_guard<std::mutex> lock(mu_);
  // The frame count is only for statistics; one buffer usually holds 1-3.
  return WriteLocked(buffer.bytes(), 1, Deadline::After(timeout_));
}

Status FrameWriter::WriteFrame(FrameType type, std::span<const std::uint8_t> payload) {
  FrameBuffer b;
  b.Append(type, payload);
  std::lock_guard<std::mutex> lock(mu_);
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
                         std::string_view state, const char* what, std::uint16_t type) {
  if (end_ - begin_ >= n) return Status::OK();
  if (buf_.size() - begin_ < n) {
    // Move the partial frame to the front; grow only for frames larger than
    // the buffer (bounded by MaxPayloadLength, checked by the caller).
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    if (buf_.size() < n) buf_.resize(n);
  }
  while (end_ - begin_ < n) {
    std::size_t want = std::min(buf_.size() - end_, (n - (end_ - begin_)) + kReadAhead);
    auto got = conn_->ReadSome(std::span<std::uint8_t>(buf_.data() + end_, want), deadline);
    if (!got.has_value()) {
      const Status& s = got.error();
      if (s.code() == StatusCode::kTimeout) {
        return Status::Timeout(fmt::format("no frame from the {} for {} s in state {}", peer_,
                                           idle_timeout.count() / 1000.0, state));
      }
      return Status(s.code(), fmt::format("reading {} from the {} in state {}: {}", what, peer_,
                                          state, s.message()));
    }
    if (*got == 0) {
      std::size_t have = end_ - begin_;
      if (have == 0 && type == 0) {
        return Status::Unavailable(
            fmt::format("the {} closed the connection in state {}", peer_, state));
      }
      return Status::Unavailable(fmt::format(
          "the {} closed the connection after {} of {} bytes of {} in state {}", peer_, have, n,
          what, state));
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
    ESCDR_RETURN_IF_ERROR(
        Fill(kFrameHeaderSize, deadline, idle_timeout, state, "a frame header", 0));
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
    std::string label = FrameLabel(h.type, h.length);
    ESCDR_RETURN_IF_ERROR(Fill(total, deadline, idle_timeout, state, label.c_str(), h.type));
    const std::uint8_t* frame = buf_.data() + begin_;
    std::span<const std::uint8_t> payload(frame + kFrameHeaderSize, h.length);
    std::uint32_t crc = FrameCrc(frame, payload);
    if (crc != h.crc) {
      return Err(Status::Corruption(fmt::format(
          "frame checksum mismatch: {} from the {} in state {} (crc32c {:#010x}, header says "
          "{:#010x})",
          label, peer_, state, crc, h.crc)));
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
