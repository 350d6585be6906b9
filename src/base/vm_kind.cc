#include "escdr/base/vm_kind.h"

#include <utility>

namespace escdr {

std::string VmKind::ToString() const {
  return os + " " + os_version + " / " + hypervisor + " " + hypervisor_version;
}

Status VmKind::Validate() const {
  const std::pair<const char*, const std::string*> fields[] = {
      {"OS", &os},
      {"OS version", &os_version},
      {"hypervisor", &hypervisor},
      {"hypervisor version", &hypervisor_version}};
  for (const auto& [what, value] : fields) {
    if (value->empty()) return Status::InvalidArgument(std::string(what) + " is empty");
    if (value->size() > 64) {
      return Status::InvalidArgument(std::string(what) + " is longer than 64 bytes");
    }
    for (unsigned char c : *value) {
      if (c < 0x20 || c == 0x7f) {
        return Status::InvalidArgument(std::string(what) + " contains a control character");
      }
    }
  }
  return Status::OK();
}

}  // namespace escdr
