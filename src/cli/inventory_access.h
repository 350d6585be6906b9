// How CLI commands reach the inventory: --db (or $ESCDR_DB), else
// <state-dir>/inventory.db. The one place that resolves it, so every
// command group opens the same database.
#ifndef ESCDR_CLI_INVENTORY_ACCESS_H_
#define ESCDR_CLI_INVENTORY_ACCESS_H_

#include <memory>
#include <string>

#include "cli/command.h"
#include "escdr/inventory/inventory.h"

namespace escdr::cli {

// The inventory URL the global options select.
Result<std::string> InventoryUrl(const GlobalOptions& global);

// Opens (creating if needed) that inventory.
Result<std::unique_ptr<Inventory>> OpenInventoryFromGlobal(const GlobalOptions& global);

}  // namespace escdr::cli

#endif  // ESCDR_CLI_INVENTORY_ACCESS_H_
