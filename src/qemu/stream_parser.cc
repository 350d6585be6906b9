#include "escdr/qemu/stream_parser.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

#include "escdr/page/page.h"
#include "qemu/stream_format.h"

namespace escdr {

namespace {

namespace sf = stream_format;

std::uint16_t Be16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }
std::uint32_t Be32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_bswap32(v);
}
std::uint64_t Be64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_bswap64(v);
}

std::string_view AsView(const std::uint8_t* p, std::size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}

// The capability (or feature) a refused COMMAND belongs to.
const char* RefusedCommandReason(std::uint16_t cmd) {
  switch (cmd) {
    case sf::kCmdPostcopyAdvise:
      return "POSTCOPY_ADVISE (capabilities postcopy-ram or dirty-bitmaps)";
    case sf::kCmdPostcopyListen:
      return "POSTCOPY_LISTEN (capability postcopy-ram)";
    case sf::kCmdPostcopyRun:
      return "POSTCOPY_RUN (capability postcopy-ram)";
    case sf::kCmdPostcopyRamDiscard:
      return "POSTCOPY_RAM_DISCARD (capability postcopy-ram)";
    case sf::kCmdPackaged:
      return "PACKAGED (capability postcopy-ram)";
    case sf::kCmdEnableColo:
      return "ENABLE_COLO (capability x-colo)";
    case sf::kCmdPostcopyResume:
      return "POSTCOPY_RESUME (postcopy recovery)";
    case sf::kCmdRecvBitmap:
      return "RECV_BITMAP (postcopy recovery)";
    default:
      return nullptr;
  }
}

// True if `machine` is a versioned machine type ("pc-i440fx-10.0",
// "pc-q35-8.2") of version 8.2 or later: only QEMU >= 8.2 can load it, and
// those destinations refuse a ZERO record whose fill byte is not 0.
bool MachineRefusesZeroFill(std::string_view machine) {
  std::size_t dash = machine.rfind('-');
  if (dash == std::string_view::npos) return false;
  std::string_view v = machine.substr(dash + 1);
  int major = 0, minor = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), major);
  if (ec != std::errc() || p == v.data() + v.size() || *p != '.') return false;
  const char* end = v.data() + v.size();
  auto [q, ec2] = std::from_chars(p + 1, end, minor);
  if (ec2 != std::errc() || q != end) return false;
  return major > sf::kZeroFillCheckMajor ||
         (major == sf::kZeroFillCheckMajor && minor >= sf::kZeroFillCheckMinor);
}

}  // namespace

class StreamParser::Impl {
 public:
  explicit Impl(StreamVisitor* visitor) : visitor_(visitor) {}

  Status Feed(std::span<const std::uint8_t> chunk);
  Status Finish();

  bool ram_complete() const { return ram_complete_; }
  const StreamStats& stats() const { return stats_; }
  const std::vector<RamBlockInfo>& blocks() const { return blocks_; }
  const std::string& machine() const { return machine_; }

 private:
  // One state per item the parser waits for; each needs a fixed number of
  // bytes, known when the state is entered, so a state can resume after a
  // chunk boundary by calling Take() again with the same count.
  enum class State {
    kFileHeader,        // be32 magic, be32 version
    kFirstRecord,       // peek: 0x07 configuration or a top-level record
    kConfigNameLen,     // be32
    kConfigName,        // config_len_ bytes
    kConfigPeek,        // peek: 0x05 subsection or the end of the configuration
    kSubsecHeader,      // u8 0x05, u8 name length
    kSubsecName,        // name, be32 version
    kCapCount,          // be32 count
    kCapLen,            // u8
    kCapName,           // cap_len_ bytes
    kSkipFixed,         // skip_len_ bytes of a known-size subsection body
    kTopLevel,          // u8 record type
    kCommandHeader,     // be16 cmd, be16 len
    kCommandArgs,       // PING's be32
    kFullHeader,        // be32 section id, u8 idstr length (a FULL before the ram END)
    kFullIdstr,         // idstr
    kSectionId,         // be32 section id (PART/END/START)
    kStartIdLen,        // u8
    kStartIdRest,       // idstr, be32 instance, be32 version
    kRecordWord,        // be64 offset|flags
    kRecordIdLen,       // u8
    kRecordId,          // idstr
    kZeroFill,          // u8
    kPagePayload,       // kPageSize bytes, handed to OnPage
    kBlockIdLen,        // u8 (START block list)
    kBlockIdAndLength,  // idstr, be64 used_length
    kFooter,            // u8 0x7e, be32 section id
    kTail,              // opaque bytes to the end
  };

  enum class SectionKind { kStart, kPart, kEnd };

