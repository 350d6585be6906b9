// The Inventory implementation shared by the SQLite and PostgreSQL backends.
#ifndef ESCDR_INVENTORY_SQL_INVENTORY_H_
#define ESCDR_INVENTORY_SQL_INVENTORY_H_

#include <memory>

#include "escdr/inventory/inventory.h"
#include "inventory/sql_db.h"

namespace escdr::inventory_internal {

// An Inventory over `db`, whose schema must be current (EnsureSchema).
std::unique_ptr<Inventory> NewSqlInventory(std::unique_ptr<SqlDb> db);

}  // namespace escdr::inventory_internal

#endif  // ESCDR_INVENTORY_SQL_INVENTORY_H_
