// The catalog file format: encoding, decoding and files.
//
// docs/catalog-format.md specifies the format byte by byte; this header holds
// its constants and the functions that read and write it. In short: a 32-byte
// header (magic "ESCDRCAT", format version, hash algorithm, page size,
// section count, file length), typed length-prefixed sections (SUMMARY,
// CONTENT, POSITIONS; unknown optional sections are skipped), and an XXH3-64
// checksum of everything before it. All integers are little-endian
// fixed-width. The encoding of a catalog is deterministic: the same catalog
// always gives the same bytes.
//
// Decoding treats its input as hostile: it checks, in this order, size, magic,
// version, length, checksum, hash algorithm, then every count against the
// bytes present before allocating, then every invariant of Catalog::Create().
//
// Thread safety: all functions are reentrant.
#ifndef ESCDR_CATALOG_CATALOG_FORMAT_H_
#define ESCDR_CATALOG_CATALOG_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "escdr/base/status.h"
#include "escdr/catalog/catalog.h"

namespace escdr {

inline constexpr std::string_view kCatalogMagic = "ESCDRCAT";  // 8 bytes, no NUL
// The version this escdr writes and the newest it reads. It changes only when
// a reader of the previous version could misread a file; additions that old
// readers may ignore go into optional sections and keep the version.
inline constexpr std::uint32_t kCatalogFormatVersion = 1;

enum class CatalogHashAlgorithm : std::uint32_t {
  kInvalid = 0,
  kXxh3_128 = 1,  // XXH3-128 of the 4096 page bytes, seed 0; hi = high64
};

inline constexpr std::size_t kCatalogHeaderSize = 32;
inline constexpr std::size_t kCatalogSectionHeaderSize = 16;
inline constexpr std::size_t kCatalogTrailerSize = 8;
// Largest catalog file accepted (about 250 million content hashes).
inline constexpr std::uint64_t kMaxCatalogBytes = 4ull << 30;

// Section types; bit 31 set marks a section readers may skip if unknown.
enum class CatalogSection : std::uint32_t {
  kInvalid = 0,
  kSummary = 1,    // key, sample count, counts, block list
  kContent = 2,    // content hashes, ascending
  kPositions = 3,  // (block, content index, page index), ascending
};
inline constexpr std::uint32_t kCatalogOptionalSectionBit = 0x80000000u;

// Returns the file/blob encoding of `catalog`.
std::string EncodeCatalog(const Catalog& catalog);

// Decodes and verifies a catalog.
// Errors: Corruption (too short, wrong magic, truncated or trailing bytes,
// checksum mismatch, malformed or inconsistent sections), VersionMismatch (a
// newer format version), NotSupported (another hash algorithm or page size,
// an unknown mandatory section).
Result<Catalog> DecodeCatalog(std::string_view bytes);

// Verifies `bytes` as DecodeCatalog() does but decodes only the SUMMARY
// section: cheap enough to list many catalogs. Errors: as DecodeCatalog().
Result<CatalogSummary> DecodeCatalogSummary(std::string_view bytes);

// Reads the file at `path` (at most kMaxCatalogBytes) into memory.
// Errors: NotFound if it does not exist, IOError if it cannot be read,
// Corruption if it is larger than kMaxCatalogBytes.
Result<std::string> ReadCatalogBytes(const std::string& path);

// Writes `bytes` to `path` atomically: a temporary file in the same
// directory, fsync, rename over `path`, fsync of the directory. Readers see
// the old file or the new one, never a mix. Errors: IOError.
Status WriteFileAtomically(const std::string& path, std::string_view bytes);

}  // namespace escdr

#endif  // ESCDR_CATALOG_CATALOG_FORMAT_H_
