#include "escdr/wire/messages.h"

#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "escdr/page/page.h"
#include "escdr/wire/coding.h"

namespace escdr::wire {
namespace {

constexpr std::uint8_t kEncodingRaw = 0;
constexpr std::uint8_t kEncodingZstd = 1;

std::vector<std::uint8_t> EncodeU64s(std::initializer_list<std::uint64_t> values) {
  std::vector<std::uint8_t> out;
  out.reserve(values.size() * 8);
  for (std::uint64_t v : values) PutFixed64(&out, v);
  return out;
}

Status CheckKindField(std::string_view field, const std::string& value) {
  if (value.empty() || value.size() > kMaxKindFieldLength) {
    return Status::InvalidArgument(fmt::format("Prepare field {} has {} bytes, allowed 1..{}",
                                               field, value.size(), kMaxKindFieldLength));
  }
  return Status::OK();
}

}  // namespace

// ---- Hello ----

std::vector<std::uint8_t> Hello::Encode() const {
  std::vector<std::uint8_t> out;
  out.reserve(kHelloPayloadSize);
  PutFixed64(&out, kHelloMagic);
  PutFixed16(&out, version);
  PutFixed16(&out, static_cast<std::uint16_t>(role));
  PutFixed32(&out, 0);
  return out;
}

Result<Hello> Hello::Decode(std::span<const std::uint8_t> payload) {
  ByteReader r(payload, "Hello payload");
  ESCDR_ASSIGN_OR_RETURN(std::uint64_t magic, r.GetFixed64("magic"));
  if (magic != kHelloMagic) {
    return Err(Status::ProtocolError(
        fmt::format("Hello magic is {:#018x}, not {:#018x}: the peer is not an escdr agent", magic,
                    kHelloMagic)));
  }
  Hello h;
  ESCDR_ASSIGN_OR_RETURN(h.version, r.GetFixed16("version"));
  ESCDR_ASSIGN_OR_RETURN(std::uint16_t role, r.GetFixed16("role"));
  if (role != static_cast<std::uint16_t>(Role::kSource) &&
      role != static_cast<std::uint16_t>(Role::kDestination)) {
    return Err(Status::ProtocolError(fmt::format("Hello role {} is invalid", role)));
  }
  h.role = static_cast<Role>(role);
  ESCDR_ASSIGN_OR_RETURN(std::uint32_t reserved, r.GetFixed32("reserved"));
  (void)reserved;  // ignored on read (§2)
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  return h;
}

// ---- Prepare ----

Status Prepare::Validate() const {
  if (catalog_entries > kMaxCatalogEntries) {
    return Status::InvalidArgument(fmt::format("Prepare catalog_entries {} exceeds the limit {}",
                                               catalog_entries, kMaxCatalogEntries));
  }
  if (window_pages > kMaxWindowPages) {
    return Status::InvalidArgument(fmt::format("Prepare window_pages {} exceeds the limit {}",
                                               window_pages, kMaxWindowPages));
  }
  if (vm_name.empty() || vm_name.size() > kMaxVmNameLength) {
    return Status::InvalidArgument(fmt::format("Prepare vm_name has {} bytes, allowed 1..{}",
                                               vm_name.size(), kMaxVmNameLength));
  }
  ESCDR_RETURN_IF_ERROR(CheckKindField("os", kind.os));
  ESCDR_RETURN_IF_ERROR(CheckKindField("os_version", kind.os_version));
  ESCDR_RETURN_IF_ERROR(CheckKindField("hypervisor", kind.hypervisor));
  ESCDR_RETURN_IF_ERROR(CheckKindField("hypervisor_version", kind.hypervisor_version));
  if (dedup_pages > kMaxDedupPages) {
    return Status::InvalidArgument(fmt::format("Prepare dedup_pages {} exceeds the limit {}",
                                               dedup_pages, kMaxDedupPages));
  }
  return Status::OK();
}

std::vector<std::uint8_t> Prepare::Encode(std::uint16_t version) const {
  std::vector<std::uint8_t> out;
  PutFixed64(&out, migration_id);
  PutFixed64(&out, catalog_checksum);
  PutFixed32(&out, catalog_entries);
  PutFixed32(&out, window_pages);
  PutString16(&out, vm_name);
  PutString16(&out, kind.os);
  PutString16(&out, kind.os_version);
  PutString16(&out, kind.hypervisor);
  PutString16(&out, kind.hypervisor_version);
  if (version >= 4) {
    PutFixed32(&out, dedup_pages);
    PutFixed8(&out, codec);
    PutFixed8(&out, 0);
    PutFixed16(&out, 0);
  }
  return out;
}

Result<Prepare> Prepare::Decode(std::span<const std::uint8_t> payload, std::uint16_t version) {
  ByteReader r(payload, "Prepare payload");
  Prepare p;
  ESCDR_ASSIGN_OR_RETURN(p.migration_id, r.GetFixed64("migration_id"));
  ESCDR_ASSIGN_OR_RETURN(p.catalog_checksum, r.GetFixed64("catalog_checksum"));
  ESCDR_ASSIGN_OR_RETURN(p.catalog_entries, r.GetFixed32("catalog_entries"));
  ESCDR_ASSIGN_OR_RETURN(p.window_pages, r.GetFixed32("window_pages"));
  ESCDR_ASSIGN_OR_RETURN(p.vm_name, r.GetString16("vm_name", 1, kMaxVmNameLength));
  ESCDR_ASSIGN_OR_RETURN(p.kind.os, r.GetString16("os", 1, kMaxKindFieldLength));
  ESCDR_ASSIGN_OR_RETURN(p.kind.os_version, r.GetString16("os_version", 1, kMaxKindFieldLength));
  ESCDR_ASSIGN_OR_RETURN(p.kind.hypervisor, r.GetString16("hypervisor", 1, kMaxKindFieldLength));
  ESCDR_ASSIGN_OR_RETURN(p.kind.hypervisor_version,
                         r.GetString16("hypervisor_version", 1, kMaxKindFieldLength));
  if (version >= 4) {
    ESCDR_ASSIGN_OR_RETURN(p.dedup_pages, r.GetFixed32("dedup_pages"));
    ESCDR_ASSIGN_OR_RETURN(p.codec, r.GetFixed8("codec"));
    ESCDR_ASSIGN_OR_RETURN(std::uint8_t reserved8, r.GetFixed8("reserved"));
    ESCDR_ASSIGN_OR_RETURN(std::uint16_t reserved16, r.GetFixed16("reserved"));
    (void)reserved8;  // reserved: 0 on write, ignored on read
    (void)reserved16;
  }
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  if (Status s = p.Validate(); !s.ok()) return Err(Status::ProtocolError(s.message()));
  return p;
}

// ---- Availability ----

std::uint32_t BitmapPopcount(std::span<const std::uint8_t> bitmap) {
  std::uint64_t n = 0;
  std::size_t i = 0;
  for (; i + 8 <= bitmap.size(); i += 8) n += std::popcount(LoadFixed64(bitmap.data() + i));
  for (; i < bitmap.size(); ++i) n += std::popcount(bitmap[i]);
  return static_cast<std::uint32_t>(n);
}

std::vector<std::uint8_t> Availability::Encode(std::uint16_t version) const {
  std::vector<std::uint8_t> out;
  PutFixed32(&out, catalog_entries);
  PutFixed32(&out, available_count());
  std::vector<std::uint8_t> compressed;
  if (bitmap.size() > kRawBitmapCompressThreshold) {
    compressed.resize(ZSTD_compressBound(bitmap.size()));
    std::size_t n = ZSTD_compress(compressed.data(), compressed.size(), bitmap.data(),
                                  bitmap.size(), 3);
    if (ZSTD_isError(n) || n >= bitmap.size()) {
      compressed.clear();  // incompressible (or zstd failed): raw is always valid
    } else {
      compressed.resize(n);
    }
  }
  PutFixed8(&out, compressed.empty() ? kEncodingRaw : kEncodingZstd);
  for (int i = 0; i < 7; ++i) PutFixed8(&out, 0);
  if (version >= 3) PutBytes(&out, key);
  PutBytes(&out, compressed.empty() ? std::span<const std::uint8_t>(bitmap)
                                    : std::span<const std::uint8_t>(compressed));
  return out;
}

Result<Availability> Availability::Decode(std::span<const std::uint8_t> payload,
                                          std::uint16_t version) {
  ByteReader r(payload, "Availability payload");
  Availability a;
  ESCDR_ASSIGN_OR_RETURN(a.catalog_entries, r.GetFixed32("catalog_entries"));
  if (a.catalog_entries > kMaxCatalogEntries) {
    return Err(Status::ProtocolError(fmt::format(
        "Availability catalog_entries {} exceeds the limit {}", a.catalog_entries,
        kMaxCatalogEntries)));
  }
  ESCDR_ASSIGN_OR_RETURN(std::uint32_t count, r.GetFixed32("available_count"));
  ESCDR_ASSIGN_OR_RETURN(std::uint8_t encoding, r.GetFixed8("encoding"));
  ESCDR_ASSIGN_OR_RETURN(auto reserved, r.GetBytes(7, "reserved"));
  (void)reserved;
  if (version >= 3) {
    ESCDR_ASSIGN_OR_RETURN(auto key, r.GetBytes(kDonorKeySize, "key"));
    std::copy(key.begin(), key.end(), a.key.begin());
  }
  std::span<const std::uint8_t> body = r.Rest();
  const std::size_t want = BitmapBytes(a.catalog_entries);
  if (encoding == kEncodingRaw) {
    if (body.size() != want) {
      return Err(Status::ProtocolError(
          fmt::format("Availability raw bitmap has {} bytes, expected {} for {} entries",
                      body.size(), want, a.catalog_entries)));
    }
    a.bitmap.assign(body.begin(), body.end());
  } else if (encoding == kEncodingZstd) {
    // The declared size is checked before allocating: hostile input must not
    // choose our allocation.
    unsigned long long declared = ZSTD_getFrameContentSize(body.data(), body.size());
    if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN ||
        declared != want) {
      return Err(Status::Corruption(fmt::format(
          "Availability zstd bitmap does not declare {} bytes for {} entries", want,
          a.catalog_entries)));
    }
    a.bitmap.resize(want);
    std::size_t n = ZSTD_decompress(a.bitmap.data(), want, body.data(), body.size());
    if (ZSTD_isError(n) || n != want) {
      return Err(Status::Corruption(fmt::format(
          "Availability zstd bitmap of {} bytes does not decode to {} bytes{}", body.size(),
          want, ZSTD_isError(n) ? std::string(": ") + ZSTD_getErrorName(n) : "")));
    }
  } else {
    return Err(Status::ProtocolError(fmt::format("Availability encoding {} is unknown", encoding)));
  }
  if (a.catalog_entries % 8 != 0 && !a.bitmap.empty()) {
    std::uint8_t extra = static_cast<std::uint8_t>(0xff << (a.catalog_entries % 8));
    if (a.bitmap.back() & extra) {
      return Err(Status::ProtocolError(fmt::format(
          "Availability bitmap has bits set at or past entry {}", a.catalog_entries)));
    }
  }
  if (a.available_count() != count) {
    return Err(Status::ProtocolError(fmt::format(
        "Availability says {} entries are available but its bitmap has {}", count,
        a.available_count())));
  }
  return a;
}

