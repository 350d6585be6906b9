// escdr: the command-line front end. Subcommand groups register themselves
// (see command.h); main() only parses, dispatches and turns errors into one
// line on stderr and a non-zero exit code.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "cli/command.h"

namespace escdr::cli {
namespace {

// Thrown by Fail(); caught in main().
struct CommandFailure {
  Status status;
};

std::vector<Registrar>& Registry() {
  static std::vector<Registrar> registry;
  return registry;
}

}  // namespace

bool RegisterCommandGroup(Registrar registrar) {
  Registry().push_back(registrar);
  return true;
}

void Fail(const Status& status) { throw CommandFailure{status}; }

Result<std::string> GlobalOptions::StateDir() const {
  std::string dir = state_dir;
  if (dir.empty()) {
    if (const char* env = std::getenv("ESCDR_STATE_DIR"); env && *env) {
      dir = env;
    } else if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg) {
      dir = std::string(xdg) + "/escdr";
    } else if (const char* home = std::getenv("HOME"); home && *home) {
      dir = std::string(home) + "/.local/state/escdr";
    } else {
      return Err(Status::InvalidArgument("no state directory: set --state-dir or ESCDR_STATE_DIR"));
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Err(Status::IOError("cannot create state directory " + dir + ": " + ec.message()));
  return dir;
}

CLI::App* GetOrAddSubcommand(CLI::App& app, const std::string& name,
                             const std::string& description) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    if (sub->get_name() == name) return sub;
  }
  CLI::App* sub = app.add_subcommand(name, description);
  sub->require_subcommand(1);
  return sub;
}

std::string Table::Render() const {
  std::vector<std::size_t> width(header_.size(), 0);
  std::vector<bool> right(header_.size(), false);
  std::vector<std::string> head = header_;
  for (std::size_t i = 0; i < head.size(); ++i) {
    if (!head[i].empty() && head[i][0] == '>') {
      right[i] = true;
      head[i].erase(0, 1);
    }
    width[i] = head[i].size();
  }
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      std::string pad(width[i] - std::min(width[i], cell.size()), ' ');
      line += right[i] ? pad + cell : cell + pad;
      if (i + 1 < width.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(head);
  for (const auto& row : rows_) emit(row);
  return out;
}

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

}  // namespace escdr::cli

int main(int argc, char** argv) {
  using namespace escdr::cli;
  CLI::App app{"escdr: live migration of QEMU VMs that skips memory a same-kind VM "
               "already has at the destination"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "escdr 0.1.0");
  GlobalOptions global;
  app.add_flag("--json", global.json, "Print one JSON document instead of tables");
  app.add_option("--db", global.db,
                 "Inventory database: a SQLite file path or postgresql://... "
                 "(default: $ESCDR_DB, else <state-dir>/inventory.db)")
      ->envname("ESCDR_DB");
  app.add_option("--state-dir", global.state_dir,
                 "Local state directory (default: $ESCDR_STATE_DIR, else ~/.local/state/escdr)");
  app.add_flag("-v,--verbose", global.verbosity, "More log output (repeat for more)");
  app.add_option("--tls-dir", global.tls_dir,
                 "TLS to agents with certificates from this directory: ca.crt, NAME.crt, NAME.key "
                 "(see escdr ca)")
      ->envname("ESCDR_TLS_DIR");
  app.add_option("--tls-name", global.tls_name,
                 "This end's certificate name in --tls-dir (default for escdr agent: its --name)")
      ->envname("ESCDR_TLS_NAME");
  app.add_option("--psk-file", global.psk_file,
                 "TLS to agents with this pre-shared key file instead (escdr ca psk)")
      ->envname("ESCDR_PSK_FILE");
  app.add_flag("--insecure", global.insecure,
               "Plaintext, unauthenticated agent connections (tests, debugging only)")
      ->envname("ESCDR_INSECURE");
  for (Registrar r : Registry()) r(app, global);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const CommandFailure& f) {
    std::fflush(stdout);
    std::cerr << "escdr: " << f.status.message() << "\n";
    return 1;
  }
  return 0;
}
