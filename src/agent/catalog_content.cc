#include "agent/catalog_content.h"

#include <string>

#include <fmt/format.h>

#include "escdr/catalog/catalog_format.h"
#include "escdr/catalog/page_hash_index.h"

namespace escdr::agent {

std::uint64_t CatalogChecksum(std::string_view bytes) {
  std::uint64_t v = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + bytes.size() - 8);
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

Result<std::unique_ptr<CatalogContent>> CatalogContent::FromBytes(std::string_view bytes) {
  ESCDR_ASSIGN_OR_RETURN(Catalog catalog, DecodeCatalog(bytes));
  if (catalog.content_count() > kNoContent - 1) {
    return Err(Status::NotSupported(fmt::format(
        "catalog of {} has {} content entries, more than a migration can name",
        catalog.kind().ToString(), catalog.content_count())));
  }
  const std::uint64_t checksum = CatalogChecksum(bytes);
  return std::unique_ptr<CatalogContent>(new CatalogContent(std::move(catalog), checksum));
}

Result<std::unique_ptr<CatalogContent>> CatalogContent::Load(CatalogStore& store,
                                                             const VmKind& kind) {
  ESCDR_ASSIGN_OR_RETURN(std::string bytes, store.GetCatalog(kind));
  auto content = FromBytes(bytes);
  if (!content.has_value()) {
    return Err(content.error().WithContext(
        fmt::format("cannot load the catalog of {}", kind.ToString())));
  }
  return content;
}

std::uint32_t CatalogContent::Find(const PageHash& hash) const {
  const std::uint32_t i = catalog_.FindContent(hash);
  return i == PageHashIndex::kAbsent ? kNoContent : i;
}

int CatalogContent::FindBlock(std::string_view name) const {
  return catalog_.FindBlock(std::string(name));
}

std::uint32_t CatalogContent::ContentAt(int block, std::uint64_t page_index) const {
  auto i = catalog_.ContentAt(static_cast<std::size_t>(block), page_index);
  return i.has_value() ? *i : kNoContent;
}

}  // namespace escdr::agent
