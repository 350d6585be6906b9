// Catalog file format; see docs/catalog-format.md for the layout.
#include "escdr/catalog/catalog_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <xxhash.h>

namespace escdr {
namespace {

// ---- fixed-width little-endian encoding ----

void PutFixed16(std::string* out, std::uint16_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>(v >> 8));
}

void PutFixed32(std::string* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutFixed64(std::string* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutString16(std::string* out, std::string_view s) {
  PutFixed16(out, static_cast<std::uint16_t>(s.size()));
  out->append(s);
}

std::uint64_t DecodeFixed(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Reads fixed-width fields from a byte range; every Get fails (returns
// nullopt) instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  std::size_t remaining() const { return data_.size() - pos_; }
  std::size_t position() const { return pos_; }

  std::optional<std::uint16_t> GetFixed16() { return Get<std::uint16_t>(2); }
  std::optional<std::uint32_t> GetFixed32() { return Get<std::uint32_t>(4); }
  std::optional<std::uint64_t> GetFixed64() { return Get<std::uint64_t>(8); }

  std::optional<std::string_view> GetBytes(std::size_t n) {
    if (remaining() < n) return std::nullopt;
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  // A u16 length followed by that many bytes.
  std::optional<std::string> GetString16() {
    std::optional<std::uint16_t> n = GetFixed16();
    if (!n) return std::nullopt;
    std::optional<std::string_view> s = GetBytes(*n);
    if (!s) return std::nullopt;
    return std::string(*s);
  }

 private:
  template <typename T>
  std::optional<T> Get(int bytes) {
    if (remaining() < static_cast<std::size_t>(bytes)) return std::nullopt;
    T v = static_cast<T>(DecodeFixed(data_.data() + pos_, bytes));
    pos_ += static_cast<std::size_t>(bytes);
    return v;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
};

constexpr std::size_t kContentEntrySize = 16;
constexpr std::size_t kPositionEntrySize = 16;

std::uint64_t Checksum(std::string_view bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

Status Malformed(std::string_view what) {
  return Status::Corruption(fmt::format("catalog is malformed: {}", what));
}

// ---- encoding ----

void PutSectionHeader(std::string* out, CatalogSection type, std::uint64_t length) {
  PutFixed32(out, static_cast<std::uint32_t>(type));
  PutFixed32(out, 0);  // reserved
  PutFixed64(out, length);
}

std::string EncodeSummary(const Catalog& catalog) {
  std::string s;
  const VmKind& kind = catalog.kind();
  PutString16(&s, kind.os);
  PutString16(&s, kind.os_version);
  PutString16(&s, kind.hypervisor);
  PutString16(&s, kind.hypervisor_version);
  PutFixed32(&s, catalog.sample_count());
  PutFixed64(&s, catalog.content_count());
  PutFixed64(&s, catalog.position_count());
  PutFixed32(&s, static_cast<std::uint32_t>(catalog.blocks().size()));
  for (const RamBlockInfo& block : catalog.blocks()) {
    PutString16(&s, block.name);
    PutFixed64(&s, block.length);
  }
  return s;
}

// ---- decoding ----

struct Header {
  std::uint32_t section_count = 0;
};

// Checks everything before the sections: size, magic, version, length,
// checksum, hash algorithm, page size.
Result<Header> DecodeHeader(std::string_view bytes) {
  if (bytes.size() < kCatalogHeaderSize + kCatalogTrailerSize) {
    return Err(Status::Corruption(
        fmt::format("catalog is truncated: {} bytes is shorter than the {}-byte header and trailer",
                    bytes.size(), kCatalogHeaderSize + kCatalogTrailerSize)));
  }
  Reader r(bytes);
  const std::string_view magic = *r.GetBytes(kCatalogMagic.size());
  if (magic != kCatalogMagic) {
    return Err(Status::Corruption(fmt::format(
        "not an escdr catalog: magic is {:02x} instead of \"{}\"",
        fmt::join(std::vector<unsigned char>(magic.begin(), magic.end()), " "), kCatalogMagic)));
  }
  const std::uint32_t version = *r.GetFixed32();
  if (version > kCatalogFormatVersion) {
    return Err(Status::VersionMismatch(
        fmt::format("catalog format version {} is newer than this escdr reads (up to {})", version,
                    kCatalogFormatVersion)));
  }
  if (version == 0) return Err(Malformed("format version 0 is invalid"));
  const std::uint32_t hash_algorithm = *r.GetFixed32();
  const std::uint32_t page_size = *r.GetFixed32();
  Header header;
  header.section_count = *r.GetFixed32();
  const std::uint64_t file_length = *r.GetFixed64();
  if (file_length > bytes.size()) {
    return Err(Status::Corruption(fmt::format(
        "catalog is truncated: its header says {} bytes but only {} are present", file_length,
        bytes.size())));
  }
  if (file_length < bytes.size()) {
    return Err(Status::Corruption(fmt::format(
        "catalog has {} bytes after its end (header says {} bytes, {} present)",
        bytes.size() - file_length, file_length, bytes.size())));
  }
  const std::string_view covered = bytes.substr(0, bytes.size() - kCatalogTrailerSize);
  const std::uint64_t stored = DecodeFixed(bytes.data() + covered.size(), 8);
  const std::uint64_t computed = Checksum(covered);
  if (stored != computed) {
    return Err(Status::Corruption(fmt::format(
        "catalog checksum mismatch: stored {:016x}, computed {:016x} (the data is corrupt)",
        stored, computed)));
  }
  if (hash_algorithm != static_cast<std::uint32_t>(CatalogHashAlgorithm::kXxh3_128)) {
    return Err(Status::NotSupported(fmt::format(
        "catalog uses page hash algorithm {}, but this escdr hashes pages with XXH3-128 ({})",
        hash_algorithm, static_cast<std::uint32_t>(CatalogHashAlgorithm::kXxh3_128))));
  }
  if (page_size != kPageSize) {
    return Err(Status::NotSupported(fmt::format(
        "catalog has {}-byte pages, but this escdr uses {}-byte pages", page_size, kPageSize)));
  }
  return header;
}

struct Section {
  std::uint32_t type = 0;
  std::string_view body;
};

// Splits the section area into sections, skipping unknown optional ones and
// checking the order SUMMARY, CONTENT, POSITIONS (each exactly once).
Result<std::vector<Section>> SplitSections(std::string_view bytes, const Header& header) {
  Reader r(bytes.substr(kCatalogHeaderSize,
                        bytes.size() - kCatalogHeaderSize - kCatalogTrailerSize));
  std::vector<Section> known;
  std::uint32_t next_expected = static_cast<std::uint32_t>(CatalogSection::kSummary);
  for (std::uint32_t i = 0; i < header.section_count; ++i) {
    if (r.remaining() < kCatalogSectionHeaderSize) {
      return Err(Malformed(fmt::format("section {} of {} starts past the end", i + 1,
                                       header.section_count)));
    }
    const std::uint32_t type = *r.GetFixed32();
    (void)*r.GetFixed32();  // reserved: ignored on read
    const std::uint64_t length = *r.GetFixed64();
    if (length > r.remaining()) {
      return Err(Malformed(fmt::format("section {} (type {}) claims {} bytes but {} remain", i + 1,
                                       type, length, r.remaining())));
    }
    const std::string_view body = *r.GetBytes(static_cast<std::size_t>(length));
    if ((type & kCatalogOptionalSectionBit) != 0) continue;  // optional: skip unknown
    if (type == 0 || type > static_cast<std::uint32_t>(CatalogSection::kPositions)) {
      return Err(Status::NotSupported(fmt::format(
          "catalog has mandatory section type {}, unknown to this escdr (format version {})", type,
          kCatalogFormatVersion)));
    }
    if (type != next_expected) {
      return Err(Malformed(fmt::format("section type {} found where type {} was expected", type,
                                       next_expected)));
    }
    ++next_expected;
    known.push_back(Section{type, body});
  }
  if (r.remaining() != 0) {
    return Err(Malformed(fmt::format("{} bytes follow the last of {} sections", r.remaining(),
                                     header.section_count)));
  }
  if (known.size() != 3) {
    return Err(Malformed(fmt::format("it has {} of the 3 mandatory sections", known.size())));
  }
  return known;
}

Result<CatalogSummary> DecodeSummary(std::string_view body) {
  Reader r(body);
  CatalogSummary s;
  std::optional<std::string> os = r.GetString16(), os_version = r.GetString16(),
                             hypervisor = r.GetString16(),
                             hypervisor_version = r.GetString16();
  if (!os || !os_version || !hypervisor || !hypervisor_version) {
    return Err(Malformed("the SUMMARY section ends inside the key"));
  }
  s.kind = VmKind{std::move(*os), std::move(*os_version), std::move(*hypervisor),
                  std::move(*hypervisor_version)};
  std::optional<std::uint32_t> samples = r.GetFixed32();
  std::optional<std::uint64_t> content_count = r.GetFixed64();
  std::optional<std::uint64_t> position_count = r.GetFixed64();
  std::optional<std::uint32_t> block_count = r.GetFixed32();
  if (!samples || !content_count || !position_count || !block_count) {
    return Err(Malformed("the SUMMARY section ends inside the counts"));
  }
  s.sample_count = *samples;
  s.content_count = *content_count;
  s.position_count = *position_count;
  if (*block_count > Catalog::kMaxBlocks) {
    return Err(Malformed(fmt::format("it lists {} RAM blocks, more than the limit {}",
                                     *block_count, Catalog::kMaxBlocks)));
  }
  s.blocks.reserve(*block_count);
  for (std::uint32_t b = 0; b < *block_count; ++b) {
    std::optional<std::string> name = r.GetString16();
    std::optional<std::uint64_t> length = r.GetFixed64();
    if (!name || !length) {
      return Err(Malformed(fmt::format("the SUMMARY section ends inside RAM block {} of {}", b,
                                       *block_count)));
    }
    s.blocks.push_back(RamBlockInfo{std::move(*name), *length});
  }
  // Bytes after the known fields are fields a later writer appended; a
  // version-1 reader ignores them (docs/catalog-format.md, "Compatibility").
  return s;
}

}  // namespace

std::string EncodeCatalog(const Catalog& catalog) {
  const std::string summary = EncodeSummary(catalog);
  const std::uint64_t content_bytes = catalog.content_count() * kContentEntrySize;
  const std::uint64_t position_bytes = catalog.position_count() * kPositionEntrySize;
  const std::uint64_t file_length = kCatalogHeaderSize + 3 * kCatalogSectionHeaderSize +
                                    summary.size() + content_bytes + position_bytes +
                                    kCatalogTrailerSize;
  std::string out;
  out.reserve(static_cast<std::size_t>(file_length));
  out.append(kCatalogMagic);
  PutFixed32(&out, kCatalogFormatVersion);
  PutFixed32(&out, static_cast<std::uint32_t>(CatalogHashAlgorithm::kXxh3_128));
  PutFixed32(&out, static_cast<std::uint32_t>(kPageSize));
  PutFixed32(&out, 3);  // section count
  PutFixed64(&out, file_length);

  PutSectionHeader(&out, CatalogSection::kSummary, summary.size());
  out.append(summary);

  PutSectionHeader(&out, CatalogSection::kContent, content_bytes);
  for (const PageHash& h : catalog.content()) {
    PutFixed64(&out, h.hi);
    PutFixed64(&out, h.lo);
  }

  PutSectionHeader(&out, CatalogSection::kPositions, position_bytes);
  for (std::size_t b = 0; b < catalog.blocks().size(); ++b) {
    for (const CatalogPosition& p : catalog.Positions(b)) {
      PutFixed32(&out, static_cast<std::uint32_t>(b));
      PutFixed32(&out, p.content_index);
      PutFixed64(&out, p.page_index);
    }
  }
  PutFixed64(&out, Checksum(out));
  return out;
}

Result<CatalogSummary> DecodeCatalogSummary(std::string_view bytes) {
  ESCDR_ASSIGN_OR_RETURN(const Header header, DecodeHeader(bytes));
  ESCDR_ASSIGN_OR_RETURN(const std::vector<Section> sections, SplitSections(bytes, header));
  return DecodeSummary(sections[0].body);
}

Result<Catalog> DecodeCatalog(std::string_view bytes) {
  ESCDR_ASSIGN_OR_RETURN(const Header header, DecodeHeader(bytes));
  ESCDR_ASSIGN_OR_RETURN(const std::vector<Section> sections, SplitSections(bytes, header));
  ESCDR_ASSIGN_OR_RETURN(CatalogSummary summary, DecodeSummary(sections[0].body));

  // Counts are checked against the bytes present before anything is
  // allocated from them.
  const std::string_view content_body = sections[1].body;
  if (content_body.size() % kContentEntrySize != 0 ||
      content_body.size() / kContentEntrySize != summary.content_count) {
    return Err(Malformed(fmt::format("the CONTENT section has {} bytes for {} hashes",
                                     content_body.size(), summary.content_count)));
  }
  const std::string_view position_body = sections[2].body;
  if (position_body.size() % kPositionEntrySize != 0 ||
      position_body.size() / kPositionEntrySize != summary.position_count) {
    return Err(Malformed(fmt::format("the POSITIONS section has {} bytes for {} entries",
                                     position_body.size(), summary.position_count)));
  }

  std::vector<PageHash> content(static_cast<std::size_t>(summary.content_count));
  Reader cr(content_body);
  for (PageHash& h : content) {
    h.hi = *cr.GetFixed64();
    h.lo = *cr.GetFixed64();
  }

  std::vector<std::vector<CatalogPosition>> positions(summary.blocks.size());
  Reader pr(position_body);
  std::uint32_t last_block = 0;
  for (std::uint64_t i = 0; i < summary.position_count; ++i) {
    const std::uint32_t block = *pr.GetFixed32();
    const std::uint32_t content_index = *pr.GetFixed32();
    const std::uint64_t page_index = *pr.GetFixed64();
    if (block >= positions.size() || block < last_block) {
      return Err(Malformed(fmt::format(
          "position entry {} names RAM block {} (of {}) after block {}", i, block,
          positions.size(), last_block)));
    }
    last_block = block;
    positions[block].push_back(CatalogPosition{page_index, content_index});
  }

  Result<Catalog> catalog =
      Catalog::Create(std::move(summary.kind), summary.sample_count, std::move(summary.blocks),
                      std::move(content), std::move(positions));
  if (!catalog) {
    return Err(Status::Corruption(
        fmt::format("catalog is inconsistent: {}", catalog.error().message())));
  }
  return catalog;
}

Result<std::string> ReadCatalogBytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Err(Status::NotFound("catalog file " + path + " does not exist"));
    return Err(Status::FromErrno("cannot open catalog file " + path, err));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Err(Status::FromErrno("cannot stat catalog file " + path, errno));
  if (!S_ISREG(st.st_mode)) {
    return Err(Status::InvalidArgument("catalog file " + path + " is not a regular file"));
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > kMaxCatalogBytes) {
    return Err(Status::Corruption(fmt::format(
        "catalog file {} is {} bytes, more than the limit {}", path, size, kMaxCatalogBytes)));
  }
  std::string bytes(static_cast<std::size_t>(size), '\0');
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Err(Status::FromErrno("cannot read catalog file " + path, errno));
    }
    if (n == 0) break;  // shrank while reading: decoding will report truncation
    done += static_cast<std::size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  // Unique per process and call, so concurrent writers never share a
  // temporary file; the leading dot keeps it out of listings.
  static std::atomic<std::uint64_t> counter{0};
  const fs::path tmp =
      dir / fmt::format(".{}.tmp.{}.{}", target.filename().string(), ::getpid(), counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno("cannot create " + tmp.string(), errno);
  auto fail = [&](std::string_view what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::FromErrno(fmt::format("cannot {} {}", what, tmp.string()), err);
  };
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno("cannot close " + tmp.string(), err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(fmt::format("cannot rename {} to {}", tmp.string(), path), err);
  }
  // The rename is durable only once the directory is synced.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::FromErrno("cannot open directory " + dir.string(), errno);
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0) return Status::FromErrno("cannot fsync directory " + dir.string(), err);
  return Status::OK();
}

}  // namespace escdr
