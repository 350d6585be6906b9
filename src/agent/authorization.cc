#include "agent/authorization.h"

#include <array>

#include <fmt/format.h>

namespace escdr::agent {
namespace {

// docs/security.md §6 prints this table; keep the two in step.
constexpr std::array<RequestRule, 12> kRules = {{
    // op            observer agent  operator
    {"ping",          true,   true,  true},
    {"status",        true,   true,  true},
    {"list_vms",      true,   true,  true},
    {"migrate_in",    false,  true,  true},
    {"commit_in",     false,  true,  true},
    {"abort_in",      false,  true,  true},
    {"libvirt_probe", false,  true,  true},
    {"start_vm",      false,  false, true},
    {"stop_vm",       false,  false, true},
    {"migrate_out",   false,  false, true},
    {"cancel",        false,  false, true},
    {"reload",        false,  false, true},
}};

const RequestRule* Find(std::string_view op) {
  for (const RequestRule& r : kRules) {
    if (r.op == op) return &r;
  }
  return nullptr;
}

}  // namespace

Principal CertificatePrincipal(std::string name, std::optional<PeerRole> role) {
  Principal p;
  p.name = std::move(name);
  p.role = role.value_or(PeerRole::kObserver);
  p.source = role.has_value() ? Principal::Source::kCertificate
                              : Principal::Source::kCertificateNoRole;
  return p;
}

Principal PskPrincipal() {
  return Principal{"pre-shared key", PeerRole::kOperator, Principal::Source::kPsk};
}

Principal InsecurePrincipal() {
  return Principal{"plaintext", PeerRole::kOperator, Principal::Source::kInsecure};
}

std::span<const RequestRule> RequestRules() { return kRules; }

bool MaySend(PeerRole role, std::string_view op) {
  const RequestRule* r = Find(op);
  if (r == nullptr) return role == PeerRole::kOperator;
  switch (role) {
    case PeerRole::kObserver: return r->observer;
    case PeerRole::kAgent: return r->agent;
    case PeerRole::kOperator: return r->operator_;
  }
  return false;
}

std::string RolesThatMay(std::string_view op) {
  const bool o = MaySend(PeerRole::kObserver, op);
  const bool a = MaySend(PeerRole::kAgent, op);
  const bool p = MaySend(PeerRole::kOperator, op);
  if (o && a && p) return "every role";
  std::string out;
  auto add = [&out](const char* what) {
    if (!out.empty()) out += " and ";
    out += what;
  };
  if (o) add("observers");
  if (a) add("agents");
  if (p) add("operators");
  return out.empty() ? "no role" : out;
}

Status Authorize(const Principal& who, std::string_view op) {
  if (MaySend(who.role, op)) return Status::OK();
  const std::string role(wire::RoleName(who.role));
  switch (who.source) {
    case Principal::Source::kCertificate:
      return Status::NotSupported(fmt::format(
          "certificate {} has role {}, which may not send {}; {} may", who.name, role, op,
          RolesThatMay(op)));
    case Principal::Source::kCertificateNoRole:
      return Status::NotSupported(fmt::format(
          "certificate {} states no role, so it counts as an observer, which may not send {}; {} "
          "may (reissue it with a role: escdr ca issue {} --renew --role operator|agent|observer)",
          who.name, op, RolesThatMay(op), who.name));
    case Principal::Source::kPsk:
    case Principal::Source::kInsecure:
      break;
  }
  return Status::NotSupported(
      fmt::format("{} has role {}, which may not send {}; {} may", who.name, role, op,
                  RolesThatMay(op)));
}

std::string DescribePrincipal(const Principal& who) {
  const std::string_view role = wire::RoleName(who.role);
  switch (who.source) {
    case Principal::Source::kCertificate: return fmt::format("{} (role {})", who.name, role);
    case Principal::Source::kCertificateNoRole:
      return fmt::format("{} (no role: observer)", who.name);
    case Principal::Source::kPsk: return fmt::format("{} (operator)", who.name);
    case Principal::Source::kInsecure: return fmt::format("{} (operator, --insecure)", who.name);
  }
  return who.name;
}

}  // namespace escdr::agent
