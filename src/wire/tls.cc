#include "escdr/wire/tls.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "wire/cert_role.h"

namespace escdr::wire {

std::string_view RoleName(PeerRole role) {
  switch (role) {
    case PeerRole::kObserver: return "observer";
    case PeerRole::kAgent: return "agent";
    case PeerRole::kOperator: return "operator";
  }
  return "observer";
}

std::optional<PeerRole> RoleFromName(std::string_view name) {
  for (PeerRole r : {PeerRole::kObserver, PeerRole::kAgent, PeerRole::kOperator}) {
    if (RoleName(r) == name) return r;
  }
  return std::nullopt;
}

std::optional<PeerRole> RoleOfCertificate(const X509* cert) {
  if (cert == nullptr) return std::nullopt;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return std::nullopt;
  std::optional<PeerRole> role;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
    std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                          static_cast<std::size_t>(ASN1_STRING_length(uri)));
    if (!text.starts_with(kRoleUriPrefix)) continue;
    auto r = RoleFromName(text.substr(kRoleUriPrefix.size()));
    // A role this version does not know grants nothing; of several, the least.
    if (r.has_value() && (!role.has_value() || *r < *role)) role = r;
  }
  GENERAL_NAMES_free(names);
  return role;
}

std::string SerialHex(const X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  BIGNUM* bn = serial != nullptr ? ASN1_INTEGER_to_BN(serial, nullptr) : nullptr;
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string CommonNameOf(const X509* cert) {
  char cn[256] = "";
  if (cert == nullptr ||
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) <= 0) {
    return "";
  }
  return cn;
}

namespace {

// The PSK identity both ends use. One key per cluster, so the identity only
// names the scheme; the binder proves the key.
constexpr char kPskIdentity[] = "escdr-psk-1";
// TLS_AES_128_GCM_SHA256: the PSK session's cipher fixes its hash (SHA-256).
constexpr unsigned char kPskCipherId[2] = {0x13, 0x01};
// Plaintext gathered into one TLS record before it is encrypted; larger parts
// are encrypted in slices of kWriteSlice so the ciphertext buffer stays small.
constexpr std::size_t kRecordPlain = 16384;
constexpr std::size_t kWriteSlice = 256 << 10;
constexpr std::size_t kReadChunk = 64 << 10;
constexpr std::chrono::seconds kCloseNotifyTimeout{5};

// OpenSSL's reasons for the calling thread's last failure, "; "-joined.
std::string DrainErrors() {
  std::string out;
  unsigned long e = 0;
  while ((e = ERR_get_error()) != 0) {
    const char* reason = ERR_reason_error_string(e);
    std::string r = reason != nullptr ? reason : fmt::format("OpenSSL error {:#x}", e);
    if (out.find(r) != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += r;
  }
  return out;
}

// The verification callback's note of the certificate it refused, kept in
// the SSL's app data while a handshake runs, for the error message.
struct RefusedCertificate {
  std::string name;
  std::string serial;
  int error = X509_V_OK;
};

int NoteRefusal(int ok, X509_STORE_CTX* store) {
  if (ok == 1) return ok;
  SSL* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* note = ssl != nullptr ? static_cast<RefusedCertificate*>(SSL_get_app_data(ssl)) : nullptr;
  const X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (note != nullptr && cert != nullptr && note->name.empty()) {
    note->name = CommonNameOf(cert);
    note->serial = SerialHex(cert);
    note->error = X509_STORE_CTX_get_error(store);
  }
  return ok;
}

}  // namespace

class TlsContext::Impl {
 public:
  ~Impl() {
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  }