// ---- Refs ----

void AppendRefsHeader(std::vector<std::uint8_t>* out, std::uint64_t first_seq,
                      std::uint32_t count) {
  PutFixed64(out, first_seq);
  PutFixed32(out, count);
  PutFixed32(out, 0);
}

void StoreRefEntry(std::uint8_t* out, const RefEntry& entry, std::uint16_t version) {
  StoreFixed64(out, entry.record_word);
  StoreFixed32(out + 8, entry.content_index);
  if (version >= 3) std::memcpy(out + kRefEntrySizeV2, entry.tag.data(), kPageTagSize);
}

Result<RefsView> RefsView::Parse(std::span<const std::uint8_t> payload, std::uint16_t version) {
  if (payload.size() < kRefsFixedSize) {
    return Err(Status::ProtocolError(
        fmt::format("Refs payload of {} bytes is shorter than its {}-byte header", payload.size(),
                    kRefsFixedSize)));
  }
  RefsView v;
  v.entry_size_ = RefEntrySize(version);
  v.first_seq_ = LoadFixed64(payload.data());
  v.count_ = LoadFixed32(payload.data() + 8);
  if (v.count_ == 0 || v.count_ > kMaxRefsPerFrame) {
    return Err(Status::ProtocolError(
        fmt::format("Refs count {} is outside 1..{}", v.count_, kMaxRefsPerFrame)));
  }
  if (payload.size() != kRefsFixedSize + std::size_t{v.count_} * v.entry_size_) {
    return Err(Status::ProtocolError(fmt::format(
        "Refs payload of {} bytes does not hold exactly {} entries of {} bytes (protocol "
        "version {})",
        payload.size(), v.count_, v.entry_size_, version)));
  }
  v.entries_ = payload.subspan(kRefsFixedSize);
  for (std::uint32_t k = 0; k < v.count_; ++k) {
    std::uint64_t word = LoadFixed64(v.entries_.data() + k * v.entry_size_);
    if (word != 0 && (word & kRecordFlagsMask) != kPageContinueFlags) {
      return Err(Status::ProtocolError(fmt::format(
          "Refs entry {} (seq {}) has record word {:#x}, not a PAGE|CONTINUE record", k,
          v.first_seq_ + k, word)));
    }
  }
  return v;
}

