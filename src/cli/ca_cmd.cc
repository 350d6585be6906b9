// `escdr ca init|issue|revoke|psk`: the credentials of TLS agent channels
// (docs/cli-ca.md), and GlobalOptions::AgentTls, which turns the global
// --tls-dir/--tls-name/--psk-file/--insecure options into a TlsContext.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "escdr/wire/tls.h"
#include "escdr/wire/tls_ca.h"

namespace escdr::cli {

Result<std::shared_ptr<const wire::TlsContext>> GlobalOptions::AgentTls(
    const std::string& own_name) const {
  const int given = (tls_dir.empty() ? 0 : 1) + (psk_file.empty() ? 0 : 1) + (insecure ? 1 : 0);
  if (given == 0) {
    return Err(Status::InvalidArgument(
        "no credentials for agent connections: give --tls-dir DIR --tls-name NAME (certificates "
        "from `escdr ca`), --psk-file FILE (a pre-shared key), or --insecure for plaintext "
        "(or ESCDR_TLS_DIR and ESCDR_TLS_NAME, ESCDR_PSK_FILE, ESCDR_INSECURE=1)"));
  }
  if (given > 1) {
    return Err(Status::InvalidArgument(
        "--tls-dir, --psk-file and --insecure exclude each other (check ESCDR_TLS_DIR, "
        "ESCDR_PSK_FILE and ESCDR_INSECURE too)"));
  }
  if (insecure) return std::shared_ptr<const wire::TlsContext>();
  if (!psk_file.empty()) return wire::TlsContext::FromPskFile(psk_file);
  const std::string name = tls_name.empty() ? own_name : tls_name;
  if (name.empty()) {
    return Err(Status::InvalidArgument(fmt::format(
        "--tls-dir {} needs --tls-name NAME (or ESCDR_TLS_NAME): the certificate {}/NAME.crt "
        "this end presents",
        tls_dir, tls_dir)));
  }
  return wire::TlsContext::FromDirectory(tls_dir, name);
}

namespace {

using nlohmann::json;

void PrintInfo(const GlobalOptions& global, const std::string& what, const std::string& cert,
               const std::string& key) {
  auto info = Unwrap(wire::ReadCertificateInfo(cert));
  if (global.json) {
    std::printf("%s\n", json{{"certificate", cert},
                             {"key", key},
                             {"subject", info.subject},
                             {"issuer", info.issuer},
                             {"not_before", info.not_before},
                             {"not_after", info.not_after},
                             {"sha256", info.sha256},
                             {"serial", info.serial},
                             {"role", info.role}}
                            .dump(2)
                            .c_str());
    return;
  }
  std::printf("%s %s\n  certificate %s\n  key         %s (mode 0600)\n  issuer      %s\n"
              "  valid       %s to %s\n  sha256      %s\n  serial      %s\n",
              what.c_str(), info.subject.c_str(), cert.c_str(), key.c_str(), info.issuer.c_str(),
              info.not_before.c_str(), info.not_after.c_str(), info.sha256.c_str(),
              info.serial.c_str());
  if (what != "created CA") {
    std::printf("  role        %s\n", info.role.empty() ? "none (agents treat it as an observer)"
                                                         : info.role.c_str());
  }
}

struct CaArgs {
  std::string dir;
  std::string name = "escdr-ca";
  int days = 3650;
  std::string subject;
  int issue_days = 825;
  std::string role;
  bool renew = false;
  std::string cert;
  std::string out;
};

std::string Dir(const GlobalOptions& global, const CaArgs& a) {
  if (!a.dir.empty()) return a.dir;
  if (!global.tls_dir.empty()) return global.tls_dir;
  Fail(Status::InvalidArgument("escdr ca needs --dir DIR (or --tls-dir / ESCDR_TLS_DIR)"));
}

void RegisterCaCommands(CLI::App& app, GlobalOptions& global) {
  auto a = std::make_shared<CaArgs>();
  CLI::App* ca = GetOrAddSubcommand(
      app, "ca", "Credentials for TLS between agents and the CLI: a cluster CA, certificates, "
                 "pre-shared keys");

  CLI::App* init = ca->add_subcommand("init", "Create a CA: DIR/ca.key (0600) and DIR/ca.crt");
  init->add_option("--dir", a->dir, "CA directory (created; default --tls-dir)");
  init->add_option("--name", a->name, "The CA's common name (default escdr-ca)");
  init->add_option("--days", a->days, "Validity in days (default 3650)");
  init->callback([&global, a] {
    const std::string dir = Dir(global, *a);
    Check(wire::CreateCa(dir, a->name, a->days));
    PrintInfo(global, "created CA", dir + "/ca.crt", dir + "/ca.key");
  });

  CLI::App* issue = ca->add_subcommand(
      "issue", "Issue DIR/NAME.key (0600) and DIR/NAME.crt for a host agent or an operator");
  issue->add_option("NAME", a->subject,
                    "Certificate name: the host's name for an agent, any name for an operator")
      ->required();
  issue->add_option("--dir", a->dir, "CA directory (default --tls-dir)");
  issue->add_option("--days", a->issue_days,
                    "Validity in days (default 825); a negative N issues a certificate that "
                    "expired N days ago, for testing refusals");
  issue->add_option("--role", a->role,
                    "What the holder may ask of agents (required): agent (a host's agent, named "
                    "after the host), operator (drives agents: everything), observer (status only)")
      ->check(CLI::IsMember({"agent", "operator", "observer"}));
  issue->add_flag("--renew", a->renew,
                  "Replace an existing NAME.key and NAME.crt with a new pair (revoke the old "
                  "certificate first if it must stop working at once)");
  issue->callback([&global, a] {
    const std::string dir = Dir(global, *a);
    if (a->role.empty()) {
      Fail(Status::InvalidArgument(fmt::format(
          "escdr ca issue {} needs --role: agent for a host's agent (the certificate name is the "
          "host's name), operator for a person or tool that drives agents, observer for "
          "monitoring (status only); docs/security.md §6 lists what each may ask",
          a->subject)));
    }
    Check(wire::IssueCertificate(dir, a->subject, a->issue_days,
                                 *wire::RoleFromName(a->role), a->renew));
    PrintInfo(global, a->renew ? "renewed" : "issued", dir + "/" + a->subject + ".crt",
              dir + "/" + a->subject + ".key");
  });

  CLI::App* revoke = ca->add_subcommand(
      "revoke", "Put NAME's certificate on the CA's revocation list DIR/crl.pem (agents refuse "
                "it after `escdr agent reload` or SIGHUP)");
  revoke->add_option("NAME", a->subject, "Certificate name (revokes DIR/NAME.crt)")->required();
  revoke->add_option("--dir", a->dir, "CA directory (default --tls-dir)");
  revoke->add_option("--cert", a->cert,
                     "Revoke this certificate file instead of DIR/NAME.crt (e.g. a copy of an "
                     "old certificate after --renew)");
  revoke->callback([&global, a] {
    const std::string dir = Dir(global, *a);
    const std::string cert = a->cert.empty() ? dir + "/" + a->subject + ".crt" : a->cert;
    wire::Revocation r = Unwrap(wire::RevokeCertificate(dir, cert));
    if (!a->cert.empty() && r.name != a->subject) {
      std::fprintf(stderr, "escdr: note: %s names %s, not %s\n", cert.c_str(), r.name.c_str(),
                   a->subject.c_str());
    }
    if (global.json) {
      std::printf("%s\n", json{{"certificate", cert},
                               {"name", r.name},
                               {"serial", r.serial},
                               {"crl", r.crl_path},
                               {"revoked", r.revoked},
                               {"already_revoked", r.already}}
                              .dump(2)
                              .c_str());
      return;
    }
    std::printf("%s %s (serial %s)\n  revocation list %s (%zu revoked)\n"
                "  copy it to every agent's and operator's TLS directory, then run "
                "`escdr agent reload` (or send the agents SIGHUP)\n",
                r.already ? "already revoked" : "revoked", r.name.c_str(), r.serial.c_str(),
                r.crl_path.c_str(), r.revoked);
  });

  CLI::App* psk = ca->add_subcommand(
      "psk", "Write a new pre-shared key (32 random bytes, hex, mode 0600) for --psk-file");
  psk->add_option("--out", a->out, "The key file to create")->required();
  psk->callback([&global, a] {
    Check(wire::WritePskFile(a->out));
    if (global.json) {
      std::printf("%s\n", json{{"psk_file", a->out}}.dump(2).c_str());
    } else {
      std::printf("wrote a pre-shared key to %s (mode 0600); copy it to every agent host and "
                  "operator, and give it as --psk-file\n",
                  a->out.c_str());
    }
  });
}

}  // namespace

ESCDR_REGISTER_COMMAND(RegisterCaCommands);

}  // namespace escdr::cli
