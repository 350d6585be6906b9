// CatalogContent: a decoded Catalog seen as the StaticContent a migration needs.
//
// Both agents load the catalog of the migrating VM's kind from the inventory
// (CatalogStore) and name it by its checksum, the XXH3-64 trailer of its
// encoding (docs/wire-protocol.md §3.2), so the two sides agree they hold the
// same version before any reference is sent.
//
// Thread safety: immutable after Load(); const calls are safe concurrently.
#ifndef ESCDR_AGENT_CATALOG_CONTENT_H_
#define ESCDR_AGENT_CATALOG_CONTENT_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "escdr/base/status.h"
#include "escdr/catalog/catalog.h"
#include "escdr/catalog/catalog_store.h"
#include "escdr/migrate/static_content.h"

namespace escdr::agent {

class CatalogContent final : public StaticContent {
 public:
  // Decodes `bytes` (a catalog encoding). Errors: those of DecodeCatalog.
  static Result<std::unique_ptr<CatalogContent>> FromBytes(std::string_view bytes);
  // The catalog of `kind` in `store`; NotFound if there is none.
  static Result<std::unique_ptr<CatalogContent>> Load(CatalogStore& store, const VmKind& kind);

  const VmKind& kind() const override { return catalog_.kind(); }
  std::uint64_t checksum() const override { return checksum_; }
  std::uint32_t size() const override { return static_cast<std::uint32_t>(catalog_.content_count()); }
  const PageHash& hash(std::uint32_t index) const override { return catalog_.ContentHash(index); }
  std::uint32_t Find(const PageHash& hash) const override;
  int FindBlock(std::string_view name) const override;
  std::uint32_t ContentAt(int block, std::uint64_t page_index) const override;

  const Catalog& catalog() const { return catalog_; }

 private:
  CatalogContent(Catalog catalog, std::uint64_t checksum)
      : catalog_(std::move(catalog)), checksum_(checksum) {}
  Catalog catalog_;
  std::uint64_t checksum_;
};

// The checksum trailer of a catalog encoding (its last 8 bytes, little-endian).
// REQUIRES: bytes.size() >= 8.
std::uint64_t CatalogChecksum(std::string_view bytes);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_CATALOG_CONTENT_H_
