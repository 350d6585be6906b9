// Frame I/O: building frames into a buffer, writing them, reading them.
//
// FrameBuffer assembles any number of frames so that a burst (Data, Refs,
// Data, ...) goes out in one gather write; a frame's payload is appended piece
// by piece, by copy or by reference, and its header (length, CRC32C) is filled
// in when the frame is closed. FrameWriter serializes whole buffers onto a Connection
// from several threads and counts the bytes. FrameReader reads frames from a
// Connection through its own buffer and checks each one, in this order,
// before handing it out (docs/wire-protocol.md §2): type not 0, type known or
// optional, length within the type's limit (before reading the payload), CRC.
// Keepalive and unknown optional frames are consumed silently.
//
// Thread safety: FrameBuffer and FrameReader are used by one thread each;
// FrameWriter::Write may be called concurrently (it holds a mutex across the
// write). Views returned by FrameReader::Next are valid until its next call.
#ifndef ESCDR_WIRE_FRAME_IO_H_
#define ESCDR_WIRE_FRAME_IO_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/connection.h"
#include "escdr/wire/format.h"

namespace escdr::wire {

class FrameBuffer {
 public:
  // Appends one complete frame.
  // REQUIRES: no frame open; payload.size() <= MaxPayloadLength(type).
  void Append(FrameType type, std::span<const std::uint8_t> payload);

  // Opens a frame whose payload is appended piece by piece.
  // REQUIRES: no frame open.
  void Begin(FrameType type);
  // Appends a copy of `bytes` to the open frame's payload.
  void AppendPayload(std::span<const std::uint8_t> bytes);
  // Appends `bytes` by reference, without copying (the forwarding path's
  // zero-copy case). REQUIRES: the bytes stay valid and unchanged until the
  // buffer has been written and Clear()ed.
  void AppendPayloadRef(std::span<const std::uint8_t> bytes);
  // Appends `n` bytes to the open frame's payload and returns where they are,
  // for the caller to fill (valid until the buffer changes again).
  std::uint8_t* ExtendPayload(std::size_t n);
  // Drops the last `n` payload bytes of the open frame.
  // REQUIRES: n <= open_payload_size().
  void TrimPayload(std::size_t n);
  // Copies the last `n` payload bytes of the open frame to `out`; false (and
  // nothing copied) if the payload is shorter.
  bool CopyPayloadTail(std::uint8_t* out, std::size_t n) const;
  // Overwrites payload bytes [offset, offset + bytes.size()) of the open
  // frame, for fields known only later (a count). REQUIRES: that range was
  // appended by copy (AppendPayload / ExtendPayload), in one piece.
  void PatchPayload(std::size_t offset, std::span<const std::uint8_t> bytes);
  // Fills in the open frame's header (length, CRC32C). An open frame with an
  // empty payload is dropped instead when `drop_if_empty`.
  void End(bool drop_if_empty = false);

  bool frame_open() const { return open_header_ != kNone; }
  FrameType open_type() const { return open_type_; }
  std::size_t open_payload_size() const { return frame_open() ? open_payload_size_ : 0; }

  // The closed frames as a sequence of byte ranges, for a gather write.
  // REQUIRES: no frame open.
  void Segments(std::vector<std::span<const std::uint8_t>>* out) const;
  // All closed frames as one range. REQUIRES: no frame open and nothing
  // appended by reference.
  std::span<const std::uint8_t> bytes() const;
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void Clear();

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  // A range of the byte sequence: external memory, or owned_[offset, +length).
  struct Piece {
    const std::uint8_t* external = nullptr;
    std::size_t offset = 0;
    std::size_t length = 0;
  };
  const std::uint8_t* PieceData(const Piece& p) const {
    return p.external != nullptr ? p.external : owned_.data() + p.offset;
  }
  std::uint8_t* AppendOwned(std::size_t n);

  std::vector<std::uint8_t> owned_;
  std::vector<Piece> pieces_;
  std::size_t size_ = 0;
  std::size_t open_header_ = kNone;  // offset in owned_ of the open frame's header
  std::size_t open_first_piece_ = 0; // first payload piece of the open frame
  std::size_t open_payload_size_ = 0;
  FrameType open_type_ = FrameType::kInvalid;
};

// Writes whole frame buffers to a Connection; safe to share between threads.
class FrameWriter {
 public:
  // `conn` must outlive the writer. `timeout` bounds each Write.
  FrameWriter(Connection* conn, std::chrono::milliseconds timeout)
      : conn_(conn), timeout_(timeout) {}

