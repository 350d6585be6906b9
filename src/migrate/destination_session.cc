#include "escdr/migrate/destination_session.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "escdr/page/page.h"
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

// The destination's receiver states (wire-protocol §5).
enum class State { kAwaitHello, kAwaitPrepare, kPrepared, kStreaming, kFinishing, kDone, kAborted };

const char* StateName(State s) {
  switch (s) {
    case State::kAwaitHello: return "AwaitHello";
    case State::kAwaitPrepare: return "AwaitPrepare";
    case State::kPrepared: return "Prepared";
    case State::kStreaming: return "Streaming";
    case State::kFinishing: return "Finishing";
    case State::kDone: return "Done";
    case State::kAborted: return "Aborted";
  }
  return "?";
}

Status Unexpected(FrameType type, State state) {
  return Status::ProtocolError(fmt::format("{} frame not expected from the source in state {}",
                                           wire::FrameTypeName(type), StateName(state)));
}

constexpr milliseconds kBestEffortWrite{1000};
// Ready output is collected up to this size before it is written to QEMU.
constexpr std::size_t kStageBytes = 256 * 1024;
// Data payloads at least this big are written straight from the frame
// buffer, without a copy into the stage.
constexpr std::size_t kDirectWriteBytes = 16 * 1024;
constexpr std::size_t kReturnPathChunk = 64 * 1024;
// Version 2 (wire-protocol §6): an Ack goes out at least after this many
// stream bytes were written to QEMU, and whenever the destination has caught
// up with the frames received, so the source's stream budget drains.
constexpr std::uint64_t kDeliveredAckBytes = 256 * 1024;

}  // namespace

class DestinationSession::Impl {
 public:
  Impl(std::unique_ptr<wire::Connection> peer, const DestinationOptions& options)
      : peer_(std::move(peer)),
        options_(options),
        writer_(peer_.get(), options.idle_timeout),
        reader_(peer_.get(), "source"),
        unpacker_(std::max(1, options.codec_threads)) {}

  ~Impl() { StopBackThread(); }

  Status Handshake();
  const wire::Prepare& prepare() const { return prepare_; }
  Status Offer(const StaticContent* content, const MemoryImage* donor,
               std::optional<DonorAvailability> scanned);
  Status Reject(const Status& reason);
  Result<MigrationReport> Run(std::unique_ptr<wire::Connection> qemu);
  void Cancel(const std::string& reason);

 private:
  // One piece of output held back behind an outstanding fallback page.
  struct Held {
    std::vector<std::uint8_t> bytes;
    bool pending = false;  // a hole for the page of reference `seq`
    std::uint64_t seq = 0;
    std::uint32_t content_index = 0;
    wire::PageTag tag{};   // the source's tag of that page
  };

  Status StreamFrames();
  // The receiver state machine: consumes one frame (never replies, except
  // for the PageRequests and Acks that the references themselves need).
  Status Step(const wire::FrameView& f, bool* from_peer);
  Status HandleRefs(std::span<const std::uint8_t> payload);
  Status HandleDup(std::span<const std::uint8_t> payload);
  Status HandlePacked(std::span<const std::uint8_t> payload, bool* from_peer);
  Status HandlePageResponse(std::span<const std::uint8_t> payload);
  Status Finish();

  bool holding() const { return !held_.empty(); }
  // Appends stream bytes to the output, in order.
  Status Emit(std::span<const std::uint8_t> bytes);
  // Room for one page of output; CancelPageSlot() takes it back.
  Result<std::uint8_t*> PageSlot();
  void CancelPageSlot();
  Status HoldBytes(std::size_t n);
  Status FlushStage();
  Status DrainHeld();
  Status WriteQemu(std::span<const std::uint8_t> bytes);
  std::uint64_t resolved() const {
    return pending_.empty() ? refs_received_ : pending_.begin()->first;
  }
  // Sends an Ack if one is due (§6); `idle`: no further frame is buffered
  // and the stage has been flushed.
  Status MaybeAck(bool force, bool idle);

