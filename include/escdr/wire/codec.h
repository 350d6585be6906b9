// The wire codec (wire protocol version 4, docs/wire-protocol.md §3.14):
// batches of frames compressed into Packed frames, with zstd or lz4, on
// worker threads.
//
// The source session builds its frames (Data, Refs, Dup) for each read from
// its QEMU into a FrameBuffer as before and hands the buffer to a
// PackedWriter instead of the FrameWriter. The PackedWriter sends the batch
// as one Packed frame {codec, decoded_size, compressed frames} when that is
// smaller, and as the frames themselves otherwise, in the order the batches
// came, from `threads` workers. On the destination, UnpackBatch() decodes
// a Packed payload after checking its declared size against the cap
// (kMaxPackedDecoded: no decompression bomb), and PackedFrames walks the
// decoded frames with the checks FrameReader applies to frames from the
// network (type, length limit, CRC32C).
//
// Thread safety: PackedWriter::Write/Flush from one thread (the stats from
// any); BatchUnpacker and PackedFrames are used by one thread each.
#ifndef ESCDR_WIRE_CODEC_H_
#define ESCDR_WIRE_CODEC_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/wire/frame_io.h"

namespace escdr::wire {

// §3.14 Packed.codec. 0 is never sent in a Packed frame.
enum class Codec : std::uint8_t { kNone = 0, kZstd = 1, kLz4 = 2 };

// The codec and level the source uses. The default is what the benchmark
// in docs/benchmarks-codec.md chose.
struct CodecSpec {
  Codec codec = Codec::kZstd;
  int level = 1;  // zstd only: ZSTD_minCLevel() .. ZSTD_maxCLevel(), 0 = zstd's default
  // "none", "lz4", "zstd:1".
  std::string ToString() const;
};
// Parses "none", "lz4", "zstd" (level 1) or "zstd:LEVEL"; InvalidArgument
// naming the text otherwise.
Result<CodecSpec> ParseCodecSpec(std::string_view text);
// "none", "zstd", "lz4", or "codec N" for unknown values.
std::string CodecName(std::uint8_t codec);

// Compresses batches of frames into Packed payloads; one per thread (it
// keeps the compression context).
class BatchPacker {
 public:
  explicit BatchPacker(CodecSpec spec);
  ~BatchPacker();
  BatchPacker(const BatchPacker&) = delete;
  BatchPacker& operator=(const BatchPacker&) = delete;

  // Writes the Packed payload of `frames` (whole frames, at most
  // kMaxPackedDecoded bytes) to `out` and returns true, or returns false if
  // it would not be smaller than the frames (the caller sends those).
  bool Pack(std::span<const std::uint8_t> frames, std::vector<std::uint8_t>* out);

 private:
  CodecSpec spec_;
  void* zstd_ = nullptr;  // ZSTD_CCtx
};

// Decodes Packed payloads; keeps its buffer and zstd context between calls.
class BatchUnpacker {
 public:
  BatchUnpacker();
  ~BatchUnpacker();
  BatchUnpacker(const BatchUnpacker&) = delete;
  BatchUnpacker& operator=(const BatchUnpacker&) = delete;

  // The decoded frames of a Packed payload, valid until the next call.
  // Checks, before decoding: the codec is zstd or lz4, the declared size is
  // at least one frame header and at most `max_decoded` (kMaxPackedDecoded
  // at most); then that the data decodes to exactly that size. Errors:
  // ProtocolError (header, codec, declared size), Corruption (the data).
  Result<std::span<const std::uint8_t>> Unpack(std::span<const std::uint8_t> payload,
                                               std::size_t max_decoded = kMaxPackedDecoded);

 private:
  std::vector<std::uint8_t> buf_;
  void* zstd_ = nullptr;  // ZSTD_DCtx
};

// Walks the frames of a decoded batch.
class PackedFrames {
 public:
  explicit PackedFrames(std::span<const std::uint8_t> batch) : rest_(batch) {}
  // The next frame, or nullopt at the end. Each frame is checked as
  // FrameReader checks frames: it must be a Data, Refs or Dup frame (the
  // only frames a batch may carry), within its type's length limit, whole,
  // and its CRC32C must match. Errors: ProtocolError, Corruption.
  Result<std::optional<FrameView>> Next();

 private:
  std::span<const std::uint8_t> rest_;
  std::size_t index_ = 0;
};

// What a PackedWriter did, for MigrationReport.
struct CodecStats {
  std::uint64_t batches = 0;         // batches written
  std::uint64_t batches_packed = 0;  // ... of which as a Packed frame
  std::uint64_t frame_bytes = 0;     // bytes of the frames handed in (headers included)
  std::uint64_t wire_bytes = 0;      // bytes written for them (Packed frames or the frames)
  std::uint64_t cpu_micros = 0;      // thread CPU time spent compressing
};

// Sends batches of frames through a FrameWriter: each as a Packed frame or
// as itself (above), compressed on `threads` workers (1: on the caller's
// thread), written in the order they came. With workers, Write() copies the
// batch and returns once a worker can take it; at most 2 * threads batches
// wait at a time. A failed write is returned by the next Write() or Flush().
class PackedWriter {
 public:
  // `writer` must outlive this object. codec kNone: every batch is written
  // as it is, on the caller's thread.
  PackedWriter(FrameWriter* writer, CodecSpec spec, int threads);
  ~PackedWriter();  // stops the workers; batches not yet written are dropped
  PackedWriter(const PackedWriter&) = delete;
  PackedWriter& operator=(const PackedWriter&) = delete;

  // REQUIRES: no frame open in `frames`; frames.size() <= kMaxPackedDecoded.
  Status Write(const FrameBuffer& frames);
  // Waits until every batch handed in is written; the first error, if any.
  Status Flush();
  // Wakes and stops everything (a failed session); later calls fail.
  void Stop();

  CodecStats stats() const;

 private:
  struct Job {
    std::uint64_t seq = 0;
    std::vector<std::uint8_t> frames;
    bool taken = false;
  };
  Status WriteBatch(BatchPacker& packer, std::span<const std::uint8_t> frames,
                    std::vector<std::uint8_t>* scratch);
  void Worker();

  FrameWriter* writer_;
  CodecSpec spec_;
  int threads_;
  std::unique_ptr<BatchPacker> inline_packer_;
  std::vector<std::uint8_t> inline_frames_;
  std::vector<std::uint8_t> inline_scratch_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;          // not yet taken by a worker
  std::uint64_t next_seq_ = 0;    // of the next Write()
  std::uint64_t next_write_ = 0;  // the batch whose turn it is to be written
  bool stop_ = false;
  Status error_;
  std::vector<std::thread> workers_;

  std::atomic<std::uint64_t> batches_{0};
  std::atomic<std::uint64_t> batches_packed_{0};
  std::atomic<std::uint64_t> frame_bytes_{0};
  std::atomic<std::uint64_t> wire_bytes_{0};
  std::atomic<std::uint64_t> cpu_micros_{0};
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_CODEC_H_
