#include "escdr/migrate/source_session.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "escdr/page/page.h"
#include "escdr/page/page_ring.h"
#include "escdr/qemu/stream_parser.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/coding.h"
#include "escdr/wire/dedup.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"
#include "migrate/page_tag.h"
#include "migrate/session_util.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;
using wire::FrameType;

// The source's receiver states (wire-protocol §5).
enum class State { kAwaitHello, kAwaitAvailability, kStreaming, kAwaitResult, kDone, kAborted };

const char* StateName(State s) {
  switch (s) {
    case State::kAwaitHello: return "AwaitHello";
    case State::kAwaitAvailability: return "AwaitAvailability";
    case State::kStreaming: return "Streaming";
    case State::kAwaitResult: return "AwaitResult";
    case State::kDone: return "Done";
    case State::kAborted: return "Aborted";
  }
  return "?";
}

Status Unexpected(FrameType type, State state) {
  return Status::ProtocolError(fmt::format("{} frame not expected from the destination in state {}",
                                           wire::FrameTypeName(type), StateName(state)));
}

std::uint64_t RandomId() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd() ^ 1;  // never 0
}

constexpr milliseconds kBestEffortWrite{1000};
constexpr std::size_t kMaxZeroMarks = 4096;

}  // namespace

class SourceSession::Impl final : public StreamVisitor {
 public:
  Impl(std::unique_ptr<wire::Connection> peer, const StaticContent* content, SourceParams params,
       const SourceOptions& options)
      : peer_(std::move(peer)),
        content_(content),
        params_(std::move(params)),
        options_(options),
        writer_(peer_.get(), options.idle_timeout),
        reader_(peer_.get(), "destination"),
        version_(options.protocol_version) {
    writer_.SetRateLimit(options.wire_rate);
  }

  ~Impl() override {
    if (packer_) packer_->Stop();
    if (back_.joinable()) back_.join();
  }

  Status Handshake();
  Status HandshakeSteps(bool* from_peer);
  Result<MigrationReport> Run(std::unique_ptr<wire::Connection> qemu);
  void Cancel(const std::string& reason);

  std::uint64_t migration_id() const { return params_.migration_id; }
  std::uint32_t available_entries() const { return availability_.available_count(); }

  // StreamVisitor: builds frames in out_ as the parser reports the stream.
  Status OnBytes(std::span<const std::uint8_t> bytes) override;
  Status OnBlockList(const std::vector<RamBlockInfo>& blocks) override;
  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override;
  Status OnZero(std::uint32_t, std::uint64_t, std::uint8_t) override {
    ++report_.zero_records;
    return Status::OK();
  }
  // Every byte the parser reports is sent by the FlushOut() that follows.
  void CountReported(std::size_t n) { reported_bytes_ += n; }
  Status OnPhase(StreamPhase phase) override {
    if (phase == StreamPhase::kRamComplete) ram_complete_at_ = MonotonicClock::now();
    return Status::OK();
  }

 private:
  void ForwardLoop();
  void BackLoop();
  // The receiver state machine: consumes one frame from the destination.
  // `from_peer` is set when the error is the destination's own report.
  Status Step(const wire::FrameView& frame, bool* from_peer);
  // Waits until the next read of qemu_read_chunk bytes fits the stream
  // budget (wire-protocol §6), sending keepalives meanwhile. Returns early,
  // OK, if the session failed. Timeout if the destination reports no
  // progress for idle_timeout.
  Status WaitForBudget();
  void NotifyFlow();
  void CloseOpenFrame();
  Status FlushOut();
  // Sends a PAGE payload that is not elided: as a Dup entry if its bytes
  // are in the dedup history, in full (Data) otherwise.
  // `offset` is the page's offset in its RAM block (its record header is
  // `offset | PAGE | CONTINUE` when it continues the block).
  Status SendPage(std::uint64_t offset, const std::uint8_t* data, const PageHash& hash);
  // Opens a Refs or Dup frame for the next entry, folding the record's
  // CONTINUE header (`word`) into the entry when it ends the open Data
  // frame; returns the word folded (0: none).
  std::uint64_t OpenEntryFrame(FrameType type, std::uint64_t word, std::uint64_t first_seq);
  void MaybeKeepalive();
  // Records the first failure, tells the destination (unless it reported it)
  // and ends the connections (HalfClose) so that every thread stops.
  void Fail(Status s, bool tell_peer);
  // Shuts the QEMU connection down and the write side of the peer's: the
  // destination reads our Error or Abort, then end of file. Whoever reads
  // the peer then drains it (Linger), so that closing it sends no reset.
  void HalfClose();
  void Linger() {
    migrate_internal::DrainAndShutdown(*peer_, Deadline::After(migrate_internal::kLingerTime),
                                       migrate_internal::kLingerBytes);
  }