  // Writes the frames in `buffer` (REQUIRES: no frame open).
  Status Write(const FrameBuffer& buffer);
  // Writes one frame.
  Status WriteFrame(FrameType type, std::span<const std::uint8_t> payload);
  // Writes `frames` whole frames already encoded in `bytes` (a batch built
  // elsewhere, e.g. by the codec's workers).
  Status WriteEncoded(std::span<const std::uint8_t> bytes, std::uint64_t frames);
  // Writes one frame only if no other thread is writing right now; returns
  // false (and writes nothing) if the writer is busy. For best-effort Abort
  // and Error frames from a thread that must not block (not paced).
  bool TryWriteFrame(FrameType type, std::span<const std::uint8_t> payload,
                     std::chrono::milliseconds timeout);

  // Paces every later write so that the bytes written average at most
  // `bytes_per_s` (0: no limit), with bursts of up to 20 ms of it: the
  // wire-side rate cap of a migration (wire-protocol §6). Writers wait
  // before writing; the wait counts in `paced_micros`.
  void SetRateLimit(std::uint64_t bytes_per_s) { rate_.store(bytes_per_s); }
  std::uint64_t paced_micros() const { return paced_micros_.load(std::memory_order_relaxed); }

  // Frames and bytes (headers included) written so far.
  std::uint64_t bytes_written() const { return bytes_.load(std::memory_order_relaxed); }
  std::uint64_t frames_written() const { return frames_.load(std::memory_order_relaxed); }
  // steady_clock time of the last successful write (for keepalives).
  MonotonicClock::time_point last_write() const;

 private:
  Status WriteLocked(std::span<const std::uint8_t> bytes, std::uint64_t frames, Deadline deadline);
  // Waits until `n` more bytes fit the rate limit. REQUIRES: mu_ held.
  void PaceLocked(std::size_t n);

  Connection* conn_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::atomic<std::uint64_t> rate_{0};
  MonotonicClock::time_point paced_until_{};  // guarded by mu_
  std::atomic<std::uint64_t> paced_micros_{0};
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> frames_{0};
  std::atomic<MonotonicClock::rep> last_write_{0};
};

// A frame handed out by FrameReader: type and payload (a view into the
// reader's buffer, valid until the next Next()).
struct FrameView {
  FrameType type = FrameType::kInvalid;
  std::span<const std::uint8_t> payload;
};

class FrameReader {
 public:
  // `conn` must outlive the reader. `peer` names the other side in messages
  // ("source", "destination").
  FrameReader(Connection* conn, std::string peer);

  // Reads the next frame that is neither Keepalive nor an unknown optional
  // type. `idle_timeout` bounds the wait for each frame (every frame,
  // Keepalive included, restarts it); `state` names the caller's state in
  // messages. Errors:
  //   * ProtocolError: type 0, unknown mandatory type, length above the
  //     type's limit ("Data frame of 9999999 bytes exceeds the limit of ...");
  //   * Corruption: CRC mismatch ("frame checksum mismatch: Data frame of N
  //     bytes in state Streaming");
  //   * Unavailable: the peer closed the connection between frames ("the
  //     source closed the connection in state Streaming") or inside one
  //     ("... after k of n bytes of a Data frame ...");
  //   * Timeout: "no frame from the source for 30 s in state Streaming".
  // After an error the reader must not be used again.
  Result<FrameView> Next(std::chrono::milliseconds idle_timeout, std::string_view state);

  // True if a whole frame is already buffered, so Next() will not wait for
  // the network. Lets a caller batch its own output while frames keep coming
  // and flush it before it would block.
  bool HasBufferedFrame() const;

  // Bytes (headers included) and frames read so far, skipped ones included.
  std::uint64_t bytes_read() const { return bytes_.load(std::memory_order_relaxed); }
  std::uint64_t frames_read() const { return frames_.load(std::memory_order_relaxed); }
  // Optional frames skipped because their type is unknown.
  std::uint64_t unknown_optional_skipped() const { return unknown_skipped_; }

 private:
  // Makes at least `n` bytes available from `begin_`. `header` is the frame
  // being read (null while reading a header), for the messages.
  Status Fill(std::size_t n, Deadline deadline, std::chrono::milliseconds idle_timeout,
              std::string_view state, const FrameHeader* header);

  Connection* conn_;
  std::string peer_;
  std::vector<std::uint8_t> buf_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> frames_{0};
  std::uint64_t unknown_skipped_ = 0;
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_FRAME_IO_H_
