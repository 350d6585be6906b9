// Interrupted migrations: what a source agent finds when it restarts.
//
// The source agent commits a migration in three steps: the source QEMU
// completes (run state postmigrate, the guest stopped), commit_in makes the
// destination agent take the VM over, then the source QEMU is quit (or kept
// as role "migrated"). An agent killed between the first and the last step
// leaves, after its restart, a VM of role "running" whose QEMU is in
// postmigrate: nobody runs the guest here, and whether the destination does
// depends on whether commit_in got through. ResolveInterruptedMigrations()
// asks the destination of the VM's last migration (from the inventory):
//
// * the destination runs it (role "running"): it took the VM over; this
//   QEMU is kept stopped as role "migrated" (escdr vm stop removes it);
// * the destination holds it as "incoming" or not at all: no commit got
//   through; an incoming copy is aborted (abort_in) and this QEMU resumed;
// * the destination cannot be asked within 90 s (it drops an uncommitted
//   copy after 60 s): the QEMU is left stopped and the agent logs an error,
//   rather than risk a second running copy.
//
// Thread safety: runs on a thread of its own, after Recover(); it takes each
// VM it resolves busy (AcquireVm) while it does.
#ifndef ESCDR_AGENT_INTERRUPTED_MIGRATION_H_
#define ESCDR_AGENT_INTERRUPTED_MIGRATION_H_

#include "agent/agent_impl.h"

namespace escdr::agent {

void ResolveInterruptedMigrations(Agent::Impl& agent);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_INTERRUPTED_MIGRATION_H_