  void BackLoop();
  void StopBackThread();
  // Records the first failure, tells the source (unless it reported it) and
  // ends the connections: the QEMU's at once, the peer's write side only, so
  // that the source reads our Error before end of file. The thread that
  // reads the peer then drains it (Linger) before it closes.
  void Fail(Status s, bool tell_peer);
  void ShutdownConnections();
  // For a failed write to the source from the QEMU reader thread: nothing
  // more can reach the source, so both connections are cut at once (which
  // also wakes Run()'s read of the peer).
  void FailPeerGone(Status s) {
    Fail(std::move(s), false);
    ShutdownConnections();
  }
  void Linger() {
    migrate_internal::DrainAndShutdown(*peer_, Deadline::After(migrate_internal::kLingerTime),
                                       migrate_internal::kLingerBytes);
  }

  std::unique_ptr<wire::Connection> peer_;
  DestinationOptions options_;
  wire::FrameWriter writer_;
  wire::FrameReader reader_;
  wire::Prepare prepare_;
  std::uint16_t version_ = wire::kProtocolVersion;  // agreed in the handshake
  std::atomic<State> state_{State::kAwaitHello};
  migrate_internal::FailureLatch failure_;

  const StaticContent* content_ = nullptr;
  const MemoryImage* donor_ = nullptr;
  DonorAvailability availability_;
  // Checks donor copies against the source's tags (version 3, §6); set when
  // the donor offers something.
  std::optional<migrate_internal::PageTagger> tagger_;
  std::uint64_t ack_every_ = 1;
  // The wire codec (version 4): the rebuilt stream's recent history, which
  // Dup entries copy from, and the decoder of Packed frames.
  wire::StreamHistory history_;
  wire::BatchUnpacker unpacker_;

  std::mutex conn_mu_;  // guards qemu_ against Cancel() while Run() installs it
  std::unique_ptr<wire::Connection> qemu_;
  bool cancelled_ = false;

  // Output (Run's thread). The stage is raw memory: page slots are filled by
  // the donor copy, so zero-filling them first would only cost time.
  std::unique_ptr<std::uint8_t[]> stage_{new std::uint8_t[kStageBytes]};
  std::size_t stage_size_ = 0;
  std::deque<Held> held_;
  std::size_t held_bytes_ = 0;
  std::map<std::uint64_t, Held*> pending_;  // outstanding fallbacks by seq
  std::uint64_t refs_received_ = 0;
  std::uint64_t acked_sent_ = 0;
  std::uint64_t delivered_sent_ = 0;  // delivered_bytes of the last Ack
  std::optional<wire::EndSummary> end_;
  MigrationReport report_;

  // The thread reading the destination QEMU (return path, keepalives).
  std::thread back_;
  std::mutex back_mu_;
  std::condition_variable back_cv_;
  bool qemu_closed_ = false;   // guarded by back_mu_
  bool stop_back_ = false;     // guarded by back_mu_
  std::uint64_t return_path_bytes_ = 0;  // guarded by back_mu_
  migrate_internal::ReturnPathWatcher return_path_;  // guarded by back_mu_
};

// ---- handshake ----

Status DestinationSession::Impl::Handshake() {
  auto fail = [this](Status s, bool tell_peer) {
    Fail(s, tell_peer);
    Linger();  // this thread is the peer's only reader
    return s;
  };
  for (State state : {State::kAwaitHello, State::kAwaitPrepare}) {
    state_ = state;
    auto f = reader_.Next(options_.idle_timeout, StateName(state));
    if (!f.has_value()) return fail(f.error(), true);
    bool from_peer = false;
    if (f->type == FrameType::kError || f->type == FrameType::kAbort) {
      Status s = Step(*f, &from_peer);
      return fail(s, !from_peer);
    }
    if (state == State::kAwaitHello) {
      if (f->type != FrameType::kHello) return fail(Unexpected(f->type, state), true);
      auto hello = wire::Hello::Decode(f->payload);
      if (!hello.has_value()) return fail(hello.error(), true);
      if (hello->role != wire::Role::kSource) {
        return fail(Status::ProtocolError("the source's Hello does not have the source role"), true);
      }
      auto version = wire::AcceptPeerVersion(hello->version);
      if (!version.has_value()) return fail(version.error(), true);
      version_ = *version;
      Status s = writer_.WriteFrame(FrameType::kHello,
                                    wire::Hello{*version, wire::Role::kDestination}.Encode());
      if (!s.ok()) return fail(s, false);
    } else {
      if (f->type != FrameType::kPrepare) return fail(Unexpected(f->type, state), true);
      auto prepare = wire::Prepare::Decode(f->payload, version_);
      if (!prepare.has_value()) return fail(prepare.error(), true);
      prepare_ = std::move(*prepare);
      if (prepare_.dedup_pages > options_.max_dedup_pages) {
        return fail(Status::ResourceExhausted(fmt::format(
                        "the source asks for a dedup history of {} pages; this destination keeps "
                        "at most {}",
                        prepare_.dedup_pages, options_.max_dedup_pages)),
                    true);
      }
      if (prepare_.dedup_pages > 0) {
        auto history = wire::StreamHistory::Create(prepare_.dedup_pages);
        if (!history.has_value()) return fail(history.error(), true);
        history_ = std::move(*history);
      }
      report_.codec = prepare_.codec;
    }
  }
  state_ = State::kPrepared;
  return Status::OK();
}