  std::uint64_t Abs() const { return chunk_base_ + static_cast<std::uint64_t>(p_ - begin_); }
  std::size_t Avail() const { return static_cast<std::size_t>(end_ - p_); }

  // Returns the next `n` bytes (a pointer into the chunk, or into stage_ when
  // they straddle chunks), or nullptr when the chunk ran out first; the bytes
  // that were there are staged and the caller is re-entered with the next
  // chunk. The returned bytes stay valid until the next Take().
  const std::uint8_t* Take(std::size_t n) {
    if (staged_ == 0 && Avail() >= n) {
      const std::uint8_t* r = p_;
      p_ += n;
      return r;
    }
    std::size_t k = std::min(n - staged_, Avail());
    std::memcpy(stage_.data() + staged_, p_, k);
    staged_ += k;
    p_ += k;
    if (staged_ < n) return nullptr;
    staged_ = 0;
    return stage_.data();
  }

  // Marks the start of an item (for error messages) when it is first entered.
  void MarkItem() {
    if (staged_ == 0) item_start_ = Abs();
  }

  // Reports the consumed, unreported bytes before `upto` through OnBytes.
  Status FlushTo(const std::uint8_t* upto) {
    if (upto <= report_from_) return Status::OK();
    Status s = visitor_->OnBytes({report_from_, static_cast<std::size_t>(upto - report_from_)});
    report_from_ = upto;
    return s;
  }

  Status Error(std::string what) const {
    return Status::ProtocolError(fmt::format("{} at byte {}", what, item_start_));
  }
  Status Refuse(std::string what) const {
    return Status::NotSupported(fmt::format("{} at byte {} is not supported", what, item_start_));
  }

  Status Step();
  Status StepTopLevel();
  Status StepRecordWord();
  Status StepFooter();
  Status BeginPageOrZero();
  Status SetPhase(StreamPhase phase, const std::uint8_t* at);
  void ScanTail(const std::uint8_t* b, std::size_t n);
  std::string Where() const;

  StreamVisitor* visitor_;
  Status status_;
  bool started_ = false;
  bool finished_ = false;

  // The current chunk.
  const std::uint8_t* begin_ = nullptr;
  const std::uint8_t* p_ = nullptr;
  const std::uint8_t* end_ = nullptr;
  const std::uint8_t* report_from_ = nullptr;
  std::uint64_t chunk_base_ = 0;

  State state_ = State::kFileHeader;
  std::array<std::uint8_t, sf::kMaxStagedItem> stage_{};
  std::size_t staged_ = 0;
  std::uint64_t item_start_ = 0;    // byte offset of the item being parsed
  std::uint64_t record_start_ = 0;  // byte offset of the current ram record
  StreamPhase phase_ = StreamPhase::kHeader;

  // Configuration.
  std::uint32_t config_len_ = 0;
  std::uint32_t subsec_name_len_ = 0;
  std::uint32_t cap_count_ = 0;
  std::uint32_t cap_len_ = 0;
  std::uint32_t skip_len_ = 0;
  std::string machine_;
  bool zero_fill_must_be_zero_ = false;

  // Sections.
  SectionKind section_kind_ = SectionKind::kStart;
  std::uint8_t section_type_ = 0;
  std::uint32_t start_id_len_ = 0;
  std::uint32_t full_id_len_ = 0;
  std::uint32_t pending_section_id_ = 0;
  bool have_ram_id_ = false;
  std::uint32_t ram_id_ = 0;
  bool ram_complete_ = false;
  bool mem_size_seen_ = false;

  // Blocks (from START) and the record being parsed.
  std::vector<RamBlockInfo> blocks_;
  std::uint64_t mem_total_ = 0;
  std::uint64_t mem_sum_ = 0;
  std::uint32_t block_id_len_ = 0;
  bool have_block_ = false;
  std::uint32_t block_ = 0;  // the last block named by an idstr (CONTINUE target)
  std::uint32_t record_flags_ = 0;
  std::uint64_t record_offset_ = 0;
  std::uint32_t record_id_len_ = 0;

  // A PAGE payload that straddles chunks.
  std::array<std::uint8_t, kPageSize> page_buf_{};
  std::size_t page_have_ = 0;

  // Tail: candidates for the "7e <id> 00 06 <be32 len>" trailer start.
  struct Trailer {
    std::uint64_t json_start = 0;  // tail offset of the first JSON byte
    std::uint32_t json_len = 0;
  };
  std::array<Trailer, 4> trailers_{};
  std::size_t trailer_count_ = 0;                            // total found (ring index = count % 4)
  std::array<std::uint8_t, sf::kTrailerProbe - 1> carry_{};  // last tail bytes seen
  std::size_t carry_len_ = 0;
  std::uint64_t last_zero_end_ = 0;  // tail offset just past the last 0x00 byte