  std::unique_ptr<wire::Connection> peer_;
  const StaticContent* content_;
  SourceParams params_;
  SourceOptions options_;
  wire::FrameWriter writer_;
  wire::FrameReader reader_;
  std::uint16_t version_;  // the protocol version both sides speak
  wire::Availability availability_;
  bool eliding_ = false;
  // The wire codec (version 4): the dedup index and the compressing writer
  // (null: frames go to writer_ as they are).
  std::optional<wire::DedupIndex> dedup_;
  std::unique_ptr<wire::PackedWriter> packer_;
  // Tags every elided page under the destination's key (version 3, §6).
  std::optional<migrate_internal::PageTagger> tagger_;

  std::mutex conn_mu_;  // guards qemu_ against Cancel() while Run() installs it
  std::unique_ptr<wire::Connection> qemu_;
  bool cancelled_ = false;

  std::atomic<State> state_{State::kAwaitHello};
  migrate_internal::FailureLatch failure_;
  std::thread back_;
  bool back_done_ = false;  // guarded by flow_mu_; the back path has ended

  // Forward path (Run's thread).
  wire::FrameBuffer out_;  // may reference chunk_ until FlushOut()
  std::span<const std::uint8_t> chunk_;  // the bytes being parsed
  std::uint32_t entries_in_frame_ = 0;  // of the open Refs or Dup frame
  std::vector<int> block_handles_;  // stream block -> StaticContent block handle
  MigrationReport report_;
  std::optional<MonotonicClock::time_point> ram_complete_at_;

  // The window of unacknowledged references (§6): slot seq % window_pages.
  std::mutex window_mu_;
  PageRing window_;
  std::uint64_t next_seq_ = 0;  // guarded by window_mu_
  std::uint64_t acked_ = 0;     // guarded by window_mu_

  // The stream budget (§6). stream_read_ is written by the forward path,
  // delivered_ by the back path (from Acks); flow_cv_ wakes the forward path
  // when delivered_ grows or the session fails.
  std::mutex flow_mu_;
  std::condition_variable flow_cv_;
  std::atomic<std::uint64_t> stream_read_{0};
  std::atomic<std::uint64_t> delivered_{0};
  // Forward path only. A ZERO record is 9 stream bytes but a whole page for
  // the destination QEMU to write: the budget counts it as kPageSize until
  // the destination has delivered it. zero_marks_ holds (stream bytes sent,
  // ZERO records among them) after each read; a full queue merges into its
  // last mark, which only delays the release of those records.
  std::uint64_t reported_bytes_ = 0;
  std::deque<std::pair<std::uint64_t, std::uint64_t>> zero_marks_;
  std::uint64_t zeros_delivered_ = 0;
  // Stream bytes plus kPageSize per ZERO record read and not yet delivered.
  std::uint64_t InFlightCost();

  // Back path (its own thread until joined).
  std::optional<wire::DestinationResult> result_;
  std::uint64_t return_path_bytes_ = 0;
  migrate_internal::ReturnPathWatcher return_path_;
  std::optional<MonotonicClock::time_point> shut_at_;
};

// ---- handshake ----

Status SourceSession::Impl::Handshake() {
  bool from_peer = false;
  Status s = HandshakeSteps(&from_peer);
  if (!s.ok()) {
    Fail(s, !from_peer);
    Linger();  // no other thread reads the peer yet
  }
  return s;
}

