#include "escdr/wire/tls_ca.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "escdr/wire/tls.h"
#include "wire/cert_role.h"

namespace escdr::wire {
namespace {

constexpr long kDay = 24 * 60 * 60;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct FileClose {
  void operator()(FILE* f) const { std::fclose(f); }
};
struct CrlFree {
  void operator()(X509_CRL* p) const { X509_CRL_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Crl = std::unique_ptr<X509_CRL, CrlFree>;

std::string OpenSslReason() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  const char* r = e != 0 ? ERR_reason_error_string(e) : nullptr;
  return r != nullptr ? r : "unknown OpenSSL error";
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name == "ca" || name[0] == '.' || name[0] == '-') {
    return false;
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

// Opens `path` for writing, creating it with `mode`; AlreadyExists if it is there.
Result<std::unique_ptr<FILE, FileClose>> CreateFile(const std::string& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) {
      return Err(Status::AlreadyExists(fmt::format("{} exists already; not overwriting it", path)));
    }
    return Err(Status::FromErrno(fmt::format("cannot create {}", path), errno));
  }
  (void)::fchmod(fd, mode);  // whatever the umask said
  FILE* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    return Err(Status::FromErrno(fmt::format("cannot open {}", path), errno));
  }
  return std::unique_ptr<FILE, FileClose>(f);
}

Status WriteKey(const std::string& path, EVP_PKEY* key) {
  ESCDR_ASSIGN_OR_RETURN(auto f, CreateFile(path, 0600));
  if (PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      std::fflush(f.get()) != 0) {
    return Status::IOError(fmt::format("cannot write the key {}", path));
  }
  return Status::OK();
}

Status WriteCert(const std::string& path, X509* cert) {
  std::error_code ec;
  std::filesystem::remove(path, ec);  // a certificate is public; the key guards the pair
  ESCDR_ASSIGN_OR_RETURN(auto f, CreateFile(path, 0644));
  if (PEM_write_X509(f.get(), cert) != 1 || std::fflush(f.get()) != 0) {
    return Status::IOError(fmt::format("cannot write the certificate {}", path));
  }
  return Status::OK();
}

// Writes with `write` into PATH.tmp and renames it to PATH, so a reader (an
// agent reloading its credentials) sees the old file or the new one, whole.
template <typename Write>
Status WriteReplacing(const std::string& path, mode_t mode, Write write) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  {
    ESCDR_ASSIGN_OR_RETURN(auto f, CreateFile(tmp, mode));
    if (!write(f.get()) || std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0) {
      ::unlink(tmp.c_str());
      return Status::IOError(fmt::format("cannot write {}", tmp));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(fmt::format("cannot rename {} to {}", tmp, path), err);
  }
  return Status::OK();
}

Result<Pkey> NewKey() {
  Pkey key(EVP_EC_gen("P-256"));
  if (!key) return Err(Status::Internal("cannot generate an ECDSA P-256 key: " + OpenSslReason()));
  return key;
}

Status AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX v3{};
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str());
  if (ext == nullptr) {
    return Status::Internal(fmt::format("cannot build the certificate extension {}: {}", value,
                                        OpenSslReason()));
  }
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? Status::OK() : Status::Internal("cannot add a certificate extension");
}

// A certificate for `name` with `key`'s public key; issuer fields and the
// signature are filled by the caller. Valid from `not_before` to `not_after`
// (seconds relative to now).
Result<Cert> NewCert(const std::string& name, EVP_PKEY* key, long not_before, long not_after) {
  Cert cert(X509_new());
  if (!cert) return Err(Status::Internal("cannot allocate a certificate"));
  X509_set_version(cert.get(), 2);  // v3
  BIGNUM* serial = BN_new();
  BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get()));
  BN_free(serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), not_after);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("escdr"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  return cert;
}

