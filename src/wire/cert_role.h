// The role a certificate states (escdr/wire/tls.h PeerRole), read from its
// subjectAltName URIs `urn:escdr:role:<name>`. Shared by tls.cc (the peer of
// a handshake) and tls_ca.cc (`escdr ca` output). Not a public interface.
#ifndef ESCDR_WIRE_CERT_ROLE_H_
#define ESCDR_WIRE_CERT_ROLE_H_

#include <openssl/x509.h>

#include <optional>
#include <string>

#include "escdr/wire/tls.h"

namespace escdr::wire {

// The least powerful known role among the certificate's role URIs; nullopt
// when it states none this version knows.
std::optional<PeerRole> RoleOfCertificate(const X509* cert);

// The certificate's serial number in hex, lower case ("" if unreadable).
std::string SerialHex(const X509* cert);

// Its subject's common name ("" if none).
std::string CommonNameOf(const X509* cert);

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_CERT_ROLE_H_