Status SourceSession::Impl::HandshakeSteps(bool* from_peer) {
  wire::Prepare prepare;
  prepare.migration_id = params_.migration_id;
  prepare.vm_name = params_.vm_name;
  prepare.kind = params_.kind;
  prepare.window_pages = options_.window_pages;
  const bool codec = version_ >= 4;
  if (codec) {
    prepare.dedup_pages = options_.dedup_pages;
    prepare.codec = static_cast<std::uint8_t>(options_.codec.codec);
  }
  if (content_ != nullptr) {
    prepare.catalog_checksum = content_->checksum();
    prepare.catalog_entries = content_->size();
  }
  ESCDR_RETURN_IF_ERROR(prepare.Validate());

  wire::FrameBuffer b;
  b.Append(FrameType::kHello, wire::Hello{version_, wire::Role::kSource}.Encode());
  b.Append(FrameType::kPrepare, prepare.Encode(version_));
  ESCDR_RETURN_IF_ERROR(writer_.Write(b));

  for (State state : {State::kAwaitHello, State::kAwaitAvailability}) {
    state_ = state;
    auto timeout = state == State::kAwaitHello ? options_.idle_timeout : options_.prepare_timeout;
    ESCDR_ASSIGN_OR_RETURN(wire::FrameView f, reader_.Next(timeout, StateName(state)));
    if (f.type == FrameType::kError || f.type == FrameType::kAbort) return Step(f, from_peer);
    if (state == State::kAwaitHello) {
      if (f.type != FrameType::kHello) return Unexpected(f.type, state);
      ESCDR_ASSIGN_OR_RETURN(wire::Hello h, wire::Hello::Decode(f.payload));
      if (h.role != wire::Role::kDestination) {
        return Status::ProtocolError("the destination's Hello does not have the destination role");
      }
      if (h.version != version_) {
        return Status::VersionMismatch(fmt::format(
            "the destination answered protocol version {} to version {}, which this agent "
            "requires",
            h.version, version_));
      }
    } else {
      if (f.type != FrameType::kAvailability) return Unexpected(f.type, state);
      ESCDR_ASSIGN_OR_RETURN(availability_, wire::Availability::Decode(f.payload, version_));
      if (availability_.catalog_entries != prepare.catalog_entries) {
        return Status::ProtocolError(fmt::format(
            "the destination's Availability covers {} catalog entries, Prepare announced {}",
            availability_.catalog_entries, prepare.catalog_entries));
      }
    }
  }
  eliding_ = content_ != nullptr && options_.window_pages > 0 &&
             availability_.available_count() > 0;
  report_.catalog_entries = prepare.catalog_entries;
  report_.available_entries = availability_.available_count();
  if (eliding_) {
    // Set up now, before QEMU starts sending (see page_ring.h).
    ESCDR_ASSIGN_OR_RETURN(window_, PageRing::Create(options_.window_pages));
    ESCDR_ASSIGN_OR_RETURN(tagger_, migrate_internal::PageTagger::Create(availability_.key));
  }
  if (codec && options_.dedup_pages > 0) {
    ESCDR_ASSIGN_OR_RETURN(dedup_, wire::DedupIndex::Create(options_.dedup_pages));
  }
  if (codec && options_.codec.codec != wire::Codec::kNone) {
    packer_ = std::make_unique<wire::PackedWriter>(&writer_, options_.codec, options_.codec_threads);
  }
  if (codec) {
    report_.codec = static_cast<std::uint8_t>(options_.codec.codec);
    report_.codec_level = options_.codec.level;
  }
  return Status::OK();
}

// ---- failure and cancellation ----

void SourceSession::Impl::HalfClose() {
  // ENOTCONN (the peer already reset the connection) leaves nothing to do.
  (void)peer_->ShutdownWrite();
  std::lock_guard<std::mutex> lock(conn_mu_);
  if (qemu_) qemu_->Shutdown();
}

void SourceSession::Impl::NotifyFlow() {
  // Taking the lock orders this wake-up after a waiter's check of its
  // condition, so it cannot be lost.
  { std::lock_guard<std::mutex> lock(flow_mu_); }
  flow_cv_.notify_all();
}

void SourceSession::Impl::Fail(Status s, bool tell_peer) {
  if (!failure_.Set(s)) return;
  state_ = State::kAborted;
  NotifyFlow();
  if (packer_) packer_->Stop();
  if (tell_peer) {
    (void)writer_.TryWriteFrame(FrameType::kError, wire::EncodeError(s), kBestEffortWrite);
  }
  HalfClose();
}

void SourceSession::Impl::Cancel(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    cancelled_ = true;
  }
  Status s = Status::Aborted(fmt::format("migration cancelled on the source: {}", reason));
  if (!failure_.Set(s)) return;
  state_ = State::kAborted;
  NotifyFlow();
  if (packer_) packer_->Stop();
  (void)writer_.TryWriteFrame(FrameType::kAbort, wire::EncodeAbort(reason), kBestEffortWrite);
  HalfClose();
}

