// Creating the inventory schema, or migrating an older one forward.
#ifndef ESCDR_INVENTORY_SCHEMA_H_
#define ESCDR_INVENTORY_SCHEMA_H_

#include "escdr/base/status.h"
#include "inventory/sql_db.h"

namespace escdr::inventory_internal {

// Brings `db` to kInventorySchemaVersion in one transaction (creating the
// tables in an empty database). VersionMismatch if the database is newer:
// "database <url> has schema version 7; this escdr supports up to 2: upgrade escdr".
// REQUIRES: no transaction open on `db`.
Status EnsureSchema(SqlDb& db);

// The same, stopping at `version` (tests build databases of older versions
// with it). REQUIRES: 1 <= version <= kInventorySchemaVersion.
Status EnsureSchemaVersion(SqlDb& db, int version);

}  // namespace escdr::inventory_internal

#endif  // ESCDR_INVENTORY_SCHEMA_H_