  StreamStats stats_;
};

Status StreamParser::Impl::Feed(std::span<const std::uint8_t> chunk) {
  if (!status_.ok()) return status_;
  if (finished_) {
    status_ = Status::FailedPrecondition("StreamParser::Feed called after Finish");
    return status_;
  }
  if (!started_) {
    started_ = true;
    status_ = visitor_->OnPhase(StreamPhase::kHeader);
    if (!status_.ok()) return status_;
  }
  begin_ = p_ = report_from_ = chunk.data();
  end_ = chunk.data() + chunk.size();
  while (p_ < end_) {
    Status s = Step();
    if (!s.ok()) {
      status_ = std::move(s);
      return status_;
    }
  }
  status_ = FlushTo(p_);
  chunk_base_ += chunk.size();
  stats_.bytes = chunk_base_;
  return status_;
}

Status StreamParser::Impl::SetPhase(StreamPhase phase, const std::uint8_t* at) {
  if (phase == phase_) return Status::OK();
  ESCDR_RETURN_IF_ERROR(FlushTo(at));
  phase_ = phase;
  return visitor_->OnPhase(phase);
}

Status StreamParser::Impl::Step() {
  switch (state_) {
    case State::kFileHeader: {
      MarkItem();
      const std::uint8_t* b = Take(8);
      if (b == nullptr) return Status::OK();
      std::uint32_t magic = Be32(b);
      std::uint32_t version = Be32(b + 4);
      if (magic != sf::kFileMagic) {
        return Status::ProtocolError(fmt::format(
            "not a QEMU migration stream: magic 0x{:08x} at byte 0, expected 0x{:08x} (QEVM)",
            magic, sf::kFileMagic));
      }
      if (version != sf::kFileVersion) {
        return Status::VersionMismatch(
            fmt::format("migration stream version {} at byte 4 is not supported, expected {}",
                        version, sf::kFileVersion));
      }
      state_ = State::kFirstRecord;
      return Status::OK();
    }

    case State::kFirstRecord:
      // The configuration section is optional (machine types <= 2.3 omit it).
      if (*p_ == sf::kSectionConfiguration) {
        ++p_;
        state_ = State::kConfigNameLen;
      } else {
        state_ = State::kTopLevel;
      }
      return Status::OK();

    case State::kConfigNameLen: {
      MarkItem();
      const std::uint8_t* b = Take(4);
      if (b == nullptr) return Status::OK();
      config_len_ = Be32(b);
      if (config_len_ > sf::kMaxMachineName) {
        return Error(fmt::format("configuration machine-name length {} exceeds {}", config_len_,
                                 sf::kMaxMachineName));
      }
      state_ = State::kConfigName;
      return Status::OK();
    }

    case State::kConfigName: {
      const std::uint8_t* b = Take(config_len_);
      if (b == nullptr) return Status::OK();
      machine_.assign(AsView(b, config_len_));
      zero_fill_must_be_zero_ = MachineRefusesZeroFill(machine_);
      state_ = State::kConfigPeek;
      return Status::OK();
    }

    case State::kConfigPeek:
      // No terminator: the configuration ends at the first byte that is not a
      // subsection marker (QEMU's vmstate_subsection_load peeks the same way).
      state_ = *p_ == sf::kSubsection ? State::kSubsecHeader : State::kTopLevel;
      return Status::OK();

    case State::kSubsecHeader: {
      MarkItem();
      const std::uint8_t* b = Take(2);
      if (b == nullptr) return Status::OK();
      subsec_name_len_ = b[1];
      state_ = State::kSubsecName;
      return Status::OK();
    }

    case State::kSubsecName: {
      const std::uint8_t* b = Take(subsec_name_len_ + 4);
      if (b == nullptr) return Status::OK();
      std::string_view name = AsView(b, subsec_name_len_);
      std::uint32_t version = Be32(b + subsec_name_len_);
      if (version != 1) {
        return Status::VersionMismatch(fmt::format(
            "configuration subsection '{}' version {} at byte {} is not supported, expected 1",
            name, version, item_start_));
      }
      if (name == sf::kSubsecCapabilities) {
        state_ = State::kCapCount;
      } else if (name == sf::kSubsecUuid) {
        skip_len_ = 16;
        state_ = State::kSkipFixed;
      } else if (name == sf::kSubsecTargetPageBits) {
        skip_len_ = 4;
        state_ = State::kSkipFixed;
      } else {
        return Error(fmt::format("unknown configuration subsection '{}'", name));
      }
      return Status::OK();
    }

    case State::kCapCount: {
      MarkItem();
      const std::uint8_t* b = Take(4);
      if (b == nullptr) return Status::OK();
      cap_count_ = Be32(b);
      if (cap_count_ > sf::kMaxCapabilities) {
        return Error(fmt::format("configuration capability count {} exceeds {}", cap_count_,
                                 sf::kMaxCapabilities));
      }
      state_ = cap_count_ == 0 ? State::kConfigPeek : State::kCapLen;
      return Status::OK();
    }

    case State::kCapLen: {
      MarkItem();
      const std::uint8_t* b = Take(1);
      if (b == nullptr) return Status::OK();
      cap_len_ = b[0];
      state_ = State::kCapName;
      return Status::OK();
    }

    case State::kCapName: {
      const std::uint8_t* b = Take(cap_len_);
      if (b == nullptr) return Status::OK();
      // QEMU 7.2 validates only x-ignore-shared through this list, 10.0 also
      // mapped-ram; each changes what the RAM section carries.
      std::string_view cap = AsView(b, cap_len_);
      if (cap == sf::kCapXIgnoreShared) {
        return Refuse("capability x-ignore-shared (shared RAM blocks are listed but never sent)");
      }
      if (cap == sf::kCapMappedRam) {
        return Refuse(
            "capability mapped-ram (RAM is written at fixed file offsets, not as a stream of "
            "page records)");
      }
      return Refuse(fmt::format("validated configuration capability '{}'", cap));
    }

    case State::kSkipFixed: {
      MarkItem();
      const std::uint8_t* b = Take(skip_len_);
      if (b == nullptr) return Status::OK();
      if (skip_len_ == 4) {  // target-page-bits
        std::uint32_t bits = Be32(b);
        if (bits != kPageShift) {
          return Refuse(fmt::format("target page bits {} (only 4096-byte pages)", bits));
        }
      }
      state_ = State::kConfigPeek;
      return Status::OK();
    }

    case State::kTopLevel:
      return StepTopLevel();

    case State::kCommandHeader: {
      const std::uint8_t* b = Take(4);
      if (b == nullptr) return Status::OK();
      std::uint16_t cmd = Be16(b);
      std::uint16_t len = Be16(b + 2);
      if (const char* reason = RefusedCommandReason(cmd)) {
        return Refuse(fmt::format("command {}", reason));
      }
      if ((cmd == sf::kCmdOpenReturnPath || cmd == sf::kCmdSwitchoverStart) && len == 0) {
        // SWITCHOVER_START (QEMU >= 10.0 sources, machine types >= 10.0): the
        // source VM has stopped; the ram END section follows.
        if (cmd == sf::kCmdSwitchoverStart) ++stats_.switchover_starts;
        state_ = State::kTopLevel;
      } else if (cmd == sf::kCmdPing && len == 4) {
        state_ = State::kCommandArgs;
      } else if (cmd == sf::kCmdOpenReturnPath || cmd == sf::kCmdPing ||
                 cmd == sf::kCmdSwitchoverStart) {
        return Error(fmt::format("command {} with argument length {}",
                                 cmd == sf::kCmdPing             ? "PING"
                                 : cmd == sf::kCmdOpenReturnPath ? "OPEN_RETURN_PATH"
                                                                 : "SWITCHOVER_START",
                                 len));
      } else {
        return Error(fmt::format("unknown command {}", cmd));
      }
      return Status::OK();
    }

    case State::kCommandArgs:
      if (Take(4) == nullptr) return Status::OK();
      state_ = State::kTopLevel;
      return Status::OK();

    case State::kFullHeader: {
      const std::uint8_t* b = Take(5);
      if (b == nullptr) return Status::OK();
      pending_section_id_ = Be32(b);
      full_id_len_ = b[4];
      state_ = State::kFullIdstr;
      return Status::OK();
    }

    case State::kFullIdstr: {
      const std::uint8_t* b = Take(full_id_len_);
      if (b == nullptr) return Status::OK();
      std::string_view idstr = AsView(b, full_id_len_);
      // Device state is opaque (it has no length), so it cannot be skipped.
      // Since QEMU 8.0 a device marked early_setup (on x86 only virtio-mem)
      // is saved during setup, before any PART; anywhere else a FULL before
      // the ram END is malformed.
      if (phase_ == StreamPhase::kHeader || phase_ == StreamPhase::kRamSetup) {
        return Refuse(fmt::format(
            "early-setup device-state section '{}' (FULL, id {}) before the ram END section "
            "(devices saved during setup, such as virtio-mem)",
            idstr, pending_section_id_));
      }
      return Error(fmt::format(
          "device-state (FULL) section '{}' (id {}) before the ram END section", idstr,
          pending_section_id_));
    }

    case State::kSectionId: {
      const std::uint8_t* b = Take(4);
      if (b == nullptr) return Status::OK();
      std::uint32_t id = Be32(b);
      if (section_type_ == sf::kSectionStart) {
        pending_section_id_ = id;
        state_ = State::kStartIdLen;
        return Status::OK();
      }
      const char* type = section_type_ == sf::kSectionPart ? "PART" : "END";
      if (!have_ram_id_) return Error(fmt::format("{} section {} before the ram START", type, id));
      if (id != ram_id_) {
        return Error(
            fmt::format("{} section id {} is not the ram section id {}", type, id, ram_id_));
      }
      section_kind_ = section_type_ == sf::kSectionPart ? SectionKind::kPart : SectionKind::kEnd;
      ++stats_.ram_sections;
      state_ = State::kRecordWord;
      return Status::OK();
    }

    case State::kStartIdLen: {
      const std::uint8_t* b = Take(1);
      if (b == nullptr) return Status::OK();
      start_id_len_ = b[0];
      state_ = State::kStartIdRest;
      return Status::OK();
    }

    case State::kStartIdRest: {
      const std::uint8_t* b = Take(start_id_len_ + 8);
      if (b == nullptr) return Status::OK();
      std::string_view idstr = AsView(b, start_id_len_);
      std::uint32_t instance = Be32(b + start_id_len_);
      std::uint32_t version = Be32(b + start_id_len_ + 4);
      if (idstr != sf::kRamIdstr) {
        return Refuse(fmt::format(
            "iterative section '{}' (block migration, dirty bitmaps and VFIO are not parsed)",
            idstr));
      }
      if (have_ram_id_) return Error("second ram START section");
      if (instance != 0) return Error(fmt::format("ram START with instance id {}", instance));
      if (version != sf::kRamVersion) {
        return Status::VersionMismatch(
            fmt::format("ram section version {} at byte {} is not supported, expected {}", version,
                        item_start_, sf::kRamVersion));
      }
      have_ram_id_ = true;
      ram_id_ = pending_section_id_;
      section_kind_ = SectionKind::kStart;
      ++stats_.ram_sections;
      state_ = State::kRecordWord;
      return Status::OK();
    }

    case State::kRecordWord:
      return StepRecordWord();

    case State::kRecordIdLen: {
      const std::uint8_t* b = Take(1);
      if (b == nullptr) return Status::OK();
      record_id_len_ = b[0];
      state_ = State::kRecordId;
      return Status::OK();
    }

    case State::kRecordId: {
      const std::uint8_t* b = Take(record_id_len_);
      if (b == nullptr) return Status::OK();
      std::string_view name = AsView(b, record_id_len_);
      // A linear search: idstrs appear only when the block changes, and a
      // guest has a handful of blocks.
      std::size_t i = 0;
      while (i < blocks_.size() && blocks_[i].name != name) ++i;
      if (i == blocks_.size()) {
        item_start_ = record_start_;
        return Error(fmt::format("ram record names unknown block '{}'", name));
      }
      have_block_ = true;
      block_ = static_cast<std::uint32_t>(i);
      return BeginPageOrZero();
    }

    case State::kZeroFill: {
      const std::uint8_t* b = Take(1);
      if (b == nullptr) return Status::OK();
      std::uint8_t fill = b[0];
      if (fill != 0 && zero_fill_must_be_zero_) {
        item_start_ = record_start_;
        return Error(fmt::format(
            "ZERO ram record with fill byte 0x{:02x} in a stream of machine type {} (its "
            "destination, QEMU >= 8.2, accepts only 0)",
            fill, machine_));
      }
      ESCDR_RETURN_IF_ERROR(FlushTo(p_));
      ++stats_.zero_records;
      state_ = State::kRecordWord;
      return visitor_->OnZero(block_, record_offset_, fill);
    }

    case State::kPagePayload: {
      if (page_have_ == 0 && Avail() >= kPageSize) {
        const std::uint8_t* data = p_;
        p_ += kPageSize;
        report_from_ = p_;
        ++stats_.page_records;
        state_ = State::kRecordWord;
        return visitor_->OnPage(block_, record_offset_, data);
      }
      std::size_t k = std::min(kPageSize - page_have_, Avail());
      std::memcpy(page_buf_.data() + page_have_, p_, k);
      page_have_ += k;
      p_ += k;
      report_from_ = p_;  // these bytes go out through OnPage, not OnBytes
      if (page_have_ < kPageSize) return Status::OK();
      page_have_ = 0;
      ++stats_.page_records;
      state_ = State::kRecordWord;
      return visitor_->OnPage(block_, record_offset_, page_buf_.data());
    }

    case State::kBlockIdLen: {
      MarkItem();
      const std::uint8_t* b = Take(1);
      if (b == nullptr) return Status::OK();
      block_id_len_ = b[0];
      state_ = State::kBlockIdAndLength;
      return Status::OK();
    }

    case State::kBlockIdAndLength: {
      const std::uint8_t* b = Take(block_id_len_ + 8);
      if (b == nullptr) return Status::OK();
      std::string name(AsView(b, block_id_len_));
      std::uint64_t length = Be64(b + block_id_len_);
      if (length == 0 || length % kPageSize != 0) {
        return Error(fmt::format("ram block '{}' has length 0x{:x}, not a positive multiple of {}",
                                 name, length, kPageSize));
      }
      if (length > mem_total_ - mem_sum_) {
        return Error(
            fmt::format("ram block '{}' of length 0x{:x} overruns the announced total 0x{:x}", name,
                        length, mem_total_));
      }
      for (const RamBlockInfo& other : blocks_) {
        if (other.name == name) return Error(fmt::format("ram block '{}' listed twice", name));
      }
      if (blocks_.size() >= sf::kMaxBlocks) {
        return Error(fmt::format("ram block list longer than {} blocks", sf::kMaxBlocks));
      }
      blocks_.push_back(RamBlockInfo{std::move(name), length});
      mem_sum_ += length;
      state_ = mem_sum_ == mem_total_ ? State::kRecordWord : State::kBlockIdLen;
      return Status::OK();
    }

    case State::kFooter:
      return StepFooter();

    case State::kTail: {
      std::size_t n = Avail();
      ScanTail(p_, n);
      stats_.tail_bytes += n;
      p_ = end_;
      return Status::OK();
    }
  }
  return Status::Internal("stream parser reached an impossible state");
}

