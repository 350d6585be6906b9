// Who may send which control request to an agent (docs/security.md §6).
//
// After the TLS handshake the agent knows its peer as a Principal: a name
// and a wire::PeerRole (escdr/wire/tls.h). The role comes from the peer's
// certificate (subjectAltName URI urn:escdr:role:NAME, `escdr ca issue
// --role`); a certificate that states no role counts as an observer; a peer
// that proved
// the pre-shared key, and every peer of an agent started with --insecure,
// counts as an operator (one shared secret, or none, has no roles to tell
// apart).
//
// The table, one row per control request: observers read status; agents
// also run migrations with each other (the destination side of one, which
// the source agent drives); operators may send everything. A request this
// table does not list may be sent by operators only, so a request added to
// the agent later is closed to the other roles until the table says
// otherwise.
//
// Thread safety: pure functions over constant data.
#ifndef ESCDR_AGENT_AUTHORIZATION_H_
#define ESCDR_AGENT_AUTHORIZATION_H_

#include <span>
#include <string>
#include <string_view>

#include "escdr/base/status.h"
#include "escdr/wire/tls.h"

namespace escdr::agent {

using wire::PeerRole;

// Who is asking, as the agent learnt it at the handshake.
struct Principal {
  // How the role was decided.
  enum class Source {
    kCertificate,        // the certificate states `role`
    kCertificateNoRole,  // the certificate states none: observer
    kPsk,                // the pre-shared key: operator
    kInsecure,           // --insecure, no authentication: operator
  };
  std::string name;  // the certificate's name, "pre-shared key" or "plaintext"
  PeerRole role = PeerRole::kObserver;
  Source source = Source::kCertificateNoRole;
};

// The principal of a peer that presented a certificate named `name` stating
// `role` (nullopt: none), that proved the pre-shared key (`psk`), or of an
// agent without authentication (`insecure`).
Principal CertificatePrincipal(std::string name, std::optional<PeerRole> role);
Principal PskPrincipal();
Principal InsecurePrincipal();

// One row of the table.
struct RequestRule {
  std::string_view op;
  bool observer;
  bool agent;
  bool operator_;
};

// The table, in the order docs/security.md lists it.
std::span<const RequestRule> RequestRules();

// Whether `role` may send `op` (unknown requests: operators only).
bool MaySend(PeerRole role, std::string_view op);

// The roles that may send `op`, for messages: "operators", "agents and
// operators", "every role".
std::string RolesThatMay(std::string_view op);

// OK if `who` may send `op`; otherwise NotSupported with one sentence that
// names the peer, its role and the request, and what to do, e.g.
// "certificate h2 has role agent, which may not send stop_vm; operators may".
Status Authorize(const Principal& who, std::string_view op);

// For logs: "h2 (role agent)", "old-cli (no role: observer)",
// "pre-shared key (operator)", "plaintext (operator, --insecure)".
std::string DescribePrincipal(const Principal& who);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_AUTHORIZATION_H_