Result<Pkey> ReadKey(const std::string& path) {
  std::unique_ptr<FILE, FileClose> f(std::fopen(path.c_str(), "r"));
  if (!f) return Err(Status::FromErrno(fmt::format("cannot open {}", path), errno));
  Pkey key(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
  if (!key) return Err(Status::Corruption(fmt::format("{} holds no PEM private key", path)));
  return key;
}

Result<Cert> ReadCert(const std::string& path) {
  std::unique_ptr<FILE, FileClose> f(std::fopen(path.c_str(), "r"));
  if (!f) return Err(Status::FromErrno(fmt::format("cannot open {}", path), errno));
  Cert cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
  if (!cert) return Err(Status::Corruption(fmt::format("{} holds no PEM certificate", path)));
  return cert;
}

std::string TimeText(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string CommonName(X509_NAME* n) {
  char cn[256] = "";
  X509_NAME_get_text_by_NID(n, NID_commonName, cn, sizeof(cn));
  return cn;
}

std::string CrlPath(const std::string& dir) { return dir + "/" + std::string(kCrlFileName); }

Result<Crl> ReadCrl(const std::string& path) {
  std::unique_ptr<FILE, FileClose> f(std::fopen(path.c_str(), "r"));
  if (!f) return Err(Status::FromErrno(fmt::format("cannot open {}", path), errno));
  Crl crl(PEM_read_X509_CRL(f.get(), nullptr, nullptr, nullptr));
  if (!crl) return Err(Status::Corruption(fmt::format("{} holds no PEM revocation list", path)));
  return crl;
}

std::string SerialText(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Signs and writes a CRL of `ca` that lists `previous`'s entries (if any)
// and, if not null, `serial`, with CRL number previous + 1.
Status WriteCrl(const std::string& path, X509* ca, EVP_PKEY* ca_key, X509_CRL* previous,
                const ASN1_INTEGER* serial) {
  Crl crl(X509_CRL_new());
  if (!crl) return Status::Internal("cannot allocate a revocation list");
  X509_CRL_set_version(crl.get(), 1);  // v2
  X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca));
  ASN1_TIME* now = X509_gmtime_adj(nullptr, 0);
  X509_CRL_set1_lastUpdate(crl.get(), now);
  // No nextUpdate: a CRL past its nextUpdate would make every handshake
  // fail; this one stays valid until the CA writes the next.
  long number = 1;
  if (previous != nullptr) {
    const STACK_OF(X509_REVOKED)* old = X509_CRL_get_REVOKED(previous);
    for (int i = 0; i < sk_X509_REVOKED_num(old); ++i) {
      X509_REVOKED* dup = X509_REVOKED_dup(sk_X509_REVOKED_value(old, i));
      if (dup == nullptr || X509_CRL_add0_revoked(crl.get(), dup) != 1) {
        X509_REVOKED_free(dup);
        ASN1_TIME_free(now);
        return Status::Internal("cannot copy a revocation list entry");
      }
    }
    auto* n = static_cast<ASN1_INTEGER*>(
        X509_CRL_get_ext_d2i(previous, NID_crl_number, nullptr, nullptr));
    if (n != nullptr) {
      number = ASN1_INTEGER_get(n) + 1;
      ASN1_INTEGER_free(n);
    }
  }
  if (serial != nullptr) {
    X509_REVOKED* r = X509_REVOKED_new();
    if (r == nullptr || X509_REVOKED_set_serialNumber(r, const_cast<ASN1_INTEGER*>(serial)) != 1 ||
        X509_REVOKED_set_revocationDate(r, now) != 1 || X509_CRL_add0_revoked(crl.get(), r) != 1) {
      X509_REVOKED_free(r);
      ASN1_TIME_free(now);
      return Status::Internal("cannot add a revocation list entry");
    }
  }
  ASN1_TIME_free(now);
  ASN1_INTEGER* num = ASN1_INTEGER_new();
  ASN1_INTEGER_set(num, number);
  const int added = X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, num, 0, 0);
  ASN1_INTEGER_free(num);
  if (added != 1) return Status::Internal("cannot number the revocation list");
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca_key, EVP_sha256()) == 0) {
    return Status::Internal("cannot sign the revocation list: " + OpenSslReason());
  }
  X509_CRL* c = crl.get();
  return WriteReplacing(path, 0644, [c](FILE* f) { return PEM_write_X509_CRL(f, c) == 1; });
}

}  // namespace

