// CatalogStore: where serialized catalogs are kept, keyed by VmKind.
//
// A catalog is stored as the bytes that catalog serialization produces
// (docs/catalog-format.md); the store does not interpret them, and readers
// verify the checksum when they decode. One catalog per kind: Put replaces.
//
// Implementations: the inventory's SQLite and PostgreSQL backends (the normal
// home of catalogs), and a directory of files for tools and tests.
//
// Thread safety: implementations say so; the inventory's are safe to share.
#ifndef ESCDR_CATALOG_CATALOG_STORE_H_
#define ESCDR_CATALOG_CATALOG_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"

namespace escdr {

struct StoredCatalogInfo {
  VmKind kind;
  std::uint64_t size_bytes = 0;
  std::string created_at;  // ISO 8601 UTC, when it was stored
};

class CatalogStore {
 public:
  virtual ~CatalogStore() = default;

  // Stores `bytes` as the catalog of `kind`, replacing any previous one.
  virtual Status PutCatalog(const VmKind& kind, const std::string& bytes) = 0;

  // Returns the bytes stored for `kind`; NotFound if there are none.
  virtual Result<std::string> GetCatalog(const VmKind& kind) = 0;

  // All stored catalogs, ordered by kind.
  virtual Result<std::vector<StoredCatalogInfo>> ListCatalogs() = 0;

  // Removes the catalog of `kind`; NotFound if there is none.
  virtual Status RemoveCatalog(const VmKind& kind) = 0;
};

}  // namespace escdr

#endif  // ESCDR_CATALOG_CATALOG_STORE_H_