// ---- run ----

Result<MigrationReport> SourceSession::Impl::Run(std::unique_ptr<wire::Connection> qemu) {
  const auto start = MonotonicClock::now();
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    qemu_ = std::move(qemu);
    if (cancelled_) qemu_->Shutdown();
  }
  if (failure_.failed()) {
    Linger();  // cancelled before Run(): no other thread reads the peer
    return Err(failure_.status());
  }
  state_ = State::kStreaming;
  back_ = std::thread([this] { BackLoop(); });
  ForwardLoop();
  if (failure_.failed()) {
    // The back path drains the peer; if the destination neither closes nor
    // goes quiet within the linger time, cut the connection.
    std::unique_lock<std::mutex> lock(flow_mu_);
    if (!flow_cv_.wait_for(lock, migrate_internal::kLingerTime, [this] { return back_done_; })) {
      lock.unlock();
      peer_->Shutdown();
    }
  }
  back_.join();
  if (failure_.failed()) return Err(failure_.status());

  const auto end = MonotonicClock::now();
  state_ = State::kDone;
  MigrationReport r = report_;
  r.pages_from_donor = result_->pages_from_donor;
  r.fallbacks = result_->fallbacks;
  r.rebuilt_bytes = result_->rebuilt_bytes;
  r.donor_pages_scanned = result_->donor_pages_scanned;
  r.scan_time = std::chrono::microseconds(result_->scan_micros);
  r.return_path_bytes = return_path_bytes_;
  r.wire_bytes_sent = writer_.bytes_written();
  r.wire_bytes_received = reader_.bytes_read();
  if (packer_) {
    const wire::CodecStats c = packer_->stats();
    r.codec_frame_bytes = c.frame_bytes;
    r.codec_wire_bytes = c.wire_bytes;
    r.codec_cpu_time = std::chrono::microseconds(c.cpu_micros);
  }
  r.wire_pacing_time = std::chrono::microseconds(writer_.paced_micros());
  r.total_time = std::chrono::duration_cast<std::chrono::microseconds>(end - start);
  if (ram_complete_at_) {
    auto until = shut_at_.value_or(end);
    r.downtime = std::chrono::duration_cast<std::chrono::microseconds>(until - *ram_complete_at_);
    r.downtime_measured = true;
  }
  return r;
}

void SourceSession::Impl::MaybeKeepalive() {
  if (MonotonicClock::now() - writer_.last_write() < options_.keepalive_interval) return;
  Status s = writer_.WriteFrame(FrameType::kKeepalive, {});
  if (!s.ok()) Fail(s.WithContext("cannot send a keepalive to the destination"), false);
}

std::uint64_t SourceSession::Impl::InFlightCost() {
  const std::uint64_t delivered = delivered_.load();
  while (!zero_marks_.empty() && zero_marks_.front().first <= delivered) {
    zeros_delivered_ = zero_marks_.front().second;
    zero_marks_.pop_front();
  }
  return report_.stream_bytes - delivered + (report_.zero_records - zeros_delivered_) * kPageSize;
}

Status SourceSession::Impl::WaitForBudget() {
  const std::uint64_t budget = options_.max_stream_in_flight;
  const std::uint64_t read = report_.stream_bytes;
  auto fits = [&] {
    return InFlightCost() + options_.qemu_read_chunk <= budget || failure_.failed();
  };
  if (budget == 0 || fits()) return Status::OK();
  const auto start = MonotonicClock::now();
  ++report_.budget_waits;
  std::uint64_t seen = delivered_.load();
  auto progress_at = start;
  std::unique_lock<std::mutex> lock(flow_mu_);
  while (!fits()) {
    const auto now = MonotonicClock::now();
    if (delivered_.load() != seen) {
      seen = delivered_.load();
      progress_at = now;
    } else if (now - progress_at >= options_.idle_timeout) {
      return Status::Timeout(fmt::format(
          "the destination reported no stream bytes written to its QEMU for {} s, with {} bytes "
          "of the stream in flight (budget {} bytes)",
          options_.idle_timeout.count() / 1000.0, read - seen, budget));
    }
    // Bounded waits: a keepalive may fall due while the peer is slow.
    flow_cv_.wait_for(lock, std::min<milliseconds>(options_.keepalive_interval,
                                                   options_.idle_timeout));
    lock.unlock();
    MaybeKeepalive();
    lock.lock();
  }
  report_.budget_wait_time += std::chrono::duration_cast<std::chrono::microseconds>(
      MonotonicClock::now() - start);
  return Status::OK();
}

