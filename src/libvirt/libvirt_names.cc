#include "libvirt/libvirt_names.h"

#include <libvirt/libvirt.h>

#include <cstddef>
#include <initializer_list>

namespace escdr::libvirt {
namespace {

// names[value], or "" when `value` is outside the list.
std::string Pick(int value, std::initializer_list<const char*> names) {
  if (value < 0 || static_cast<std::size_t>(value) >= names.size()) return "";
  return names.begin()[value];
}

}  // namespace

std::string DomainStateName(int state) {
  static_assert(VIR_DOMAIN_NOSTATE == 0 && VIR_DOMAIN_PMSUSPENDED == 7);
  return Pick(state, {"nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
                      "pmsuspended"});
}

std::string DomainStateReasonName(int state, int reason) {
  switch (state) {
    case VIR_DOMAIN_NOSTATE:
    case VIR_DOMAIN_BLOCKED:
      return Pick(reason, {"unknown"});
    case VIR_DOMAIN_RUNNING:
      static_assert(VIR_DOMAIN_RUNNING_POSTCOPY_FAILED == 11);
      return Pick(reason, {"unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
                           "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy",
                           "postcopy_failed"});
    case VIR_DOMAIN_PAUSED:
      static_assert(VIR_DOMAIN_PAUSED_POSTCOPY_FAILED == 13);
      return Pick(reason, {"unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
                           "from_snapshot", "shutting_down", "snapshot", "crashed", "starting_up",
                           "postcopy", "postcopy_failed", "api_error"});
    case VIR_DOMAIN_SHUTDOWN:
      return Pick(reason, {"unknown", "user"});
    case VIR_DOMAIN_SHUTOFF:
      static_assert(VIR_DOMAIN_SHUTOFF_DAEMON == 8);
      return Pick(reason, {"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved",
                           "failed", "from_snapshot", "daemon"});
    case VIR_DOMAIN_CRASHED:
      return Pick(reason, {"unknown", "panicked"});
    case VIR_DOMAIN_PMSUSPENDED:
      return Pick(reason, {"unknown"});
    default:
      return "";
  }
}

std::string LifecycleEventName(int event) {
  static_assert(VIR_DOMAIN_EVENT_DEFINED == 0 && VIR_DOMAIN_EVENT_CRASHED == 8);
  return Pick(event, {"defined", "undefined", "started", "suspended", "resumed", "stopped",
                      "shutdown", "pmsuspended", "crashed"});
}

std::string LifecycleDetailName(int event, int detail) {
  switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED:
      return Pick(detail, {"added", "updated", "renamed", "from_snapshot"});
    case VIR_DOMAIN_EVENT_UNDEFINED:
      return Pick(detail, {"removed", "renamed"});
    case VIR_DOMAIN_EVENT_STARTED:
      static_assert(VIR_DOMAIN_EVENT_STARTED_WAKEUP == 4);
      return Pick(detail, {"booted", "migrated", "restored", "from_snapshot", "wakeup"});
    case VIR_DOMAIN_EVENT_SUSPENDED:
      static_assert(VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED == 8);
      return Pick(detail, {"paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot",
                           "api_error", "postcopy", "postcopy_failed"});
    case VIR_DOMAIN_EVENT_RESUMED:
      static_assert(VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED == 4);
      return Pick(detail, {"unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"});
    case VIR_DOMAIN_EVENT_STOPPED:
      static_assert(VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT == 6);
      return Pick(detail, {"shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
                           "from_snapshot"});
    case VIR_DOMAIN_EVENT_SHUTDOWN:
      return Pick(detail, {"finished", "guest", "host"});
    case VIR_DOMAIN_EVENT_PMSUSPENDED:
      return Pick(detail, {"memory", "disk"});
    case VIR_DOMAIN_EVENT_CRASHED:
      return Pick(detail, {"panicked", "crashloaded"});
    default:
      return "";
  }
}

}  // namespace escdr::libvirt