Status StreamParser::Impl::StepTopLevel() {
  item_start_ = Abs();
  const std::uint8_t* at = p_;
  std::uint8_t type = *p_++;
  switch (type) {
    case sf::kSectionCommand:
      state_ = State::kCommandHeader;
      return Status::OK();
    case sf::kSectionStart:
      section_type_ = type;
      state_ = State::kSectionId;
      return SetPhase(StreamPhase::kRamSetup, at);
    case sf::kSectionPart:
      section_type_ = type;
      state_ = State::kSectionId;
      return SetPhase(StreamPhase::kRamIterate, at);
    case sf::kSectionEnd:
      section_type_ = type;
      state_ = State::kSectionId;
      return SetPhase(StreamPhase::kRamComplete, at);
    case sf::kSectionFull:
      state_ = State::kFullHeader;
      return Status::OK();
    case sf::kSectionEof:
      return Error("EOF before the ram END section (no RAM section was completed)");
    default:
      return Error(fmt::format("unknown section type 0x{:02x}", type));
  }
}

Status StreamParser::Impl::StepRecordWord() {
  if (staged_ == 0) record_start_ = item_start_ = Abs();
  const std::uint8_t* b = Take(8);
  if (b == nullptr) return Status::OK();
  std::uint64_t word = Be64(b);
  record_flags_ = static_cast<std::uint32_t>(word & sf::kFlagMask);
  record_offset_ = word & ~sf::kFlagMask;
  std::uint32_t kind = record_flags_ & ~sf::kFlagContinue;

  if (section_kind_ == SectionKind::kStart && !mem_size_seen_) {
    if (record_flags_ != sf::kFlagMemSize) {
      return Error(
          fmt::format("ram START section begins with flags 0x{:x}, not MEM_SIZE", record_flags_));
    }
    mem_size_seen_ = true;
    mem_total_ = record_offset_;
    mem_sum_ = 0;
    state_ = mem_total_ == 0 ? State::kRecordWord : State::kBlockIdLen;
    return Status::OK();
  }

  switch (kind) {
    case sf::kFlagEos:
      state_ = State::kFooter;
      return Status::OK();
    case sf::kFlagZero:
    case sf::kFlagPage:
      if (section_kind_ == SectionKind::kStart) {
        return Error("page record inside the ram START section");
      }
      if ((record_flags_ & sf::kFlagContinue) == 0) {
        state_ = State::kRecordIdLen;
        return Status::OK();
      }
      if (!have_block_) return Error("CONTINUE ram record before any record named a block");
      return BeginPageOrZero();
    case sf::kFlagXbzrle:
      return Refuse("XBZRLE page record (capability xbzrle)");
    case sf::kFlagCompressPage:
      return Refuse("COMPRESS_PAGE record (capability compress, removed in QEMU 9.1)");
    case sf::kFlagMultifdFlush:
      return Refuse("MULTIFD_FLUSH record (capability multifd)");
    case sf::kFlagHook:
      return Refuse("RAM_SAVE_FLAG_HOOK record (RDMA transport)");
    case sf::kFlagMemSize:
      return Error(section_kind_ == SectionKind::kStart
                       ? "second MEM_SIZE record in the ram START section"
                       : "MEM_SIZE ram record outside the ram START section");
    default:
      return Error(fmt::format("unknown ram record flags 0x{:03x}", record_flags_));
  }
}

