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
//   DIR/NAME.key, DIR/NAME.crt   one pair per host agent or operator
//
// Thread safety: free functions; two calls on one directory at once may race
// on the files.
#ifndef ESCDR_WIRE_TLS_CA_H_
#define ESCDR_WIRE_TLS_CA_H_

#include <string>

#include "escdr/base/status.h"

namespace escdr::wire {

// What a certificate file says, for `escdr ca` output and tests.
struct CertificateInfo {
  std::string subject;     // the common name
  std::string issuer;      // the issuer's common name
  std::string not_before;  // "2026-11-25 18:40:00 UTC"
  std::string not_after;
  std::string sha256;      // fingerprint, hex
};

// Creates DIR (if missing) with ca.key and ca.crt: a CA named `name`, valid
// for `days` days. AlreadyExists if DIR/ca.key exists; InvalidArgument for
// days < 1; IOError when a file cannot be written.
Status CreateCa(const std::string& dir, const std::string& name, int days);

// Issues DIR/NAME.key and DIR/NAME.crt, signed by the CA in DIR, with common
// name and subjectAltName DNS NAME, for both TLS client and server use.
// Valid for `days` days from now; days < 0 issues a certificate that expired
// -days days ago (for testing refusals). NAME: 1-64 characters of
// [A-Za-z0-9._-]. AlreadyExists if DIR/NAME.key exists; NotFound without a CA.
Status IssueCertificate(const std::string& dir, const std::string& name, int days);

// Writes kPskBytes random bytes as hex and a newline to `path`, mode 0600.
// AlreadyExists if `path` exists.
Status WritePskFile(const std::string& path);

// Reads a PEM certificate.
Result<CertificateInfo> ReadCertificateInfo(const std::string& path);

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_TLS_CA_H_