Status DestinationSession::Impl::Offer(const StaticContent* content, const MemoryImage* donor,
                                       std::optional<DonorAvailability> scanned) {
  if (state_ != State::kPrepared) {
    return Status::FailedPrecondition(
        fmt::format("cannot offer availability in state {}", StateName(state_)));
  }
  if (content != nullptr) {
    if (content->kind() != prepare_.kind || content->checksum() != prepare_.catalog_checksum ||
        content->size() != prepare_.catalog_entries) {
      return Status::FailedPrecondition(fmt::format(
          "the destination's catalog ({}, checksum {:#018x}, {} entries) is not the one the "
          "source named ({}, checksum {:#018x}, {} entries)",
          content->kind().ToString(), content->checksum(), content->size(),
          prepare_.kind.ToString(), prepare_.catalog_checksum, prepare_.catalog_entries));
    }
  }
  // A version 2 source tags nothing, and the XXH3-128 of a donor copy alone
  // can be forged by the donor's guest (docs/security.md §4): such a
  // migration gets no donor pages and runs as a plain proxied one.
  const bool keyed = version_ >= 3;
  wire::Availability a;
  a.catalog_entries = prepare_.catalog_entries;
  if (keyed) {
    ESCDR_ASSIGN_OR_RETURN(a.key, migrate_internal::NewDonorKey());
  }
  if (keyed && content != nullptr && donor != nullptr && prepare_.catalog_entries > 0) {
    if (scanned) {
      if (scanned->catalog_entries != content->size()) {
        return Status::InvalidArgument(fmt::format(
            "the donor scan covers {} entries, the catalog has {}", scanned->catalog_entries,
            content->size()));
      }
      availability_ = std::move(*scanned);
    } else {
      ESCDR_ASSIGN_OR_RETURN(availability_, ScanDonor(*donor, *content));
    }
    ESCDR_ASSIGN_OR_RETURN(tagger_, migrate_internal::PageTagger::Create(a.key));
    content_ = content;
    donor_ = donor;
  } else {
    availability_ = DonorAvailability::None(prepare_.catalog_entries);
  }
  a.bitmap = availability_.bitmap;
  Status s = writer_.WriteFrame(FrameType::kAvailability, a.Encode(version_));
  if (!s.ok()) {
    Fail(s, false);
    return s;
  }
  report_.catalog_entries = prepare_.catalog_entries;
  report_.available_entries = availability_.available;
  report_.donor_pages_scanned = availability_.pages_scanned;
  report_.scan_time = availability_.scan_time;
  ack_every_ = std::max<std::uint64_t>(1, prepare_.window_pages / 4);
  state_ = State::kStreaming;
  return Status::OK();
}

Status DestinationSession::Impl::Reject(const Status& reason) {
  Fail(reason, true);
  Linger();  // Run() never started: nobody else reads the peer
  return Status::OK();
}

// ---- failure and cancellation ----

void DestinationSession::Impl::ShutdownConnections() {
  peer_->Shutdown();
  std::lock_guard<std::mutex> lock(conn_mu_);
  if (qemu_) qemu_->Shutdown();
}