  SSL_CTX* ctx_ = nullptr;
  bool psk_ = false;
  std::vector<std::uint8_t> key_;
  std::string description_;
};

namespace {

SSL_SESSION* MakePskSession(SSL* ssl, const std::vector<std::uint8_t>& key) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipherId);
  if (cipher == nullptr) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr) return nullptr;
  if (SSL_SESSION_set1_master_key(s, key.data(), key.size()) != 1 ||
      SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

const TlsContext::Impl* ContextOf(SSL* ssl) {
  return static_cast<const TlsContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

int PskUseSession(SSL* ssl, const EVP_MD* md, const unsigned char** id, std::size_t* idlen,
                  SSL_SESSION** sess) {
  *sess = nullptr;
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipherId);
  // A HelloRetryRequest fixes the hash; ours is SHA-256.
  if (cipher == nullptr || (md != nullptr && SSL_CIPHER_get_handshake_digest(cipher) != md)) {
    return 1;
  }
  *sess = MakePskSession(ssl, ContextOf(ssl)->key_);
  if (*sess == nullptr) return 0;
  *id = reinterpret_cast<const unsigned char*>(kPskIdentity);
  *idlen = sizeof(kPskIdentity) - 1;
  return 1;
}

int PskFindSession(SSL* ssl, const unsigned char* identity, std::size_t len, SSL_SESSION** sess) {
  *sess = nullptr;
  if (len != sizeof(kPskIdentity) - 1 || std::memcmp(identity, kPskIdentity, len) != 0) return 1;
  *sess = MakePskSession(ssl, ContextOf(ssl)->key_);
  return *sess != nullptr ? 1 : 0;
}

Result<std::unique_ptr<TlsContext::Impl>> NewImpl() {
  auto impl = std::make_unique<TlsContext::Impl>();
  impl->ctx_ = SSL_CTX_new(TLS_method());
  if (impl->ctx_ == nullptr) {
    return Err(Status::Internal("cannot create a TLS context: " + DrainErrors()));
  }
  SSL_CTX_set_min_proto_version(impl->ctx_, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(impl->ctx_, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(impl->ctx_, 0);
  SSL_CTX_set_options(impl->ctx_, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(impl->ctx_, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_app_data(impl->ctx_, impl.get());
  return impl;
}

Status CheckReadable(const std::string& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::InvalidArgument(fmt::format("{} {} does not exist", what, path));
  }
  return Status::OK();
}

}  // namespace

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;

const std::string& TlsContext::description() const { return impl_->description_; }

Result<std::shared_ptr<const TlsContext>> TlsContext::FromCertificates(
    const std::string& ca_file, const std::string& cert_file, const std::string& key_file,
    const std::string& crl_file) {
  ESCDR_RETURN_IF_ERROR(CheckReadable(ca_file, "the CA certificate"));
  ESCDR_RETURN_IF_ERROR(CheckReadable(cert_file, "the certificate"));
  ESCDR_RETURN_IF_ERROR(CheckReadable(key_file, "the private key"));
  ESCDR_ASSIGN_OR_RETURN(auto impl, NewImpl());
  SSL_CTX* ctx = impl->ctx_;
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
    return Err(Status::InvalidArgument(
        fmt::format("cannot load the CA certificate {}: {}", ca_file, DrainErrors())));
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return Err(Status::InvalidArgument(
        fmt::format("cannot load the certificate {}: {}", cert_file, DrainErrors())));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Err(Status::InvalidArgument(
        fmt::format("cannot load the private key {}: {}", key_file, DrainErrors())));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return Err(Status::InvalidArgument(fmt::format(
        "the private key {} does not belong to the certificate {}", key_file, cert_file)));
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NoteRefusal);
  std::string own = cert_file;
  std::string role = "no role";
  if (X509* cert = SSL_CTX_get0_certificate(ctx); cert != nullptr) {
    if (std::string cn = CommonNameOf(cert); !cn.empty()) own = cn;
    if (auto r = RoleOfCertificate(cert); r.has_value()) role = "role " + std::string(RoleName(*r));
  }
  std::string crl_text = "no CRL";
  if (!crl_file.empty()) {
    ESCDR_RETURN_IF_ERROR(CheckReadable(crl_file, "the revocation list"));
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(crl_file.c_str(), "r"), std::fclose);
    if (!f) {
      return Err(
          Status::FromErrno(fmt::format("cannot open the revocation list {}", crl_file), errno));
    }
    X509_CRL* crl = PEM_read_X509_CRL(f.get(), nullptr, nullptr, nullptr);
    if (crl == nullptr) {
      return Err(Status::InvalidArgument(
          fmt::format("the revocation list {} holds no PEM CRL: {}", crl_file, DrainErrors())));
    }
    // A CRL of another CA would be ignored by the check (and then every
    // certificate refused for want of one): refuse it here, with its reason.
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(store);
    bool signed_by_ca = false;
    for (int i = 0; i < sk_X509_OBJECT_num(objs) && !signed_by_ca; ++i) {
      X509* ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
      if (ca != nullptr && X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1) signed_by_ca = true;
    }
    ERR_clear_error();
    if (!signed_by_ca) {
      X509_CRL_free(crl);
      return Err(Status::InvalidArgument(fmt::format(
          "the revocation list {} is not signed by the CA {}", crl_file, ca_file)));
    }
    const STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
    const int count = revoked != nullptr ? sk_X509_REVOKED_num(revoked) : 0;
    const int added = X509_STORE_add_crl(store, crl);
    X509_CRL_free(crl);
    if (added != 1) {
      return Err(Status::InvalidArgument(
          fmt::format("cannot use the revocation list {}: {}", crl_file, DrainErrors())));
    }
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    crl_text = fmt::format("CRL {}: {} revoked", crl_file, count);
  }
  impl->description_ =
      fmt::format("mutual certificates (this end {}, {}, CA {}, {})", own, role, ca_file, crl_text);
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

Result<std::shared_ptr<const TlsContext>> TlsContext::FromDirectory(const std::string& dir,
                                                                   const std::string& name) {
  if (name.empty()) {
    return Err(Status::InvalidArgument(fmt::format(
        "TLS directory {} needs the name of this end's certificate (--tls-name)", dir)));
  }
  const std::string crl = dir + "/" + std::string(kCrlFileName);
  struct stat st {};
  return FromCertificates(dir + "/ca.crt", dir + "/" + name + ".crt", dir + "/" + name + ".key",
                          ::stat(crl.c_str(), &st) == 0 ? crl : "");
}

Result<std::shared_ptr<const TlsContext>> TlsContext::FromPsk(std::span<const std::uint8_t> key) {
  if (key.size() != kPskBytes) {
    return Err(Status::InvalidArgument(
        fmt::format("a pre-shared key has {} bytes, not {}", kPskBytes, key.size())));
  }
  ESCDR_ASSIGN_OR_RETURN(auto impl, NewImpl());
  impl->psk_ = true;
  impl->key_.assign(key.begin(), key.end());
  // The key is bound to SHA-256 (kPskCipherId), so only SHA-256 suites.
  SSL_CTX_set_ciphersuites(impl->ctx_, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_psk_use_session_callback(impl->ctx_, PskUseSession);
  SSL_CTX_set_psk_find_session_callback(impl->ctx_, PskFindSession);
  SSL_CTX_set_verify(impl->ctx_, SSL_VERIFY_NONE, nullptr);
  impl->description_ = "pre-shared key";
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

Result<std::shared_ptr<const TlsContext>> TlsContext::FromPskFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Err(Status::InvalidArgument(fmt::format("the pre-shared key file {} does not exist", path)));
  }
  if ((st.st_mode & 077) != 0) {
    return Err(Status::InvalidArgument(fmt::format(
        "the pre-shared key file {} is readable by others (mode {:o}); chmod 600 it", path,
        st.st_mode & 0777)));
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  std::string hex;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) hex += c;
  }
  std::vector<std::uint8_t> key;
  bool ok = hex.size() == 2 * kPskBytes;
  for (std::size_t i = 0; ok && i < hex.size(); i += 2) {
    auto digit = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = digit(hex[i]), lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) ok = false;
    else key.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
  }
  if (!ok) {
    return Err(Status::InvalidArgument(fmt::format(
        "the pre-shared key file {} does not hold {} hex digits (escdr ca psk writes one)", path,
        2 * kPskBytes)));
  }
  auto ctx = FromPsk(key);
  OPENSSL_cleanse(key.data(), key.size());
  if (!ctx.has_value()) return ctx;
  const_cast<Impl*>((*ctx)->impl_.get())->description_ = fmt::format("pre-shared key ({})", path);
  return ctx;
}