Status StreamParser::Impl::BeginPageOrZero() {
  const RamBlockInfo& block = blocks_[block_];
  if (record_offset_ >= block.length) {
    item_start_ = record_start_;
    return Error(fmt::format("ram record offset 0x{:x} is beyond block '{}' of length 0x{:x}",
                             record_offset_, block.name, block.length));
  }
  if ((record_flags_ & ~sf::kFlagContinue) == sf::kFlagZero) {
    state_ = State::kZeroFill;
    return Status::OK();
  }
  // The record header goes out now; the payload follows as one OnPage.
  ESCDR_RETURN_IF_ERROR(FlushTo(p_));
  state_ = State::kPagePayload;
  return Status::OK();
}

Status StreamParser::Impl::StepFooter() {
  MarkItem();
  const std::uint8_t* b = Take(5);
  if (b == nullptr) return Status::OK();
  if (b[0] != sf::kSectionFooter) {
    return Error(
        fmt::format("missing footer after ram section {}: found byte 0x{:02x}, "
                    "expected 0x7e",
                    ram_id_, b[0]));
  }
  std::uint32_t id = Be32(b + 1);
  if (id != ram_id_) {
    return Error(fmt::format("ram section footer carries section id {}, expected {}", id, ram_id_));
  }
  switch (section_kind_) {
    case SectionKind::kStart:
      if (!mem_size_seen_) return Error("ram START section without a block list");
      state_ = State::kTopLevel;
      ESCDR_RETURN_IF_ERROR(FlushTo(p_));
      return visitor_->OnBlockList(blocks_);
    case SectionKind::kPart:
      state_ = State::kTopLevel;
      return Status::OK();
    case SectionKind::kEnd:
      ram_complete_ = true;
      state_ = State::kTail;
      return SetPhase(StreamPhase::kTail, p_);
  }
  return Status::OK();
}

