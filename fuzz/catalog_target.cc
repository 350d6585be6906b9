// Fuzz target: the catalog file decoder (src/catalog/catalog_format.cc).
//
// With the mode byte's bit 0 set the harness first makes the file length and
// the XXH3-64 checksum right, so that mutations reach the section decoders
// behind the checksum. A catalog that decodes must agree with its summary
// (DecodeCatalogSummary), re-encode to a file that decodes to the same
// catalog, and encode deterministically.
#include <string>
#include <string_view>

#include <xxhash.h>

#include "escdr/catalog/catalog.h"
#include "escdr/catalog/catalog_format.h"
#include "fuzz_targets.h"

namespace escdr::fuzz {
namespace {

void StoreLe64(std::string* s, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

void FixLengthAndChecksum(std::string* s) {
  if (s->size() < kCatalogHeaderSize + kCatalogTrailerSize) return;
  StoreLe64(s, 24, s->size());  // header field file_length
  const std::size_t covered = s->size() - kCatalogTrailerSize;
  StoreLe64(s, covered, XXH3_64bits(s->data(), covered));
}

bool SameCatalog(const Catalog& a, const Catalog& b) {
  if (a.kind() != b.kind() || a.sample_count() != b.sample_count() || a.blocks() != b.blocks() ||
      a.content_count() != b.content_count() || a.position_count() != b.position_count()) {
    return false;
  }
  if (!std::equal(a.content().begin(), a.content().end(), b.content().begin())) return false;
  for (std::size_t i = 0; i < a.blocks().size(); ++i) {
    auto pa = a.Positions(i), pb = b.Positions(i);
    if (pa.size() != pb.size()) return false;
    for (std::size_t k = 0; k < pa.size(); ++k) {
      if (pa[k].page_index != pb[k].page_index || pa[k].content_index != pb[k].content_index) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

int FuzzCatalog(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((mode & 1) != 0) FixLengthAndChecksum(&bytes);

  Result<CatalogSummary> summary = DecodeCatalogSummary(bytes);
  Result<Catalog> catalog = DecodeCatalog(bytes);
  if (!catalog.has_value()) {
    FUZZ_CHECK(!catalog.error().ok());
    return 0;
  }
  FUZZ_CHECK_MSG(summary.has_value(), "DecodeCatalog accepted what DecodeCatalogSummary refused");
  const CatalogSummary s = catalog->Summary();
  FUZZ_CHECK(s.kind == summary->kind && s.sample_count == summary->sample_count &&
             s.content_count == summary->content_count &&
             s.position_count == summary->position_count && s.blocks == summary->blocks);

  const std::string encoded = EncodeCatalog(*catalog);
  Result<Catalog> again = DecodeCatalog(encoded);
  FUZZ_CHECK_MSG(again.has_value(), again ? "" : again.error().message().c_str());
  FUZZ_CHECK_MSG(SameCatalog(*catalog, *again), "re-encoded catalog decodes differently");
  FUZZ_CHECK_MSG(EncodeCatalog(*again) == encoded, "encoding is not deterministic");
  return 0;
}

}  // namespace escdr::fuzz