void SourceSession::Impl::ForwardLoop() {
  StreamParser parser(this);
  std::vector<std::uint8_t> buf(options_.qemu_read_chunk);
  for (;;) {
    if (failure_.failed()) return;
    Status budget = WaitForBudget();
    if (!budget.ok()) {
      Fail(budget, true);
      return;
    }
    if (failure_.failed()) return;
    auto got = qemu_->ReadSome(buf, Deadline::After(options_.keepalive_interval));
    if (failure_.failed()) return;
    if (!got.has_value()) {
      if (got.error().code() == StatusCode::kTimeout) {
        MaybeKeepalive();
        continue;
      }
      Fail(got.error().WithContext(fmt::format("cannot read the source QEMU's stream after {} bytes",
                                               report_.stream_bytes)),
           true);
      return;
    }
    if (*got == 0) break;
    report_.stream_bytes += *got;
    stream_read_.store(report_.stream_bytes);
    report_.max_stream_in_flight =
        std::max(report_.max_stream_in_flight, report_.stream_bytes - delivered_.load());
    chunk_ = std::span<const std::uint8_t>(buf.data(), *got);
    Status s = parser.Feed(chunk_);
    if (!s.ok()) {
      Fail(s.WithContext("source QEMU stream"), true);
      return;
    }
    s = FlushOut();
    if (!s.ok()) {
      Fail(s.WithContext("cannot send to the destination"), true);
      return;
    }
    const std::uint64_t zeros_marked = zero_marks_.empty() ? zeros_delivered_
                                                            : zero_marks_.back().second;
    if (report_.zero_records != zeros_marked) {
      if (zero_marks_.size() < kMaxZeroMarks) {
        zero_marks_.emplace_back(reported_bytes_, report_.zero_records);
      } else {
        zero_marks_.back() = {reported_bytes_, report_.zero_records};
      }
    }
  }
  chunk_ = {};
  Status s = parser.Finish();
  if (!s.ok()) {
    Fail(s.WithContext("the source QEMU closed its migration socket early"), true);
    return;
  }
  s = FlushOut();
  // Every batch is on the wire before End.
  if (s.ok() && packer_) s = packer_->Flush();
  if (s.ok()) {
    wire::EndSummary end;
    end.stream_bytes = report_.stream_bytes;
    {
      std::lock_guard<std::mutex> lock(window_mu_);
      end.refs = next_seq_;
    }
    end.page_records = report_.page_records;
    end.zero_records = report_.zero_records;
    end.pages_by_position = report_.pages_by_position;
    end.pages_by_content = report_.pages_by_content;
    end.pages_window_full = report_.pages_window_full;
    // The state changes before End goes out: Result may come right after it.
    state_ = State::kAwaitResult;
    s = writer_.WriteFrame(FrameType::kEnd, end.Encode());
  }
  if (!s.ok()) Fail(s.WithContext("cannot send to the destination"), true);
}

// ---- frame building (parser callbacks) ----

void SourceSession::Impl::CloseOpenFrame() {
  if (!out_.frame_open()) return;
  if (out_.open_type() == FrameType::kRefs || out_.open_type() == FrameType::kDup) {
    // Patch the entry count into the header: offset 8 of a Refs payload,
    // offset 0 of a Dup payload.
    std::uint8_t count[4];
    wire::StoreFixed32(count, entries_in_frame_);
    out_.PatchPayload(out_.open_type() == FrameType::kRefs ? 8 : 0, count);
    entries_in_frame_ = 0;
  }
  out_.End(/*drop_if_empty=*/true);
}

Status SourceSession::Impl::FlushOut() {
  CloseOpenFrame();
  if (out_.empty()) return Status::OK();
  Status s = packer_ ? packer_->Write(out_) : writer_.Write(out_);
  out_.Clear();
  return s;
}