Status CreateCa(const std::string& dir, const std::string& name, int days) {
  if (days < 1) return Status::InvalidArgument(fmt::format("a CA needs days >= 1, not {}", days));
  if (!ValidName(name)) {
    return Status::InvalidArgument(fmt::format(
        "CA name '{}' must be 1-64 characters of letters, digits, '.', '_' and '-'", name));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError(fmt::format("cannot create {}: {}", dir, ec.message()));
  (void)::chmod(dir.c_str(), 0700);
  ESCDR_ASSIGN_OR_RETURN(Pkey key, NewKey());
  ESCDR_ASSIGN_OR_RETURN(Cert cert, NewCert(name, key.get(), -300, days * kDay));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  ESCDR_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE"));
  ESCDR_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  ESCDR_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    return Status::Internal("cannot sign the CA certificate: " + OpenSslReason());
  }
  ESCDR_RETURN_IF_ERROR(WriteKey(dir + "/ca.key", key.get()));
  ESCDR_RETURN_IF_ERROR(WriteCert(dir + "/ca.crt", cert.get()));
  return WriteCrl(CrlPath(dir), cert.get(), key.get(), nullptr, nullptr);
}

Status IssueCertificate(const std::string& dir, const std::string& name, int days, PeerRole role,
                        bool replace) {
  if (!ValidName(name)) {
    return Status::InvalidArgument(fmt::format(
        "certificate name '{}' must be 1-64 characters of letters, digits, '.', '_' and '-' "
        "(and not 'ca')", name));
  }
  if (days == 0) return Status::InvalidArgument("a certificate needs days other than 0");
  const std::string ca_key_path = dir + "/ca.key";
  if (::access(ca_key_path.c_str(), F_OK) != 0) {
    return Status::NotFound(
        fmt::format("no CA in {} (no ca.key); run `escdr ca init --dir {}` first", dir, dir));
  }
  ESCDR_ASSIGN_OR_RETURN(Pkey ca_key, ReadKey(ca_key_path));
  ESCDR_ASSIGN_OR_RETURN(Cert ca_cert, ReadCert(dir + "/ca.crt"));
  ESCDR_ASSIGN_OR_RETURN(Pkey key, NewKey());
  const long not_before = days > 0 ? -300 : (days - 1) * kDay;
  ESCDR_ASSIGN_OR_RETURN(Cert cert, NewCert(name, key.get(), not_before, days * kDay));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  X509* c = cert.get();
  X509* ca = ca_cert.get();
  ESCDR_RETURN_IF_ERROR(AddExt(c, ca, NID_basic_constraints, "critical,CA:FALSE"));
  ESCDR_RETURN_IF_ERROR(AddExt(c, ca, NID_key_usage, "critical,digitalSignature"));
  ESCDR_RETURN_IF_ERROR(AddExt(c, ca, NID_ext_key_usage, "serverAuth,clientAuth"));
  ESCDR_RETURN_IF_ERROR(
      AddExt(c, ca, NID_subject_alt_name,
             fmt::format("DNS:{},URI:{}{}", name, kRoleUriPrefix, RoleName(role))));
  ESCDR_RETURN_IF_ERROR(AddExt(c, ca, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(c, ca_key.get(), EVP_sha256()) == 0) {
    return Status::Internal("cannot sign the certificate: " + OpenSslReason());
  }
  const std::string key_path = dir + "/" + name + ".key";
  const std::string cert_path = dir + "/" + name + ".crt";
  if (!replace) {
    ESCDR_RETURN_IF_ERROR(WriteKey(key_path, key.get()));
    return WriteCert(cert_path, c);
  }
  EVP_PKEY* k = key.get();
  ESCDR_RETURN_IF_ERROR(
      WriteReplacing(cert_path, 0644, [c](FILE* f) { return PEM_write_X509(f, c) == 1; }));
  return WriteReplacing(key_path, 0600, [k](FILE* f) {
    return PEM_write_PrivateKey(f, k, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
}

Result<Revocation> RevokeCertificate(const std::string& dir, const std::string& cert_path) {
  const std::string ca_key_path = dir + "/ca.key";
  if (::access(ca_key_path.c_str(), F_OK) != 0) {
    return Err(Status::NotFound(
        fmt::format("no CA in {} (no ca.key); revoke on the machine that holds the CA", dir)));
  }
  if (::access(cert_path.c_str(), F_OK) != 0) {
    return Err(Status::NotFound(fmt::format("no certificate {} to revoke", cert_path)));
  }
  ESCDR_ASSIGN_OR_RETURN(Pkey ca_key, ReadKey(ca_key_path));
  ESCDR_ASSIGN_OR_RETURN(Cert ca_cert, ReadCert(dir + "/ca.crt"));
  ESCDR_ASSIGN_OR_RETURN(Cert cert, ReadCert(cert_path));
  if (X509_verify(cert.get(), X509_get0_pubkey(ca_cert.get())) != 1) {
    ERR_clear_error();
    return Err(Status::InvalidArgument(
        fmt::format("{} is not signed by the CA in {}; nothing to revoke there", cert_path, dir)));
  }
  Revocation out;
  out.name = CommonName(X509_get_subject_name(cert.get()));
  out.serial = SerialText(X509_get0_serialNumber(cert.get()));
  out.crl_path = CrlPath(dir);
  Crl previous;
  if (::access(out.crl_path.c_str(), F_OK) == 0) {
    ESCDR_ASSIGN_OR_RETURN(previous, ReadCrl(out.crl_path));
    if (X509_CRL_verify(previous.get(), X509_get0_pubkey(ca_cert.get())) != 1) {
      ERR_clear_error();
      return Err(Status::Corruption(
          fmt::format("{} is not signed by the CA in {}; move it away to start a new list",
                      out.crl_path, dir)));
    }
    X509_REVOKED* listed = nullptr;
    if (X509_CRL_get0_by_serial(previous.get(), &listed,
                                const_cast<ASN1_INTEGER*>(X509_get0_serialNumber(cert.get()))) ==
        1) {
      out.already = true;
      const STACK_OF(X509_REVOKED)* all = X509_CRL_get_REVOKED(previous.get());
      out.revoked = static_cast<std::size_t>(sk_X509_REVOKED_num(all));
      return out;
    }
  }
  ESCDR_RETURN_IF_ERROR(WriteCrl(out.crl_path, ca_cert.get(), ca_key.get(), previous.get(),
                                 X509_get0_serialNumber(cert.get())));
  ESCDR_ASSIGN_OR_RETURN(auto serials, ReadRevokedSerials(out.crl_path));
  out.revoked = serials.size();
  return out;
}

Result<std::vector<std::string>> ReadRevokedSerials(const std::string& crl_path) {
  if (::access(crl_path.c_str(), F_OK) != 0) {
    return Err(Status::NotFound(fmt::format("no revocation list {}", crl_path)));
  }
  ESCDR_ASSIGN_OR_RETURN(Crl crl, ReadCrl(crl_path));
  std::vector<std::string> out;
  const STACK_OF(X509_REVOKED)* all = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(all); ++i) {
    out.push_back(SerialText(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(all, i))));
  }
  return out;
}

Status WritePskFile(const std::string& path) {
  unsigned char key[kPskBytes];
  if (RAND_bytes(key, sizeof(key)) != 1) {
    return Status::Internal("cannot draw random bytes: " + OpenSslReason());
  }
  std::string hex;
  for (unsigned char b : key) hex += fmt::format("{:02x}", b);
  OPENSSL_cleanse(key, sizeof(key));
  ESCDR_ASSIGN_OR_RETURN(auto f, CreateFile(path, 0600));
  const bool ok = std::fputs((hex + "\n").c_str(), f.get()) >= 0 && std::fflush(f.get()) == 0;
  OPENSSL_cleanse(hex.data(), hex.size());
  return ok ? Status::OK() : Status::IOError(fmt::format("cannot write {}", path));
}

Result<CertificateInfo> ReadCertificateInfo(const std::string& path) {
  ESCDR_ASSIGN_OR_RETURN(Cert cert, ReadCert(path));
  CertificateInfo info;
  info.subject = CommonName(X509_get_subject_name(cert.get()));
  info.issuer = CommonName(X509_get_issuer_name(cert.get()));
  info.not_before = TimeText(X509_get0_notBefore(cert.get()));
  info.not_after = TimeText(X509_get0_notAfter(cert.get()));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert.get(), EVP_sha256(), md, &len);
  for (unsigned int i = 0; i < len; ++i) info.sha256 += fmt::format("{:02x}", md[i]);
  info.serial = SerialText(X509_get0_serialNumber(cert.get()));
  if (auto role = RoleOfCertificate(cert.get()); role.has_value()) info.role = RoleName(*role);
  return info;
}

}  // namespace escdr::wire