// ---- the connection ----

namespace {

class TlsConnectionImpl final : public TlsConnection {
 public:
  TlsConnectionImpl(std::unique_ptr<Connection> inner, SSL* ssl, bool psk)
      : inner_(std::move(inner)), ssl_(ssl), psk_(psk), rbuf_(kReadChunk) {
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio_, -1);  // empty: "retry", never end of file
    BIO_set_mem_eof_return(wbio_, -1);
    SSL_set_bio(ssl_, rbio_, wbio_);  // ssl_ owns both now
    SSL_set_app_data(ssl_, &refused_);
  }
  ~TlsConnectionImpl() override { SSL_free(ssl_); }

  // The handshake; called once, before the connection is shared.
  Status Handshake(Deadline deadline, bool client) {
    for (;;) {
      ERR_clear_error();
      int r = SSL_do_handshake(ssl_);
      int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      std::string reason = e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ ? "" : DrainErrors();
      // Whatever OpenSSL produced goes out, also the alert of a refusal, so
      // the peer learns why.
      Status flushed = FlushPending(deadline);
      if (e == SSL_ERROR_NONE) {
        ESCDR_RETURN_IF_ERROR(flushed);
        break;
      }
      if (e == SSL_ERROR_WANT_READ && flushed.ok()) {
        auto n = inner_->ReadSome(rbuf_, deadline);
        if (!n.has_value()) {
          if (n.error().code() == StatusCode::kTimeout) {
            return Status::Timeout(
                fmt::format("TLS handshake with {} timed out (the peer sent no complete handshake)",
                            name()));
          }
          if (client && n.error().code() == StatusCode::kUnavailable) {
            return Status::Unavailable(fmt::format(
                "TLS handshake with {} failed: the peer reset the connection (is it a plaintext "
                "agent started with --insecure?): {}",
                name(), n.error().message()));
          }
          return n.error().WithContext(fmt::format("TLS handshake with {}", name()));
        }
        if (*n == 0) {
          return Status::Unavailable(fmt::format(
              "TLS handshake with {} failed: the peer closed the connection{}", name(),
              client ? " (is it a plaintext agent started with --insecure, or did it refuse "
                       "this end's credentials?)"
                     : ""));
        }
        BIO_write(rbio_, rbuf_.data(), static_cast<int>(*n));
        continue;
      }
      if (!flushed.ok() && e == SSL_ERROR_WANT_READ) return flushed;
      return Status::ProtocolError(
          fmt::format("TLS handshake with {} failed: {}", name(), Reason(reason)));
    }
    SSL_set_app_data(ssl_, nullptr);
    if (const X509* cert = SSL_get0_peer_certificate(ssl_); cert != nullptr) {
      peer_ = CommonNameOf(cert);
      role_ = RoleOfCertificate(cert);
    } else {
      peer_ = "pre-shared key";
    }
    return Status::OK();
  }

  Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline deadline) override {
    for (;;) {
      int e = SSL_ERROR_NONE;
      std::size_t n = 0;
      std::string reason;
      bool pending_out = false;
      {
        std::lock_guard<std::mutex> lock(ssl_mu_);
        ERR_clear_error();
        int r = SSL_read_ex(ssl_, buf.data(), buf.size(), &n);
        if (r != 1) {
          e = SSL_get_error(ssl_, r);
          if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN) reason = DrainErrors();
        }
        pending_out = BIO_ctrl_pending(wbio_) > 0;
      }
      // Output a read produced (an alert, a key update) goes out now unless a
      // writer is busy; that writer then sends it before its own records.
      if (pending_out && write_mu_.try_lock()) {
        (void)FlushPending(deadline);
        write_mu_.unlock();
      }
      if (e == SSL_ERROR_NONE) return n;
      if (e == SSL_ERROR_ZERO_RETURN) return std::size_t{0};
      if (e != SSL_ERROR_WANT_READ) {
        return Err(Status::IOError(fmt::format("TLS read from {} failed: {}", name(), Reason(reason))));
      }
      ESCDR_ASSIGN_OR_RETURN(std::size_t got, inner_->ReadSome(rbuf_, deadline));
      if (got == 0) return std::size_t{0};
      std::lock_guard<std::mutex> lock(ssl_mu_);
      BIO_write(rbio_, rbuf_.data(), static_cast<int>(got));
    }
  }

  Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                   Deadline deadline) override {
    std::lock_guard<std::mutex> wlock(write_mu_);
    std::vector<std::uint8_t> staged;
    staged.reserve(kRecordPlain);
    for (const auto& part : parts) {
      std::size_t off = 0;
      while (off < part.size()) {
        const std::size_t len = std::min(part.size() - off, kWriteSlice);
        const std::uint8_t* p = part.data() + off;
        off += len;
        if (staged.size() + len <= kRecordPlain) {
          staged.insert(staged.end(), p, p + len);
          continue;
        }
        ESCDR_RETURN_IF_ERROR(Encrypt(staged, deadline));
        staged.clear();
        if (len <= kRecordPlain) {
          staged.insert(staged.end(), p, p + len);
        } else {
          ESCDR_RETURN_IF_ERROR(Encrypt({p, len}, deadline));
        }
      }
    }
    return Encrypt(staged, deadline);
  }

  Status ShutdownWrite() override {
    std::lock_guard<std::mutex> wlock(write_mu_);
    {
      std::lock_guard<std::mutex> lock(ssl_mu_);
      ERR_clear_error();
      (void)SSL_shutdown(ssl_);  // queues close_notify; the read side stays open
      ERR_clear_error();
    }
    ESCDR_RETURN_IF_ERROR(FlushPending(Deadline::After(kCloseNotifyTimeout)));
    return inner_->ShutdownWrite();
  }

  void Shutdown() override { inner_->Shutdown(); }

  const std::string& name() const override { return inner_->name(); }
  const std::string& peer_identity() const override { return peer_; }
  std::optional<PeerRole> peer_role() const override { return role_; }
  bool peer_used_psk() const override { return psk_; }
  std::string cipher() const override {
    const char* c = SSL_get_cipher_name(ssl_);
    return c != nullptr ? c : "";
  }

 private:
  // Encrypts `plain` as records and sends them. REQUIRES: write_mu_ held.
  Status Encrypt(std::span<const std::uint8_t> plain, Deadline deadline) {
    if (plain.empty()) return Status::OK();
    {
      std::lock_guard<std::mutex> lock(ssl_mu_);
      ERR_clear_error();
      std::size_t written = 0;
      if (SSL_write_ex(ssl_, plain.data(), plain.size(), &written) != 1) {
        return Status::IOError(
            fmt::format("TLS write to {} failed: {}", name(), Reason(DrainErrors())));
      }
    }
    return FlushPending(deadline);
  }

  // Sends the ciphertext OpenSSL queued. REQUIRES: write_mu_ held (or the
  // handshake, before the connection is shared).
  Status FlushPending(Deadline deadline) {
    std::vector<std::uint8_t> out;
    {
      std::lock_guard<std::mutex> lock(ssl_mu_);
      const std::size_t pending = BIO_ctrl_pending(wbio_);
      if (pending == 0) return Status::OK();
      out.resize(pending);
      const int got = BIO_read(wbio_, out.data(), static_cast<int>(pending));
      out.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
    }
    return inner_->WriteAll(out, deadline);
  }

  std::string Reason(const std::string& openssl) const {
    std::string r = openssl.empty() ? "unknown TLS error" : openssl;
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      r += fmt::format(" ({})", X509_verify_cert_error_string(verify));
      if (!refused_.name.empty()) {
        r += verify == X509_V_ERR_CERT_REVOKED
                 ? fmt::format(": certificate {}, serial {}, is on the revocation list",
                               refused_.name, refused_.serial)
                 : fmt::format(": certificate {}, serial {}", refused_.name, refused_.serial);
      }
    }
    const bool alert = r.find("alert") != std::string::npos;
    if (alert) r += ", sent by the peer";
    if (psk_ && (alert || r.find("binder") != std::string::npos)) {
      r += " (the two ends do not hold the same pre-shared key)";
    }
    return r;
  }

  std::unique_ptr<Connection> inner_;
  SSL* ssl_;
  const bool psk_;
  BIO* rbio_ = nullptr;
  BIO* wbio_ = nullptr;
  std::mutex ssl_mu_;    // guards ssl_ and both BIOs
  std::mutex write_mu_;  // one writer at a time, so records leave in order
  std::vector<std::uint8_t> rbuf_;  // the reader's
  std::string peer_;
  std::optional<PeerRole> role_;
  RefusedCertificate refused_;  // filled by NoteRefusal during the handshake
};