RefEntry RefsView::entry(std::uint32_t k) const {
  const std::uint8_t* p = entries_.data() + std::size_t{k} * entry_size_;
  RefEntry e{LoadFixed64(p), LoadFixed32(p + 8), {}};
  if (entry_size_ == kRefEntrySize) std::memcpy(e.tag.data(), p + kRefEntrySizeV2, kPageTagSize);
  return e;
}

// ---- Dup ----

void StoreDupEntry(std::uint8_t* out, const DupEntry& entry) {
  StoreFixed64(out, entry.record_word);
  StoreFixed64(out + 8, entry.stream_offset);
  StoreFixed64(out + 16, entry.check);
}

Result<DupView> DupView::Parse(std::span<const std::uint8_t> payload) {
  if (payload.size() < kDupFixedSize) {
    return Err(Status::ProtocolError(fmt::format(
        "Dup payload of {} bytes is shorter than its {}-byte header", payload.size(),
        kDupFixedSize)));
  }
  DupView v;
  v.count_ = LoadFixed32(payload.data());
  if (v.count_ == 0 || v.count_ > kMaxDupsPerFrame) {
    return Err(Status::ProtocolError(
        fmt::format("Dup count {} is outside 1..{}", v.count_, kMaxDupsPerFrame)));
  }
  if (payload.size() != kDupFixedSize + std::size_t{v.count_} * kDupEntrySize) {
    return Err(Status::ProtocolError(
        fmt::format("Dup payload of {} bytes does not hold exactly {} entries of {} bytes",
                    payload.size(), v.count_, kDupEntrySize)));
  }
  v.entries_ = payload.subspan(kDupFixedSize);
  for (std::uint32_t k = 0; k < v.count_; ++k) {
    std::uint64_t word = LoadFixed64(v.entries_.data() + std::size_t{k} * kDupEntrySize);
    if (word != 0 && (word & kRecordFlagsMask) != kPageContinueFlags) {
      return Err(Status::ProtocolError(fmt::format(
          "Dup entry {} has record word {:#x}, not a PAGE|CONTINUE record", k, word)));
    }
  }
  return v;
}

