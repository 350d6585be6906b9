// The escdr command line: global options and subcommand registration.
//
// Each subcommand group lives in its own src/cli/<group>_cmd.cc and registers
// itself at start-up with ESCDR_REGISTER_COMMAND(fn), where
// `void fn(CLI::App& app, GlobalOptions& global)` adds its subcommands to
// `app`. A subcommand's callback returns through Exit(): the CLI prints
// "escdr: <message>" to stderr and exits non-zero for a non-OK Status.
//
// Output: tables for people by default, one JSON document on stdout when
// --json is given (global.json).
#ifndef ESCDR_CLI_COMMAND_H_
#define ESCDR_CLI_COMMAND_H_

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/wire/tls.h"

namespace escdr::cli {

struct GlobalOptions {
  bool json = false;      // --json: machine-readable output
  std::string db;         // --db / ESCDR_DB: inventory URL (sqlite path or postgresql://...)
  std::string state_dir;  // --state-dir / ESCDR_STATE_DIR: where local state lives
  int verbosity = 0;      // -v, -vv
  // How connections to and between agents are secured (docs/cli-ca.md):
  std::string tls_dir;    // --tls-dir / ESCDR_TLS_DIR: ca.crt, NAME.crt, NAME.key
  std::string tls_name;   // --tls-name / ESCDR_TLS_NAME: this end's certificate NAME
  std::string psk_file;   // --psk-file / ESCDR_PSK_FILE: a pre-shared key instead
  bool insecure = false;  // --insecure / ESCDR_INSECURE: plaintext, no authentication

  // The state directory, created if missing: --state-dir, else
  // $ESCDR_STATE_DIR, else $XDG_STATE_HOME/escdr, else ~/.local/state/escdr.
  Result<std::string> StateDir() const;

  // The credentials for agent connections from the options above: null with
  // --insecure. `own_name` is the certificate name when --tls-name is not
  // given (the agent's --name). InvalidArgument, naming the flags to give,
  // when none of --tls-dir, --psk-file and --insecure is set or more than
  // one is, or when the files are unusable. Defined in ca_cmd.cc.
  Result<std::shared_ptr<const wire::TlsContext>> AgentTls(const std::string& own_name = "") const;
};

using Registrar = void (*)(CLI::App& app, GlobalOptions& global);

// Registers a subcommand group; used through ESCDR_REGISTER_COMMAND.
bool RegisterCommandGroup(Registrar registrar);

// Ends a subcommand: throws the exception main() turns into the exit code and
// the "escdr: <message>" line. Call from a subcommand callback only.
[[noreturn]] void Fail(const Status& status);

// Throws via Fail() when `status` is not OK.
inline void Check(const Status& status) {
  if (!status.ok()) Fail(status);
}

// Returns the value of `result` or Fail()s with its error.
template <typename T>
T Unwrap(Result<T> result) {
  if (!result.has_value()) Fail(result.error());
  return std::move(result).value();
}

// Returns the subcommand `name` of `app`, adding it with `description` if no
// group has added it yet. Several groups share a parent this way (e.g. the
// inventory adds `vm add|list|show|remove`, the agent adds `vm create|stop`),
// whatever the order in which groups register.
CLI::App* GetOrAddSubcommand(CLI::App& app, const std::string& name,
                             const std::string& description);

// A text table: a header row and rows of cells, columns padded to fit.
// Columns whose header starts with '>' are right-aligned (the '>' is dropped).
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::size_t rows() const { return rows_.size(); }
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// "1.5 GiB", "512 KiB", "42 B".
std::string HumanBytes(double bytes);

}  // namespace escdr::cli

#define ESCDR_CLI_CONCAT_INNER_(a, b) a##b
#define ESCDR_CLI_CONCAT_(a, b) ESCDR_CLI_CONCAT_INNER_(a, b)
#define ESCDR_REGISTER_COMMAND(fn)                                                   \
  static const bool ESCDR_CLI_CONCAT_(escdr_registered_, __LINE__) [[maybe_unused]] = \
      ::escdr::cli::RegisterCommandGroup(&fn)

#endif  // ESCDR_CLI_COMMAND_H_