void DestinationSession::Impl::Fail(Status s, bool tell_peer) {
  if (!failure_.Set(s)) return;
  state_ = State::kAborted;
  if (tell_peer) {
    (void)writer_.TryWriteFrame(FrameType::kError, wire::EncodeError(s), kBestEffortWrite);
  }
  // ENOTCONN (the source already reset the connection) leaves nothing to do.
  (void)peer_->ShutdownWrite();
  std::lock_guard<std::mutex> lock(conn_mu_);
  if (qemu_) qemu_->Shutdown();
}

void DestinationSession::Impl::Cancel(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    cancelled_ = true;
  }
  Status s = Status::Aborted(fmt::format("migration cancelled on the destination: {}", reason));
  if (!failure_.Set(s)) return;
  state_ = State::kAborted;
  (void)writer_.TryWriteFrame(FrameType::kAbort, wire::EncodeAbort(reason), kBestEffortWrite);
  // Cut at once, unlike Fail(): Run()'s thread may be waiting for a frame,
  // and only a shutdown ends that wait promptly whatever the source does.
  ShutdownConnections();
}

// ---- run ----

Result<MigrationReport> DestinationSession::Impl::Run(std::unique_ptr<wire::Connection> qemu) {
  const auto start = MonotonicClock::now();
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    qemu_ = std::move(qemu);
    if (cancelled_) qemu_->Shutdown();
  }
  if (failure_.failed()) {
    Linger();  // cancelled or failed before Run(): nobody else reads the peer
    return Err(failure_.status());
  }
  if (state_ != State::kStreaming) {
    return Err(Status::FailedPrecondition(
        fmt::format("cannot run the migration in state {}: call Offer() first", StateName(state_))));
  }
  back_ = std::thread([this] { BackLoop(); });
  Status s = StreamFrames();
  if (s.ok()) s = Finish();
  // Fail() (a no-op if a failure was recorded already: the first one wins)
  // also shuts the QEMU socket down, which wakes the reader thread.
  if (!s.ok()) Fail(s, true);
  if (failure_.failed()) Linger();  // this thread is the peer's only reader
  StopBackThread();
  if (failure_.failed()) return Err(failure_.status());

  MigrationReport r = report_;
  r.stream_bytes = end_->stream_bytes;
  r.page_records = end_->page_records;
  r.zero_records = end_->zero_records;
  r.pages_by_position = end_->pages_by_position;
  r.pages_by_content = end_->pages_by_content;
  r.pages_window_full = end_->pages_window_full;
  r.return_path_bytes = return_path_bytes_;
  r.wire_bytes_sent = writer_.bytes_written();
  r.wire_bytes_received = reader_.bytes_read();
  r.total_time =
      std::chrono::duration_cast<std::chrono::microseconds>(MonotonicClock::now() - start);
  state_ = State::kDone;
  return r;
}

Status DestinationSession::Impl::StreamFrames() {
  for (;;) {
    const State state = state_.load();
    if (state == State::kFinishing && pending_.empty()) return Status::OK();
    if (state == State::kAborted) return failure_.status();
    auto f = reader_.Next(options_.idle_timeout, StateName(state));
    if (!f.has_value()) return f.error();
    bool from_peer = false;
    Status s = Step(*f, &from_peer);
    if (!s.ok()) {
      Fail(s, !from_peer);
      return s;
    }
    // Output may wait in the stage only while more frames are at hand: the
    // source QEMU can be waiting for a reply to exactly these bytes.
    const bool idle = !reader_.HasBufferedFrame();
    if (idle) ESCDR_RETURN_IF_ERROR(FlushStage());
    s = MaybeAck(false, idle);
    if (!s.ok()) {
      // The source may have failed and hung up with an Error frame on the
      // way: report its reason rather than our broken pipe.
      auto next = reader_.Next(kBestEffortWrite, StateName(state_.load()));
      if (next.has_value() &&
          (next->type == FrameType::kError || next->type == FrameType::kAbort)) {
        Status peer = Step(*next, &from_peer);
        Fail(peer, false);
        return peer;
      }
      return s;
    }
  }
}

