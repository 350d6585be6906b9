// Names of libvirt's domain states, state reasons and lifecycle events: the
// enum name without its prefix, in lower case ("running", "booted",
// "started", "migrated"). An unknown value (a newer libvirt) gives "".
#ifndef ESCDR_LIBVIRT_LIBVIRT_NAMES_H_
#define ESCDR_LIBVIRT_LIBVIRT_NAMES_H_

#include <string>

namespace escdr::libvirt {

// virDomainState.
std::string DomainStateName(int state);
// The reason of `state` (virDomainRunningReason, virDomainPausedReason, ...).
std::string DomainStateReasonName(int state, int reason);
// virDomainEventType.
std::string LifecycleEventName(int event);
// The detail of `event` (virDomainEventStartedDetailType, ...).
std::string LifecycleDetailName(int event, int detail);

}  // namespace escdr::libvirt

#endif  // ESCDR_LIBVIRT_LIBVIRT_NAMES_H_
