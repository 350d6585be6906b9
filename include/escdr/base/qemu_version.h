// QEMU versions and series.
//
// A QEMU version is what `qemu-system-x86_64 --version` reports, reduced to
// its numbers: "7.2.19", "10.0.13". Its *series* is the first two components
// ("7.2", "10.0"). A VM's kind names a series (VmKind::hypervisor_version),
// hosts report the full versions they can run, and a VM may migrate to a host
// that runs its series or a newer one, never to an older one (QEMU reads the
// migration stream of older machine types, not of newer ones).
//
// Thread safety: pure functions.
#ifndef ESCDR_BASE_QEMU_VERSION_H_
#define ESCDR_BASE_QEMU_VERSION_H_

#include <string>
#include <string_view>

namespace escdr {

// The "major.minor" of a version or series: "10.0.13" -> "10.0", "7.2" ->
// "7.2". The input itself if it has no second component ("7" -> "7").
std::string QemuSeriesOf(std::string_view version);

// Compares two versions or series numerically, component by component, a
// missing component counting as 0: <0 if a is older, 0 if equal, >0 if newer.
// "10.0" > "7.2"; "7.2" == "7.2.0"; "7.2.19" > "7.2.5".
// A component that is not a number counts as 0.
int CompareQemuVersions(std::string_view a, std::string_view b);

// True for two or more dot-separated components, each 1 to 9 decimal digits:
// "7.2", "7.2.19", "10.0.13". False for "", "7", "7.", "7..2", "v7.2",
// "7.2-rc1", "7.2 ".
bool IsQemuVersion(std::string_view version);

// True for exactly two such components: "7.2", "10.0".
bool IsQemuSeries(std::string_view series);

}  // namespace escdr

#endif  // ESCDR_BASE_QEMU_VERSION_H_