Status DestinationSession::Impl::Step(const wire::FrameView& f, bool* from_peer) {
  const State state = state_.load();
  switch (f.type) {
    case FrameType::kError: {
      *from_peer = true;
      ESCDR_ASSIGN_OR_RETURN(Status peer, wire::DecodeError(f.payload));
      return Status(peer.code(), "source reported: " + peer.message());
    }
    case FrameType::kAbort: {
      *from_peer = true;
      ESCDR_ASSIGN_OR_RETURN(std::string reason, wire::DecodeAbort(f.payload));
      return Status::Aborted("source aborted the migration: " + reason);
    }
    case FrameType::kData:
      if (state != State::kStreaming) break;
      if (f.payload.empty()) return Status::ProtocolError("empty Data frame from the source");
      return Emit(f.payload);
    case FrameType::kRefs:
      if (state != State::kStreaming) break;
      return HandleRefs(f.payload);
    case FrameType::kDup:
    case FrameType::kPacked:
      if (version_ < 4) {
        return Status::ProtocolError(fmt::format(
            "{} frame not expected from a source speaking protocol version {}",
            wire::FrameTypeName(f.type), version_));
      }
      if (state != State::kStreaming) break;
      return f.type == FrameType::kDup ? HandleDup(f.payload) : HandlePacked(f.payload, from_peer);
    case FrameType::kPageResponse:
      if (state != State::kStreaming && state != State::kFinishing) break;
      return HandlePageResponse(f.payload);
    case FrameType::kEnd: {
      if (state != State::kStreaming) break;
      ESCDR_ASSIGN_OR_RETURN(wire::EndSummary end, wire::EndSummary::Decode(f.payload));
      end_ = end;
      state_ = State::kFinishing;
      return Status::OK();
    }
    default:
      break;
  }
  return Unexpected(f.type, state);
}

Status DestinationSession::Impl::HandleRefs(std::span<const std::uint8_t> payload) {
  ESCDR_ASSIGN_OR_RETURN(wire::RefsView refs, wire::RefsView::Parse(payload, version_));
  if (refs.first_seq() != refs_received_) {
    return Status::ProtocolError(fmt::format("Refs frame starts at reference {}, expected {}",
                                             refs.first_seq(), refs_received_));
  }
  for (std::uint32_t k = 0; k < refs.count(); ++k) {
    const std::uint64_t seq = refs.first_seq() + k;
    const wire::RefEntry e = refs.entry(k);
    if (e.content_index >= availability_.catalog_entries ||
        !wire::BitmapTest(availability_.bitmap, e.content_index)) {
      return Status::ProtocolError(fmt::format(
          "reference {} names content index {}, which the destination did not offer", seq,
          e.content_index));
    }
    if (e.record_word != 0) {
      std::uint8_t word[8];
      wire::StoreBigEndian64(word, e.record_word);
      ESCDR_RETURN_IF_ERROR(Emit(word));
    }
    // Copy first, then check the copy: the donor keeps running, and only the
    // bytes that were verified may reach the QEMU. The check is the source's
    // keyed tag, not the catalog's XXH3-128, which the donor's guest could
    // collide with (§6). (An offered bit implies version 3 and a tagger.)
    const DonorAvailability::Location& loc = availability_.locations[e.content_index];
    ESCDR_ASSIGN_OR_RETURN(std::uint8_t* slot, PageSlot());
    std::memcpy(slot, donor_->BlockData(loc.block) + loc.offset, kPageSize);
    refs_received_ = seq + 1;
    if (tagger_->Verify(seq, slot, e.tag)) {
      ++report_.pages_from_donor;
      history_.Append(std::span<const std::uint8_t>(slot, kPageSize));
      continue;
    }
    CancelPageSlot();
    // The page comes later; a source never names it in a Dup.
    history_.Skip(kPageSize);
    ++report_.fallbacks;
    ESCDR_RETURN_IF_ERROR(writer_.WriteFrame(FrameType::kPageRequest, wire::PageRequest{seq}.Encode())
                              .WithContext("cannot request a page from the source"));
    // Everything before the hole can go out now; everything after it waits.
    ESCDR_RETURN_IF_ERROR(FlushStage());
    Held& hole = held_.emplace_back();
    hole.pending = true;
    hole.seq = seq;
    hole.content_index = e.content_index;
    hole.tag = e.tag;
    pending_.emplace(seq, &hole);
  }
  return Status::OK();
}