Result<std::unique_ptr<TlsConnection>> Handshake(const TlsContext::Impl& ctx,
                                                 std::unique_ptr<Connection> conn,
                                                 Deadline deadline, bool client,
                                                 const std::string& expected_peer) {
  SSL* ssl = SSL_new(ctx.ctx_);
  if (ssl == nullptr) {
    return Err(Status::Internal("cannot create a TLS session: " + DrainErrors()));
  }
  auto tls = std::make_unique<TlsConnectionImpl>(std::move(conn), ssl, ctx.psk_);
  if (client) {
    SSL_set_connect_state(ssl);
    if (!ctx.psk_ && !expected_peer.empty()) {
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (SSL_set1_host(ssl, expected_peer.c_str()) != 1) {
        return Err(Status::InvalidArgument(
            fmt::format("'{}' cannot be checked against a certificate", expected_peer)));
      }
    }
  } else {
    SSL_set_accept_state(ssl);
  }
  Status s = tls->Handshake(deadline, client);
  if (!s.ok()) {
    tls->Shutdown();
    return Err(s);
  }
  return std::unique_ptr<TlsConnection>(std::move(tls));
}

}  // namespace

Result<std::unique_ptr<TlsConnection>> TlsContext::Connect(std::unique_ptr<Connection> conn,
                                                           Deadline deadline,
                                                           const std::string& expected_peer) const {
  return Handshake(*impl_, std::move(conn), deadline, true, expected_peer);
}

Result<std::unique_ptr<TlsConnection>> TlsContext::Accept(std::unique_ptr<Connection> conn,
                                                          Deadline deadline) const {
  return Handshake(*impl_, std::move(conn), deadline, false, "");
}

}  // namespace escdr::wire
