// The cluster CA behind `escdr ca` (docs/cli-ca.md): a CA key and
// self-signed certificate, certificates for agents and operators signed by it,
// and pre-shared key files. Keys are ECDSA P-256, certificates are X.509 v3
// signed with SHA-256. Private keys are written with mode 0600 and never
// overwritten (AlreadyExists), so a second `init` cannot orphan the issued
// certificates.
//
// Layout of a CA directory (TlsContext::FromDirectory reads the same):
//   DIR/ca.key   the CA's private key (keep it on the operator's machine only)
//   DIR/ca.crt   the CA certificate (every agent and CLI needs it)
//   DIR/crl.pem  the CA's certificate revocation list (X.509 v2 CRL, PEM),
//                written by CreateCa (empty) and RevokeCertificate; copy it
//                to every agent and CLI after a revocation
//   DIR/NAME.key, DIR/NAME.crt   one pair per host agent or operator
//
// Every certificate states its holder's role as the subjectAltName URI
// urn:escdr:role:agent|operator|observer (escdr/wire/tls.h PeerRole).
//
// Thread safety: free functions; two calls on one directory at once may race
// on the files.
#ifndef ESCDR_WIRE_TLS_CA_H_
#define ESCDR_WIRE_TLS_CA_H_

#include <cstddef>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/wire/tls.h"

namespace escdr::wire {

// What a certificate file says, for `escdr ca` output and tests.
struct CertificateInfo {
  std::string subject;     // the common name
  std::string issuer;      // the issuer's common name
  std::string not_before;  // "2026-11-25 18:40:00 UTC"
  std::string not_after;
  std::string sha256;      // fingerprint, hex
  std::string serial;      // serial number, hex
  std::string role;        // "agent", "operator", "observer"; "" if it states none
};

// What RevokeCertificate did.
struct Revocation {
  std::string name;       // the revoked certificate's common name
  std::string serial;     // its serial number, hex
  std::string crl_path;   // DIR/crl.pem
  std::size_t revoked = 0;  // certificates the CRL now lists
  bool already = false;   // it was listed before; the CRL is unchanged
};

// Creates DIR (if missing) with ca.key, ca.crt and an empty crl.pem: a CA
// named `name`, valid for `days` days. AlreadyExists if DIR/ca.key exists;
// InvalidArgument for days < 1; IOError when a file cannot be written.
Status CreateCa(const std::string& dir, const std::string& name, int days);

// Issues DIR/NAME.key and DIR/NAME.crt, signed by the CA in DIR, with common
// name and subjectAltName DNS NAME and URI urn:escdr:role:ROLE, for both TLS
// client and server use. Valid for `days` days from now; days < 0 issues a
// certificate that expired -days days ago (for testing refusals). NAME: 1-64
// characters of [A-Za-z0-9._-]. AlreadyExists if DIR/NAME.key exists, unless
// `replace`: then a new key and certificate take the old pair's place (each
// file renamed into place whole; the old certificate stays valid until it
// expires or is revoked). NotFound without a CA.
Status IssueCertificate(const std::string& dir, const std::string& name, int days, PeerRole role,
                        bool replace = false);

// Adds the certificate in `cert_path` (normally DIR/NAME.crt) to the CA's
// revocation list DIR/crl.pem, signed by the CA's key with SHA-256, and
// writes the list anew (renamed into place whole). Entries already listed
// are kept; a CA directory without crl.pem gets one. InvalidArgument if the
// certificate is not of this CA; NotFound without a CA or certificate.
Result<Revocation> RevokeCertificate(const std::string& dir, const std::string& cert_path);

// The serial numbers (hex) a PEM CRL lists. NotFound / Corruption.
Result<std::vector<std::string>> ReadRevokedSerials(const std::string& crl_path);

// Writes kPskBytes random bytes as hex and a newline to `path`, mode 0600.
// AlreadyExists if `path` exists.
Status WritePskFile(const std::string& path);

// Reads a PEM certificate.
Result<CertificateInfo> ReadCertificateInfo(const std::string& path);

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_TLS_CA_H_