Status DestinationSession::Impl::HandleDup(std::span<const std::uint8_t> payload) {
  if (!history_.enabled()) {
    return Status::ProtocolError("Dup frame from a source that announced no dedup history");
  }
  ESCDR_ASSIGN_OR_RETURN(wire::DupView dups, wire::DupView::Parse(payload));
  for (std::uint32_t k = 0; k < dups.count(); ++k) {
    const wire::DupEntry e = dups.entry(k);
    if (e.record_word != 0) {
      std::uint8_t word[8];
      wire::StoreBigEndian64(word, e.record_word);
      ESCDR_RETURN_IF_ERROR(Emit(word));
    }
    ESCDR_ASSIGN_OR_RETURN(std::uint8_t* slot, PageSlot());
    Status s = history_.CopyPage(e.stream_offset, e.check, slot);
    if (!s.ok()) {
      CancelPageSlot();
      return s;
    }
    history_.Append(std::span<const std::uint8_t>(slot, kPageSize));
    ++report_.pages_deduplicated;
  }
  return Status::OK();
}

Status DestinationSession::Impl::HandlePacked(std::span<const std::uint8_t> payload,
                                             bool* from_peer) {
  const auto cpu0 = ThreadCpuTime();
  const auto workers0 = unpacker_.worker_cpu_time();
  auto batch = unpacker_.Unpack(payload);
  report_.codec_cpu_time += (ThreadCpuTime() - cpu0) + (unpacker_.worker_cpu_time() - workers0);
  if (!batch.has_value()) return batch.error();
  wire::PackedFrames frames(*batch);
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(std::optional<wire::FrameView> f, frames.Next());
    if (!f) return Status::OK();
    ESCDR_RETURN_IF_ERROR(Step(*f, from_peer));
  }
}

Status DestinationSession::Impl::HandlePageResponse(std::span<const std::uint8_t> payload) {
  ESCDR_ASSIGN_OR_RETURN(wire::PageResponseView r, wire::PageResponseView::Parse(payload));
  auto it = pending_.find(r.seq);
  if (it == pending_.end()) {
    return Status::ProtocolError(
        fmt::format("PageResponse for reference {}, which was not requested", r.seq));
  }
  Held* hole = it->second;
  if (!tagger_->Verify(r.seq, r.page, hole->tag)) {
    return Status::Corruption(fmt::format(
        "the source's page for reference {} (catalog entry {}) does not match the tag of its "
        "reference",
        r.seq, hole->content_index));
  }
  ESCDR_RETURN_IF_ERROR(HoldBytes(kPageSize));
  hole->bytes.assign(r.page, r.page + kPageSize);
  hole->pending = false;
  pending_.erase(it);
  return DrainHeld();
}

Status DestinationSession::Impl::Finish() {
  ESCDR_RETURN_IF_ERROR(FlushStage());
  if (report_.rebuilt_bytes != end_->stream_bytes || refs_received_ != end_->refs) {
    return Status::ProtocolError(fmt::format(
        "the source's End says {} stream bytes and {} references, the destination rebuilt {} "
        "bytes from {} references",
        end_->stream_bytes, end_->refs, report_.rebuilt_bytes, refs_received_));
  }
  ESCDR_RETURN_IF_ERROR(MaybeAck(true, true));
  // Every byte, vmdesc included, is with QEMU: now it may see end of file.
  ESCDR_RETURN_IF_ERROR(qemu_->ShutdownWrite().WithContext("destination QEMU"));
  {
    std::unique_lock<std::mutex> lock(back_mu_);
    if (!back_cv_.wait_for(lock, options_.qemu_finish_timeout,
                           [this] { return qemu_closed_ || failure_.failed(); })) {
      return Status::Timeout(fmt::format(
          "the destination QEMU did not close its migration socket within {} s after the end of "
          "the stream",
          options_.qemu_finish_timeout.count() / 1000.0));
    }
    if (return_path_.shut_seen() && return_path_.shut_value() != 0) {
      return Status::Aborted(fmt::format(
          "the destination QEMU reported that loading the stream failed (return-path SHUT {})",
          return_path_.shut_value()));
    }
  }
  if (failure_.failed()) return failure_.status();
  wire::DestinationResult result;
  result.rebuilt_bytes = report_.rebuilt_bytes;
  result.pages_from_donor = report_.pages_from_donor;
  result.fallbacks = report_.fallbacks;
  {
    std::lock_guard<std::mutex> lock(back_mu_);
    result.return_path_bytes = return_path_bytes_;
  }
  result.donor_pages_scanned = availability_.pages_scanned;
  result.scan_micros = static_cast<std::uint64_t>(availability_.scan_time.count());
  return writer_.WriteFrame(FrameType::kResult, result.Encode())
      .WithContext("cannot send Result to the source");
}