// Finds every "7e <be32 id> 00 06 <be32 len> {" in the tail (the last section
// footer, EOF, the VMDESCRIPTION header and the JSON's first byte),
// remembering the last few, and the position of the last 0x00 byte: the vmdesc
// JSON holds no 0x00, so only a candidate whose JSON starts after the last
// 0x00, ends with '}' and ends exactly at the end of the stream is the trailer.
void StreamParser::Impl::ScanTail(const std::uint8_t* b, std::size_t n) {
  const std::uint64_t base = stats_.tail_bytes;  // tail offset of b[0]
  auto check = [&](const std::uint8_t* q, std::uint64_t at) {
    if (q[0] == sf::kSectionFooter && q[5] == sf::kSectionEof && q[6] == sf::kSectionVmdesc &&
        q[sf::kTrailerHead] == '{') {
      trailers_[trailer_count_ % trailers_.size()] = Trailer{at + sf::kTrailerHead, Be32(q + 7)};
      ++trailer_count_;
    }
  };
  // Candidates that start in the carried bytes and continue into `b`.
  if (carry_len_ > 0) {
    std::array<std::uint8_t, 2 * sf::kTrailerProbe> tmp{};
    std::size_t take = std::min(n, sf::kTrailerProbe - 1);
    std::memcpy(tmp.data(), carry_.data(), carry_len_);
    std::memcpy(tmp.data() + carry_len_, b, take);
    std::size_t len = carry_len_ + take;
    for (std::size_t s = 0; s < carry_len_ && s + sf::kTrailerProbe <= len; ++s) {
      check(tmp.data() + s, base - carry_len_ + s);
    }
  }
  // Candidates wholly inside `b`.
  if (n >= sf::kTrailerProbe) {
    const std::uint8_t* q = b;
    const std::uint8_t* last = b + n - sf::kTrailerProbe;
    while (q <= last) {
      q = static_cast<const std::uint8_t*>(
          std::memchr(q, sf::kSectionFooter, static_cast<std::size_t>(last - q) + 1));
      if (q == nullptr) break;
      check(q, base + static_cast<std::uint64_t>(q - b));
      ++q;
    }
  }
  if (const void* z = memrchr(b, 0, n)) {
    last_zero_end_ = base + static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(z) - b) + 1;
  }
  // Keep the last sf::kTrailerProbe - 1 bytes of the tail for the next chunk.
  const std::size_t keep = carry_.size();
  if (n >= keep) {
    std::memcpy(carry_.data(), b + n - keep, keep);
    carry_len_ = keep;
  } else {
    std::size_t total = std::min(keep, carry_len_ + n);
    std::size_t from_carry = total - n;
    std::memmove(carry_.data(), carry_.data() + carry_len_ - from_carry, from_carry);
    std::memcpy(carry_.data() + from_carry, b, n);
    carry_len_ = total;
  }
}

