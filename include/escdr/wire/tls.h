// TLS 1.3 for the connections to and between agents (docs/security.md,
// wire-protocol.md §1).
//
// A TlsContext holds one end's credentials, in one of two modes:
//   * certificates: a cluster CA (`escdr ca init`) and this end's certificate
//     and key (`escdr ca issue NAME`). Both ends present a certificate and
//     verify the peer's against the CA (mutual authentication);
//   * pre-shared key: 32 random bytes both ends hold (`escdr ca psk`), used as
//     a TLS 1.3 external PSK with (EC)DHE key exchange.
// Only TLS 1.3 is spoken; session tickets are off (every connection does a
// full handshake, so a stolen ticket cannot resume one).
//
// With certificates, a certificate revocation list (CRL, `escdr ca revoke`)
// is checked when one is given: a peer whose certificate is on it is refused
// during the handshake. A certificate states its holder's role (PeerRole) as a
// subjectAltName URI `urn:escdr:role:<name>` (`escdr ca issue --role`);
// TlsConnection::peer_role() reports it, and the agent decides with it what
// the peer may ask (docs/security.md §6).
//
// TlsContext::Connect / Accept run the handshake over an already connected
// Connection (normally TCP) and return a TlsConnection that encrypts what it
// writes and decrypts what it reads. The handshake has a deadline, so a peer
// that connects and says nothing cannot hold the caller.
//
// A TlsConnection keeps the Connection contract (escdr/wire/connection.h): one
// reader and one writer may run at once (the TLS state is guarded by a mutex
// that is never held while waiting on the network), and Shutdown() from any
// thread wakes both. ShutdownWrite() sends a TLS close_notify, which the
// peer's ReadSome reports as end of file. An end of file from the transport
// without a close_notify also reads as end of file: every escdr message is
// length-delimited and a migration ends with explicit frames, so a cut stream
// is a protocol error one level up. Each record is authenticated, so a
// changed byte on the network fails the read ("bad record mac"; IOError)
// instead of reaching the frame decoder.
//
// Errors of the handshake name the peer and OpenSSL's reason, e.g.
// "TLS handshake with tcp 127.0.0.1:5123 failed: certificate verify failed
// (certificate has expired)": ProtocolError for a refusal, Unavailable when
// the peer closed the connection, Timeout.
//
// Thread safety: a TlsContext is immutable after creation and may be shared
// by any number of threads and connections (hold it in a shared_ptr).
#ifndef ESCDR_WIRE_TLS_H_
#define ESCDR_WIRE_TLS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/connection.h"

namespace escdr::wire {

// The first byte of every TLS record that starts a handshake (a ClientHello).
// No escdr frame starts with it (frame types are 0x0001-0x7FFF, 0x8001 and
// 0xA001-0xA003, little-endian), so an agent can tell a TLS client from a
// plaintext one by the first byte.
inline constexpr std::uint8_t kTlsHandshakeByte = 0x16;

// The length of a pre-shared key in bytes.
inline constexpr std::size_t kPskBytes = 32;

// What the holder of a certificate may ask of an agent, least power first
// (the table is in agent/authorization.h and docs/security.md §6):
//   kObserver  reads status only;
//   kAgent     a host's agent: runs migrations with other agents;
//   kOperator  a person or tool that drives agents: everything.
enum class PeerRole { kObserver, kAgent, kOperator };

// "observer", "agent", "operator".
std::string_view RoleName(PeerRole role);
// The role of that name; nullopt for any other text.
std::optional<PeerRole> RoleFromName(std::string_view name);

// The subjectAltName URI that states a role: kRoleUriPrefix + RoleName().
inline constexpr std::string_view kRoleUriPrefix = "urn:escdr:role:";

// The name of the file `escdr ca` keeps its revocation list in, in the CA
// directory.
inline constexpr std::string_view kCrlFileName = "crl.pem";

class TlsConnection : public Connection {
 public:
  // Who the peer is: the common name of its certificate, or "pre-shared key".
  virtual const std::string& peer_identity() const = 0;
  // The role the peer's certificate states; nullopt for a certificate that
  // states none (or only roles this version does not know) and for a peer
  // that proved the pre-shared key. Of several known roles, the least
  // powerful counts.
  virtual std::optional<PeerRole> peer_role() const = 0;
  // True when the peer proved the pre-shared key (it has no certificate).
  virtual bool peer_used_psk() const = 0;
  // The TLS cipher suite in use, e.g. "TLS_AES_256_GCM_SHA384".
  virtual std::string cipher() const = 0;
};

class TlsContext {
 public:
  // Mutual certificates: trusts what the CA in `ca_file` signed and presents
  // `cert_file` with its private key `key_file` (all PEM). With a non-empty
  // `crl_file` (PEM CRL of that CA), peers whose certificate it lists are
  // refused; an empty `crl_file` checks no revocation. Errors:
  // InvalidArgument naming the file that is missing or unusable, a key that
  // does not match the certificate, or a CRL the CA did not sign.
  static Result<std::shared_ptr<const TlsContext>> FromCertificates(
      const std::string& ca_file, const std::string& cert_file, const std::string& key_file,
      const std::string& crl_file = "");

  // The files `escdr ca` lays out: DIR/ca.crt, DIR/NAME.crt, DIR/NAME.key,
  // and DIR/crl.pem when it exists (a CA directory made before revocation
  // existed has none; then nothing is checked for revocation).
  static Result<std::shared_ptr<const TlsContext>> FromDirectory(const std::string& dir,
                                                                 const std::string& name);

  // External pre-shared key of kPskBytes bytes.
  static Result<std::shared_ptr<const TlsContext>> FromPsk(std::span<const std::uint8_t> key);

  // The key in `path`: kPskBytes bytes as hex (64 digits; whitespace around
  // them is ignored). InvalidArgument if the file is unreadable or malformed,
  // or readable by others than its owner (mode must not have group/other bits).
  static Result<std::shared_ptr<const TlsContext>> FromPskFile(const std::string& path);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // For logs: "mutual certificates (this end h1, role agent, CA
  // /etc/escdr/tls/ca.crt, CRL /etc/escdr/tls/crl.pem: 2 revoked)" or
  // "pre-shared key (/etc/escdr/psk)".
  const std::string& description() const;

  // Runs the client side of the handshake over `conn` until `deadline`.
  // With certificates and a non-empty `expected_peer`, the peer's certificate
  // must also carry that name (its subjectAltName DNS entry, as `escdr ca
  // issue` writes it). On error `conn` is closed.
  Result<std::unique_ptr<TlsConnection>> Connect(std::unique_ptr<Connection> conn,
                                                 Deadline deadline,
                                                 const std::string& expected_peer = "") const;

  // Runs the server side of the handshake over `conn` until `deadline`.
  // With certificates the peer must present one the CA signed and the CRL
  // (if any) does not list; a refusal names the refused certificate, e.g.
  // "certificate verify failed (certificate revoked): certificate h2, serial
  // 5a1f..., is on the revocation list".
  Result<std::unique_ptr<TlsConnection>> Accept(std::unique_ptr<Connection> conn,
                                                Deadline deadline) const;

  class Impl;

 private:
  explicit TlsContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_TLS_H_