Status SourceSession::Impl::OnBytes(std::span<const std::uint8_t> bytes) {
  CountReported(bytes.size());
  while (!bytes.empty()) {
    if (out_.frame_open() && out_.open_type() != FrameType::kData) CloseOpenFrame();
    if (!out_.frame_open()) out_.Begin(FrameType::kData);
    std::size_t n = std::min(bytes.size(), options_.max_data_frame - out_.open_payload_size());
    // Bytes in our read buffer stay put until FlushOut() has written them:
    // send them from there. Anything else (the parser's own buffer for a
    // record that straddled two reads) is valid only during this call.
    if (bytes.data() >= chunk_.data() && bytes.data() + n <= chunk_.data() + chunk_.size()) {
      out_.AppendPayloadRef(bytes.first(n));
    } else {
      out_.AppendPayload(bytes.first(n));
    }
    bytes = bytes.subspan(n);
    if (out_.open_payload_size() == options_.max_data_frame) out_.End();
  }
  return Status::OK();
}

Status SourceSession::Impl::OnBlockList(const std::vector<RamBlockInfo>& blocks) {
  block_handles_.clear();
  for (const RamBlockInfo& b : blocks) {
    block_handles_.push_back(content_ != nullptr ? content_->FindBlock(b.name) : -1);
  }
  return Status::OK();
}

Status SourceSession::Impl::OnPage(std::uint32_t block, std::uint64_t offset,
                                   const std::uint8_t* data) {
  ++report_.page_records;
  const std::span<const std::uint8_t> page(data, kPageSize);
  if (!eliding_ && !dedup_) return OnBytes(page);
  const PageHash hash = HashPage(data);
  if (!eliding_) return SendPage(offset, data, hash);
  // From here the page is either sent by SendPage (which counts it) or
  // elided (counted below).
  const std::uint32_t index = content_->Find(hash);
  if (index == kNoContent || !wire::BitmapTest(availability_.bitmap, index)) {
    return SendPage(offset, data, hash);
  }

  std::uint64_t seq = 0;
  bool window_full = false;
  {
    std::lock_guard<std::mutex> lock(window_mu_);
    if (next_seq_ - acked_ >= options_.window_pages) {
      window_full = true;
    } else {
      seq = next_seq_++;
      std::memcpy(window_.slot(seq), data, kPageSize);
    }
  }
  if (window_full) {
    // Never block the stream on an Ack (wire-protocol §6): send it in full.
    ++report_.pages_window_full;
    return SendPage(offset, data, hash);
  }
  CountReported(kPageSize);
  const int handle = block < block_handles_.size() ? block_handles_[block] : -1;
  if (handle >= 0 && content_->ContentAt(handle, offset / kPageSize) == index) {
    ++report_.pages_by_position;
  } else {
    ++report_.pages_by_content;
  }

  wire::RefEntry entry{0, index, {}};
  // The tag is of the source's own page, under the destination's key: the
  // donor's copy must match this page, not merely its XXH3 (§6).
  ESCDR_ASSIGN_OR_RETURN(entry.tag, tagger_->Tag(seq, data));
  entry.record_word = OpenEntryFrame(FrameType::kRefs, offset | wire::kPageContinueFlags, seq);
  wire::StoreRefEntry(out_.ExtendPayload(wire::RefEntrySize(version_)), entry, version_);
  if (++entries_in_frame_ == wire::kMaxRefsPerFrame) CloseOpenFrame();
  return Status::OK();
}

Status SourceSession::Impl::SendPage(std::uint64_t offset, const std::uint8_t* data,
                                     const PageHash& hash) {
  const std::span<const std::uint8_t> page(data, kPageSize);
  if (!dedup_) return OnBytes(page);
  // Every byte before this payload has been reported: this is its offset.
  const std::uint64_t position = reported_bytes_;
  const std::uint64_t key = wire::DedupKey(hash);
  const std::optional<std::uint64_t> earlier = dedup_->Find(key, data, position);
  // Either way the destination now holds these bytes at `position`, the
  // newest place a later duplicate can name.
  dedup_->Insert(key, data, position);
  if (!earlier) return OnBytes(page);
  CountReported(kPageSize);
  ++report_.pages_deduplicated;
  wire::DupEntry entry{0, *earlier, key};
  entry.record_word = OpenEntryFrame(FrameType::kDup, offset | wire::kPageContinueFlags, 0);
  wire::StoreDupEntry(out_.ExtendPayload(wire::kDupEntrySize), entry);
  if (++entries_in_frame_ == wire::kMaxDupsPerFrame) CloseOpenFrame();
  return Status::OK();
}

