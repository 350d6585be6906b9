// DirectoryCatalogStore: a CatalogStore kept as one file per kind in a
// directory, for tools and tests and until the inventory holds catalogs.
//
// Layout: <dir>/<os>+<os version>+<hypervisor>+<hypervisor version>.catalog,
// each field percent-encoded (every byte outside [A-Za-z0-9._-] becomes %XX,
// so '+' and '/' cannot clash), holding exactly the bytes given to
// PutCatalog(). Put replaces the file atomically (temporary file, fsync,
// rename, directory fsync): a reader or a crash sees the old catalog or the
// new one, never a torn file. created_at is the file's modification time.
// Files whose name does not decode to a valid kind are ignored by
// ListCatalogs().
//
// Thread safety: safe to use from several threads and processes at once;
// concurrent Puts of the same kind leave one of them in place, whole.
#ifndef ESCDR_CATALOG_DIRECTORY_CATALOG_STORE_H_
#define ESCDR_CATALOG_DIRECTORY_CATALOG_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/catalog/catalog_store.h"

namespace escdr {

class DirectoryCatalogStore final : public CatalogStore {
 public:
  // Opens (creating it and its parents if missing) the directory `dir`.
  // Errors: IOError if it cannot be created or is not a directory.
  static Result<std::unique_ptr<DirectoryCatalogStore>> Open(const std::string& dir);

  // PutCatalog errors: InvalidArgument if kind.Validate() fails or its file
  // name would exceed 200 bytes; IOError if the write fails.
  Status PutCatalog(const VmKind& kind, const std::string& bytes) override;
  Result<std::string> GetCatalog(const VmKind& kind) override;
  Result<std::vector<StoredCatalogInfo>> ListCatalogs() override;
  Status RemoveCatalog(const VmKind& kind) override;

  const std::string& dir() const { return dir_; }

  // The file name used for `kind` ("debian+12+qemu+7.2.catalog"), and its
  // inverse (nullopt for a name this store did not make).
  static std::string FileNameOf(const VmKind& kind);
  static std::optional<VmKind> KindOfFileName(const std::string& file_name);

 private:
  explicit DirectoryCatalogStore(std::string dir) : dir_(std::move(dir)) {}
  Result<std::string> PathOf(const VmKind& kind) const;

  std::string dir_;
};

}  // namespace escdr

#endif  // ESCDR_CATALOG_DIRECTORY_CATALOG_STORE_H_
