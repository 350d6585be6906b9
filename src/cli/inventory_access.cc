#include "cli/inventory_access.h"

namespace escdr::cli {

Result<std::string> InventoryUrl(const GlobalOptions& global) {
  if (!global.db.empty()) return global.db;
  ESCDR_ASSIGN_OR_RETURN(const std::string dir, global.StateDir());
  return ResolveInventoryUrl("", dir);
}

Result<std::unique_ptr<Inventory>> OpenInventoryFromGlobal(const GlobalOptions& global) {
  ESCDR_ASSIGN_OR_RETURN(const std::string url, InventoryUrl(global));
  return OpenInventory(url);
}

}  // namespace escdr::cli
