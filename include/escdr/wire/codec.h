// The wire codec (wire protocol version 4, docs/wire-protocol.md §3.14):
// batches of frames compressed into Packed frames, with zstd or lz4, on
// worker threads.
//
// The source session builds its frames (Data, Refs, Dup) for each read from
// its QEMU into a FrameBuffer as before and hands the buffer to a
// PackedWriter instead of the FrameWriter. The PackedWriter sends the batch
// as one Packed frame {codec, decoded_size, compressed frames} when that is
// smaller, and as the frames themselves otherwise, in the order the batches
// came, from `threads` workers. A batch is compressed in parts of about
// kPackedPartBytes, each on its own, so that the destination's
// BatchUnpacker can decode the parts of one frame on several threads. It
// checks the declared size against the cap (kMaxPackedDecoded: no
// decompression bomb) before decoding anything, and PackedFrames walks the
// decoded frames with the checks FrameReader applies to frames from the
// network (type, length limit, CRC32C).
//
// Thread safety: PackedWriter::Write/Flush from one thread (the stats from
// any); BatchUnpacker and PackedFrames are used by one thread each.
#ifndef ESCDR_WIRE_CODEC_H_
#define ESCDR_WIRE_CODEC_H_

#include <atomic>
#include <chrono>
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
  // kMaxPackedDecoded bytes), in parts of about `part_bytes`, to `out` and
  // returns true, or returns false if it would not be smaller than the
  // frames (the caller sends those).
  bool Pack(std::span<const std::uint8_t> frames, std::vector<std::uint8_t>* out,
            std::size_t part_bytes = kPackedPartBytes);

 private:
  CodecSpec spec_;
  void* zstd_ = nullptr;  // ZSTD_CCtx
  std::vector<std::uint8_t> part_;
};

// Decodes Packed payloads, the parts of one payload on `threads` threads
// (the caller's and threads - 1 workers); keeps its buffer and zstd
// contexts between calls.
class BatchUnpacker {
 public:
  explicit BatchUnpacker(int threads = 1);
  ~BatchUnpacker();
  BatchUnpacker(const BatchUnpacker&) = delete;
  BatchUnpacker& operator=(const BatchUnpacker&) = delete;

  // The decoded frames of a Packed payload, valid until the next call.
  // Checks, before decoding: the codec is zstd or lz4, 1 <= parts <=
  // kMaxPackedParts, the part sizes add up to the data, the declared size is
  // at least one frame header and at most `max_decoded` (kMaxPackedDecoded
  // at most); then that each part decodes to exactly its share. Errors:
  // ProtocolError (header, codec, parts, declared size), Corruption (data).
  Result<std::span<const std::uint8_t>> Unpack(std::span<const std::uint8_t> payload,
                                               std::size_t max_decoded = kMaxPackedDecoded);
  // Thread CPU time the workers spent decoding (the caller's own time is
  // the caller's to measure).
  std::chrono::microseconds worker_cpu_time() const;

 private:
  struct Part {
    std::span<const std::uint8_t> src;
    std::uint8_t* dst = nullptr;
    std::size_t size = 0;
    std::size_t index = 0;
  };
  // Decodes one part with `dctx` (a ZSTD_DCtx*); error messages name it.
  Status DecodePart(void* dctx, std::uint8_t codec, const Part& part) const;
  // Runs parts until none is left; the caller's thread and the workers.
  void Drain(void* dctx);
  void Worker();

  std::vector<std::uint8_t> buf_;
  void* zstd_ = nullptr;  // ZSTD_DCtx of the caller's thread

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Part> parts_;      // of the payload being decoded
  std::uint8_t codec_ = 0;
  std::size_t next_part_ = 0;    // the next part not yet taken
  std::size_t parts_done_ = 0;
  std::uint64_t generation_ = 0;  // one per Unpack with workers
  Status error_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
  std::atomic<std::int64_t> worker_cpu_micros_{0};
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
  };
  // Packs `frames` into *payload (false: they go as they are), counting
  // the thread's CPU time.
  bool Compress(BatchPacker& packer, std::span<const std::uint8_t> frames,
                std::vector<std::uint8_t>* payload);
  // Writes the batch (the Packed `payload`, or the `frames`) and counts it.
  Status Send(bool packed, std::span<const std::uint8_t> frames,
              const std::vector<std::uint8_t>& payload);
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