DupEntry DupView::entry(std::uint32_t k) const {
  const std::uint8_t* p = entries_.data() + std::size_t{k} * kDupEntrySize;
  return DupEntry{LoadFixed64(p), LoadFixed64(p + 8), LoadFixed64(p + 16)};
}

// ---- PageRequest / PageResponse / Ack ----

std::vector<std::uint8_t> PageRequest::Encode() const { return EncodeU64s({seq}); }

Result<PageRequest> PageRequest::Decode(std::span<const std::uint8_t> payload) {
  ByteReader r(payload, "PageRequest payload");
  PageRequest p;
  ESCDR_ASSIGN_OR_RETURN(p.seq, r.GetFixed64("seq"));
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  return p;
}

std::vector<std::uint8_t> EncodePageResponse(std::uint64_t seq, const std::uint8_t* page) {
  std::vector<std::uint8_t> out;
  out.reserve(kPageResponsePayloadSize);
  PutFixed64(&out, seq);
  out.insert(out.end(), page, page + kPageSize);
  return out;
}

Result<PageResponseView> PageResponseView::Parse(std::span<const std::uint8_t> payload) {
  if (payload.size() != kPageResponsePayloadSize) {
    return Err(Status::ProtocolError(fmt::format("PageResponse payload has {} bytes, expected {}",
                                                 payload.size(), kPageResponsePayloadSize)));
  }
  return PageResponseView{LoadFixed64(payload.data()), payload.data() + 8};
}

std::vector<std::uint8_t> Ack::Encode(std::uint16_t version) const {
  if (version < 2) return EncodeU64s({next_seq});
  return EncodeU64s({next_seq, delivered_bytes});
}