std::string StreamParser::Impl::Where() const {
  switch (state_) {
    case State::kFileHeader:
      return "in the file header";
    case State::kFirstRecord:
    case State::kConfigNameLen:
    case State::kConfigName:
    case State::kConfigPeek:
    case State::kSubsecHeader:
    case State::kSubsecName:
    case State::kCapCount:
    case State::kCapLen:
    case State::kCapName:
    case State::kSkipFixed:
      return "in the configuration section";
    case State::kTopLevel:
      return have_ram_id_ ? "between ram sections, before the ram END section"
                          : "before the ram START section";
    case State::kCommandHeader:
    case State::kCommandArgs:
      return fmt::format("inside the command record at byte {}", item_start_);
    case State::kFullHeader:
    case State::kFullIdstr:
    case State::kSectionId:
    case State::kStartIdLen:
    case State::kStartIdRest:
      return fmt::format("inside the section header at byte {}", item_start_);
    case State::kBlockIdLen:
    case State::kBlockIdAndLength:
      return "inside the ram block list";
    case State::kRecordWord:
    case State::kRecordIdLen:
    case State::kRecordId:
    case State::kZeroFill:
    case State::kPagePayload:
      return fmt::format("inside the ram record at byte {}", record_start_);
    case State::kFooter:
      return fmt::format("inside the ram section footer at byte {}", item_start_);
    case State::kTail:
      return "in the device state, without a complete EOF and vmdesc trailer";
  }
  return "at an unknown place";
}

