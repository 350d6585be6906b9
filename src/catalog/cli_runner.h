// RunEscdr: runs the real escdr binary of this build tree, for the catalog's
// integration tests.
//
// The binary is ESCDR_BINARY_DIR "/src/cli/escdr" (a compile definition of
// test targets); the test fails with a clear message if it was not built.
// stdout and stderr go to files in `work_dir` and are read back.
//
// Thread safety: not synchronized; test-only.
#ifndef ESCDR_CATALOG_CLI_RUNNER_H_
#define ESCDR_CATALOG_CLI_RUNNER_H_

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "escdr/sys/subprocess.h"

namespace escdr::catalog_test {

inline std::string EscdrBinary() { return std::string(ESCDR_BINARY_DIR) + "/src/cli/escdr"; }

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;

  // stdout parsed as JSON (null if it is not JSON; the test then fails on use).
  nlohmann::json Json() const {
    nlohmann::json doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(doc.is_discarded()) << "stdout is not JSON: " << out;
    return doc;
  }
};

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `escdr --state-dir <state_dir> <args...>` and waits for it.
inline CliResult RunEscdr(const std::string& work_dir, const std::string& state_dir,
                          const std::vector<std::string>& args) {
  CliResult r;
  if (!std::filesystem::exists(EscdrBinary())) {
    ADD_FAILURE() << EscdrBinary() << " does not exist: build the escdr target first";
    return r;
  }
  SubprocessOptions options;
  options.argv = {EscdrBinary(), "--state-dir", state_dir};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.stdout_path = work_dir + "/escdr.stdout";
  options.stderr_path = work_dir + "/escdr.stderr";
  Result<Subprocess> child = Subprocess::Spawn(options);
  if (!child) {
    ADD_FAILURE() << "cannot start escdr: " << child.error().message();
    return r;
  }
  Result<ExitStatus> status = child->WaitFor(std::chrono::minutes(5));
  if (!status) {
    ADD_FAILURE() << "escdr did not finish: " << status.error().message();
    return r;  // ~Subprocess kills and reaps it
  }
  r.exit_code = status->exited ? status->code : 128 + status->signal;
  r.out = Slurp(options.stdout_path);
  r.err = Slurp(options.stderr_path);
  return r;
}

}  // namespace escdr::catalog_test

#endif  // ESCDR_CATALOG_CLI_RUNNER_H_