std::uint64_t SourceSession::Impl::OpenEntryFrame(FrameType type, std::uint64_t word,
                                                  std::uint64_t first_seq) {
  // Fold the record's 8-byte CONTINUE header into the entry when it is the
  // last thing in the open Data frame (wire-protocol §3.5). Even if those
  // bytes were not this record's header, the destination writes the same 8
  // bytes back in the same place, so the stream stays byte-identical.
  std::uint64_t folded = 0;
  std::uint8_t tail[8];
  if (word != 0 && out_.frame_open() && out_.open_type() == FrameType::kData &&
      out_.CopyPayloadTail(tail, sizeof(tail)) && wire::LoadBigEndian64(tail) == word) {
    out_.TrimPayload(8);
    folded = word;
  }
  if (out_.frame_open() && out_.open_type() != type) CloseOpenFrame();
  if (!out_.frame_open()) {
    out_.Begin(type);
    if (type == FrameType::kRefs) {
      std::uint8_t* h = out_.ExtendPayload(wire::kRefsFixedSize);
      wire::StoreFixed64(h, first_seq);
      wire::StoreFixed32(h + 8, 0);  // count, patched by CloseOpenFrame
      wire::StoreFixed32(h + 12, 0);
    } else {
      std::uint8_t* h = out_.ExtendPayload(wire::kDupFixedSize);
      wire::StoreFixed32(h, 0);  // count, patched by CloseOpenFrame
      wire::StoreFixed32(h + 4, 0);
    }
  }
  return folded;
}

// ---- frames from the destination ----

void SourceSession::Impl::BackLoop() {
  for (;;) {
    if (failure_.failed()) break;
    const State state = state_.load();
    auto f = reader_.Next(options_.idle_timeout, StateName(state));
    if (!f.has_value()) {
      Fail(f.error(), true);  // a no-op if the session already failed
      break;
    }
    if (failure_.failed()) break;  // failed meanwhile: the frame no longer matters
    bool from_peer = false;
    Status s = Step(*f, &from_peer);
    if (!s.ok()) {
      Fail(s, !from_peer);
      break;
    }
    if (result_) break;
  }
  // The only reader of the peer: after a failure, let the destination read
  // our Error before the connection closes (wire-protocol §9).
  if (failure_.failed()) Linger();
  {
    std::lock_guard<std::mutex> lock(flow_mu_);
    back_done_ = true;
  }
  flow_cv_.notify_all();
}

Status SourceSession::Impl::Step(const wire::FrameView& f, bool* from_peer) {
  const State state = state_.load();
  switch (f.type) {
    case FrameType::kError: {
      *from_peer = true;
      ESCDR_ASSIGN_OR_RETURN(Status peer, wire::DecodeError(f.payload));
      return Status(peer.code(), "destination reported: " + peer.message());
    }
    case FrameType::kAbort: {
      *from_peer = true;
      ESCDR_ASSIGN_OR_RETURN(std::string reason, wire::DecodeAbort(f.payload));
      return Status::Aborted("destination aborted the migration: " + reason);
    }
    case FrameType::kAck: {
      if (state != State::kStreaming && state != State::kAwaitResult) break;
      ESCDR_ASSIGN_OR_RETURN(wire::Ack ack, wire::Ack::Decode(f.payload, version_));
      {
        std::lock_guard<std::mutex> lock(window_mu_);
        if (ack.next_seq < acked_ || ack.next_seq > next_seq_) {
          return Status::ProtocolError(fmt::format(
              "Ack of {} is outside [{}, {}], the references acknowledged and sent", ack.next_seq,
              acked_, next_seq_));
        }
        acked_ = ack.next_seq;
      }
      // Stream bytes read so far bound what can have been sent and delivered.
      const std::uint64_t read = stream_read_.load();
      const std::uint64_t delivered = delivered_.load();
      if (ack.delivered_bytes < delivered || ack.delivered_bytes > read) {
        return Status::ProtocolError(fmt::format(
            "Ack reports {} stream bytes delivered, outside [{}, {}], the bytes reported before "
            "and the bytes read from the source QEMU",
            ack.delivered_bytes, delivered, read));
      }
      if (ack.delivered_bytes != delivered) {
        delivered_.store(ack.delivered_bytes);
        NotifyFlow();
      }
      return Status::OK();
    }
    case FrameType::kPageRequest: {
      if (state != State::kStreaming && state != State::kAwaitResult) break;
      ESCDR_ASSIGN_OR_RETURN(wire::PageRequest req, wire::PageRequest::Decode(f.payload));
      std::vector<std::uint8_t> payload;
      {
        std::lock_guard<std::mutex> lock(window_mu_);
        if (req.seq < acked_ || req.seq >= next_seq_) {
          return Status::ProtocolError(fmt::format(
              "PageRequest for reference {} is outside the window [{}, {})", req.seq, acked_,
              next_seq_));
        }
        payload = wire::EncodePageResponse(req.seq, window_.slot(req.seq));
      }
      return writer_.WriteFrame(FrameType::kPageResponse, payload)
          .WithContext("cannot send a page to the destination");
    }
    case FrameType::kReturnPath: {
      if (state != State::kStreaming && state != State::kAwaitResult) break;
      Status s = qemu_->WriteAll(f.payload, Deadline::After(options_.idle_timeout));
      if (!s.ok()) return s.WithContext("cannot write the return path to the source QEMU");
      return_path_bytes_ += f.payload.size();
      if (return_path_.Feed(f.payload) && !shut_at_) shut_at_ = MonotonicClock::now();
      return Status::OK();
    }
    case FrameType::kResult: {
      if (state != State::kAwaitResult) break;
      ESCDR_ASSIGN_OR_RETURN(wire::DestinationResult r, wire::DestinationResult::Decode(f.payload));
      result_ = r;
      return Status::OK();
    }
    default:
      break;
  }
  return Unexpected(f.type, state);
}