Status StreamParser::Impl::Finish() {
  if (!status_.ok()) return status_;
  finished_ = true;
  if (chunk_base_ == 0) {
    status_ = Status::ProtocolError("truncated migration stream: it is empty");
    return status_;
  }
  if (state_ == State::kTail) {
    const std::uint64_t tail_end = stats_.tail_bytes;
    std::size_t n = std::min(trailer_count_, trailers_.size());
    for (std::size_t i = 0; i < n; ++i) {
      const Trailer& t = trailers_[i];
      if (t.json_start >= last_zero_end_ && t.json_start + t.json_len == tail_end &&
          carry_len_ > 0 && carry_[carry_len_ - 1] == '}') {
        return Status::OK();
      }
    }
  }
  status_ = Status::ProtocolError(
      fmt::format("truncated migration stream: it ends at byte {} {}", chunk_base_, Where()));
  return status_;
}

StreamParser::StreamParser(StreamVisitor* visitor) : impl_(std::make_unique<Impl>(visitor)) {}
StreamParser::~StreamParser() = default;

Status StreamParser::Feed(std::span<const std::uint8_t> chunk) { return impl_->Feed(chunk); }
Status StreamParser::Finish() { return impl_->Finish(); }
bool StreamParser::ram_complete() const { return impl_->ram_complete(); }
const StreamStats& StreamParser::stats() const { return impl_->stats(); }
const std::vector<RamBlockInfo>& StreamParser::blocks() const { return impl_->blocks(); }
const std::string& StreamParser::machine() const { return impl_->machine(); }

Status ParseStreamFile(const std::string& path, StreamVisitor* visitor) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    Status s = Status::FromErrno(fmt::format("cannot open migration stream {}", path), err);
    return err == ENOENT ? Status::NotFound(s.message()) : s;
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<std::uint8_t> buf(sf::kFileChunkSize);
  StreamParser parser(visitor);
  Status s;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      // Already names the file.
      s = Status::FromErrno(
          fmt::format("cannot read migration stream {} at byte {}", path, parser.stats().bytes),
          errno);
      ::close(fd);
      return s;
    }
    if (n == 0) {
      s = parser.Finish();
      break;
    }
    s = parser.Feed({buf.data(), static_cast<std::size_t>(n)});
    if (!s.ok()) break;
  }
  ::close(fd);
  // The parser's and the visitor's errors do not know the file.
  return s.WithContext(path);
}

}  // namespace escdr