// ---- ordered output ----

Status DestinationSession::Impl::WriteQemu(std::span<const std::uint8_t> bytes) {
  Status s = qemu_->WriteAll(bytes, Deadline::After(options_.idle_timeout));
  if (!s.ok()) {
    return Status(s.code(), fmt::format("cannot write to the destination QEMU after {} bytes "
                                        "(did it reject the stream?): {}",
                                        report_.rebuilt_bytes, s.message()));
  }
  report_.rebuilt_bytes += bytes.size();
  return Status::OK();
}

Status DestinationSession::Impl::FlushStage() {
  if (stage_size_ == 0) return Status::OK();
  Status s = WriteQemu(std::span<const std::uint8_t>(stage_.get(), stage_size_));
  stage_size_ = 0;
  return s;
}

Status DestinationSession::Impl::HoldBytes(std::size_t n) {
  held_bytes_ += n;
  if (held_bytes_ > options_.max_held_bytes) {
    return Status::ResourceExhausted(fmt::format(
        "more than {} bytes of output held back waiting for the source's page for reference {}",
        options_.max_held_bytes, pending_.empty() ? 0 : pending_.begin()->first));
  }
  return Status::OK();
}

Status DestinationSession::Impl::Emit(std::span<const std::uint8_t> bytes) {
  history_.Append(bytes);
  if (!holding()) {
    if (bytes.size() >= kDirectWriteBytes) {
      ESCDR_RETURN_IF_ERROR(FlushStage());
      return WriteQemu(bytes);
    }
    if (stage_size_ + bytes.size() > kStageBytes) ESCDR_RETURN_IF_ERROR(FlushStage());
    std::memcpy(stage_.get() + stage_size_, bytes.data(), bytes.size());
    stage_size_ += bytes.size();
    return Status::OK();
  }
  ESCDR_RETURN_IF_ERROR(HoldBytes(bytes.size()));
  if (held_.back().pending) held_.emplace_back();
  held_.back().bytes.insert(held_.back().bytes.end(), bytes.begin(), bytes.end());
  return Status::OK();
}

Result<std::uint8_t*> DestinationSession::Impl::PageSlot() {
  if (!holding()) {
    if (stage_size_ + kPageSize > kStageBytes) ESCDR_RETURN_IF_ERROR(FlushStage());
    stage_size_ += kPageSize;
    return stage_.get() + stage_size_ - kPageSize;
  }
  ESCDR_RETURN_IF_ERROR(HoldBytes(kPageSize));
  if (held_.back().pending) held_.emplace_back();
  auto& b = held_.back().bytes;
  b.resize(b.size() + kPageSize);
  return b.data() + b.size() - kPageSize;
}

void DestinationSession::Impl::CancelPageSlot() {
  if (!holding()) {
    stage_size_ -= kPageSize;
    return;
  }
  held_bytes_ -= kPageSize;
  auto& b = held_.back().bytes;
  b.resize(b.size() - kPageSize);
  if (b.empty()) held_.pop_back();
}

Status DestinationSession::Impl::DrainHeld() {
  while (!held_.empty() && !held_.front().pending) {
    Held& h = held_.front();
    ESCDR_RETURN_IF_ERROR(WriteQemu(h.bytes));
    held_bytes_ -= h.bytes.size();
    held_.pop_front();
  }
  return Status::OK();
}