// ---- public API ----

SourceSession::SourceSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SourceSession::~SourceSession() = default;

Result<std::unique_ptr<SourceSession>> SourceSession::Connect(
    std::unique_ptr<wire::Connection> peer, const StaticContent* content,
    const SourceParams& params, const SourceOptions& options) {
  if (options.max_data_frame < kPageSize || options.max_data_frame > wire::kMaxDataPayload) {
    return Err(Status::InvalidArgument(fmt::format("max_data_frame {} is outside [{}, {}]",
                                                   options.max_data_frame, kPageSize,
                                                   wire::kMaxDataPayload)));
  }
  if (options.protocol_version < 3 || options.protocol_version > wire::kProtocolVersion) {
    return Err(Status::InvalidArgument(fmt::format(
        "protocol_version {} is not one this agent can speak as a source (3 or {})",
        options.protocol_version, wire::kProtocolVersion)));
  }
  if (options.dedup_pages > wire::kMaxDedupPages || options.codec_threads < 1 ||
      options.codec_threads > 64) {
    return Err(Status::InvalidArgument(fmt::format(
        "dedup_pages {} must be at most {} and codec_threads {} within 1..64",
        options.dedup_pages, wire::kMaxDedupPages, options.codec_threads)));
  }
  if (options.qemu_read_chunk == 0 || options.window_pages > wire::kMaxWindowPages) {
    return Err(Status::InvalidArgument(fmt::format(
        "qemu_read_chunk {} must be positive and window_pages {} at most {}",
        options.qemu_read_chunk, options.window_pages, wire::kMaxWindowPages)));
  }
  // The parser may hold up to one record (< 8 KiB) that only the next read
  // completes: the budget must leave room for it and a whole read.
  const std::uint64_t min_budget =
      std::max<std::uint64_t>(2 * std::uint64_t{options.qemu_read_chunk}, 64 << 10);
  if (options.max_stream_in_flight != 0 && options.max_stream_in_flight < min_budget) {
    return Err(Status::InvalidArgument(fmt::format(
        "max_stream_in_flight {} is below {} (twice qemu_read_chunk, at least 64 KiB); 0 turns "
        "the limit off",
        options.max_stream_in_flight, min_budget)));
  }
  SourceParams p = params;
  if (p.migration_id == 0) p.migration_id = RandomId();
  auto impl = std::make_unique<Impl>(std::move(peer), content, std::move(p), options);
  ESCDR_RETURN_IF_ERROR(impl->Handshake());
  return std::unique_ptr<SourceSession>(new SourceSession(std::move(impl)));
}

std::uint64_t SourceSession::migration_id() const { return impl_->migration_id(); }
std::uint32_t SourceSession::available_entries() const { return impl_->available_entries(); }

Result<MigrationReport> SourceSession::Run(std::unique_ptr<wire::Connection> qemu) {
  return impl_->Run(std::move(qemu));
}

void SourceSession::Cancel(const std::string& reason) { impl_->Cancel(reason); }

}  // namespace escdr