Result<Ack> Ack::Decode(std::span<const std::uint8_t> payload, std::uint16_t version) {
  const std::size_t want = version < 2 ? kAckPayloadSizeV1 : kAckPayloadSize;
  if (payload.size() != want) {
    return Err(Status::ProtocolError(fmt::format(
        "Ack payload has {} bytes, protocol version {} expects {}", payload.size(), version, want)));
  }
  ByteReader r(payload, "Ack payload");
  Ack a;
  ESCDR_ASSIGN_OR_RETURN(a.next_seq, r.GetFixed64("next_seq"));
  if (version >= 2) {
    ESCDR_ASSIGN_OR_RETURN(a.delivered_bytes, r.GetFixed64("delivered_bytes"));
  }
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  return a;
}

// ---- End / Result ----

std::vector<std::uint8_t> EndSummary::Encode() const {
  return EncodeU64s({stream_bytes, refs, page_records, zero_records, pages_by_position,
                     pages_by_content, pages_window_full});
}

Result<EndSummary> EndSummary::Decode(std::span<const std::uint8_t> payload) {
  ByteReader r(payload, "End payload");
  EndSummary e;
  ESCDR_ASSIGN_OR_RETURN(e.stream_bytes, r.GetFixed64("stream_bytes"));
  ESCDR_ASSIGN_OR_RETURN(e.refs, r.GetFixed64("refs"));
  ESCDR_ASSIGN_OR_RETURN(e.page_records, r.GetFixed64("page_records"));
  ESCDR_ASSIGN_OR_RETURN(e.zero_records, r.GetFixed64("zero_records"));
  ESCDR_ASSIGN_OR_RETURN(e.pages_by_position, r.GetFixed64("pages_by_position"));
  ESCDR_ASSIGN_OR_RETURN(e.pages_by_content, r.GetFixed64("pages_by_content"));
  ESCDR_ASSIGN_OR_RETURN(e.pages_window_full, r.GetFixed64("pages_window_full"));
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  return e;
}

std::vector<std::uint8_t> DestinationResult::Encode() const {
  return EncodeU64s({rebuilt_bytes, pages_from_donor, fallbacks, return_path_bytes,
                     donor_pages_scanned, scan_micros});
}

Result<DestinationResult> DestinationResult::Decode(std::span<const std::uint8_t> payload) {
  ByteReader r(payload, "Result payload");
  DestinationResult d;
  ESCDR_ASSIGN_OR_RETURN(d.rebuilt_bytes, r.GetFixed64("rebuilt_bytes"));
  ESCDR_ASSIGN_OR_RETURN(d.pages_from_donor, r.GetFixed64("pages_from_donor"));
  ESCDR_ASSIGN_OR_RETURN(d.fallbacks, r.GetFixed64("fallbacks"));
  ESCDR_ASSIGN_OR_RETURN(d.return_path_bytes, r.GetFixed64("return_path_bytes"));
  ESCDR_ASSIGN_OR_RETURN(d.donor_pages_scanned, r.GetFixed64("donor_pages_scanned"));
  ESCDR_ASSIGN_OR_RETURN(d.scan_micros, r.GetFixed64("scan_micros"));
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  return d;
}

// ---- Error / Abort ----

std::vector<std::uint8_t> EncodeError(const Status& status) {
  std::string_view msg = status.message();
  if (msg.size() > kMaxMessageLength) msg = msg.substr(0, kMaxMessageLength);
  std::vector<std::uint8_t> out;
  PutFixed16(&out, static_cast<std::uint16_t>(ToWireErrorCode(status.code())));
  PutString16(&out, msg);
  return out;
}

Result<Status> DecodeError(std::span<const std::uint8_t> payload) {
  ByteReader r(payload, "Error payload");
  ESCDR_ASSIGN_OR_RETURN(std::uint16_t code, r.GetFixed16("code"));
  ESCDR_ASSIGN_OR_RETURN(std::string msg, r.GetString16("message", 0, kMaxMessageLength));
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  StatusCode status_code = FromWireErrorCode(code);
  if (status_code == StatusCode::kOk) status_code = StatusCode::kInternal;
  return Status(status_code, std::move(msg));
}

std::vector<std::uint8_t> EncodeAbort(std::string_view reason) {
  if (reason.size() > kMaxMessageLength) reason = reason.substr(0, kMaxMessageLength);
  std::vector<std::uint8_t> out;
  PutString16(&out, reason);
  return out;
}

Result<std::string> DecodeAbort(std::span<const std::uint8_t> payload) {
  ByteReader r(payload, "Abort payload");
  ESCDR_ASSIGN_OR_RETURN(std::string reason, r.GetString16("reason", 0, kMaxMessageLength));
  ESCDR_RETURN_IF_ERROR(r.ExpectEnd());
  return reason;
}

}  // namespace escdr::wire