Status DestinationSession::Impl::MaybeAck(bool force, bool idle) {
  const std::uint64_t r = resolved();
  const std::uint64_t d = report_.rebuilt_bytes;
  bool due = false;
  if (version_ < 2) {
    // Version 1: references only.
    due = r != acked_sent_ && (force || r - acked_sent_ >= ack_every_);
  } else {
    due = (r != acked_sent_ || d != delivered_sent_) &&
          (force || idle || r - acked_sent_ >= ack_every_ ||
           d - delivered_sent_ >= kDeliveredAckBytes);
  }
  if (!due) return Status::OK();
  acked_sent_ = r;
  delivered_sent_ = d;
  return writer_.WriteFrame(FrameType::kAck, wire::Ack{r, d}.Encode(version_))
      .WithContext("cannot send an Ack to the source");
}

// ---- the destination QEMU's side: return path and keepalives ----

void DestinationSession::Impl::BackLoop() {
  std::vector<std::uint8_t> buf(kReturnPathChunk);
  auto keepalive_due = [this] {
    return MonotonicClock::now() - writer_.last_write() >= options_.keepalive_interval;
  };
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(back_mu_);
      if (stop_back_ || qemu_closed_) break;
    }
    auto got = qemu_->ReadSome(buf, Deadline::After(options_.keepalive_interval));
    if (!got.has_value() && got.error().code() == StatusCode::kTimeout) {
      if (keepalive_due()) {
        Status s = writer_.WriteFrame(FrameType::kKeepalive, {});
        if (!s.ok()) FailPeerGone(s.WithContext("cannot send a keepalive to the source"));
      }
      continue;
    }
    if (!got.has_value() || *got == 0) {
      // QEMU closed its socket (done loading, or it failed and exited);
      // Finish() decides which. A reset counts as closed too.
      std::lock_guard<std::mutex> lock(back_mu_);
      qemu_closed_ = true;
      back_cv_.notify_all();
      break;
    }
    const std::span<const std::uint8_t> bytes(buf.data(), *got);
    Status s = writer_.WriteFrame(FrameType::kReturnPath, bytes);
    if (!s.ok()) {
      FailPeerGone(s.WithContext("cannot relay the return path to the source"));
      std::lock_guard<std::mutex> lock(back_mu_);
      qemu_closed_ = true;
      back_cv_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(back_mu_);
    return_path_bytes_ += *got;
    return_path_.Feed(bytes);
  }
  // QEMU is done with its socket; keep the source's idle timer fed until Run() ends.
  std::unique_lock<std::mutex> lock(back_mu_);
  while (!stop_back_) {
    back_cv_.wait_for(lock, options_.keepalive_interval);
    if (stop_back_ || failure_.failed()) break;
    if (keepalive_due()) {
      lock.unlock();
      (void)writer_.WriteFrame(FrameType::kKeepalive, {});
      lock.lock();
    }
  }
}

void DestinationSession::Impl::StopBackThread() {
  if (!back_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(back_mu_);
    stop_back_ = true;
    back_cv_.notify_all();
  }
  // The thread may sit in a read of the QEMU socket for up to one keepalive
  // interval; on failure paths Fail() has shut the socket down already.
  back_.join();
}

// ---- public API ----

DestinationSession::DestinationSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DestinationSession::~DestinationSession() = default;

Result<std::unique_ptr<DestinationSession>> DestinationSession::Accept(
    std::unique_ptr<wire::Connection> peer, const DestinationOptions& options) {
  auto impl = std::make_unique<Impl>(std::move(peer), options);
  ESCDR_RETURN_IF_ERROR(impl->Handshake());
  return std::unique_ptr<DestinationSession>(new DestinationSession(std::move(impl)));
}

const wire::Prepare& DestinationSession::prepare() const { return impl_->prepare(); }

Status DestinationSession::Offer(const StaticContent* content, const MemoryImage* donor) {
  return impl_->Offer(content, donor, std::nullopt);
}

Status DestinationSession::OfferScanned(const StaticContent* content, const MemoryImage* donor,
                                        DonorAvailability availability) {
  return impl_->Offer(content, donor, std::move(availability));
}

Status DestinationSession::Reject(const Status& reason) { return impl_->Reject(reason); }

Result<MigrationReport> DestinationSession::Run(std::unique_ptr<wire::Connection> qemu) {
  return impl_->Run(std::move(qemu));
}

void DestinationSession::Cancel(const std::string& reason) { impl_->Cancel(reason); }

}  // namespace escdr
