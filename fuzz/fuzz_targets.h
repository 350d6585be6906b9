// The entry functions of escdr's fuzz harnesses (docs/reliability.md).
//
// Each takes one input of any size and bytes, runs a decoder of untrusted
// input on it and checks the decoder's contract beyond "does not crash": every
// input byte reported exactly once, the same result for any chunking,
// decode-encode-decode round trips. A broken contract prints what broke and
// aborts (FUZZ_CHECK), so libFuzzer records the input and a GoogleTest that
// replays it dies. The libFuzzer programs (fuzz/libfuzzer_main.cc, built with
// ESCDR_FUZZ) and fuzz_regression_test (every normal build) call these same
// functions, so a regression input fails CI without clang.
//
// Input layouts (the first bytes steer the harness, the rest is the data):
//   FuzzStreamParser: [8 chunk-size bytes][QEMU migration stream]
//   FuzzWireFrames:   [mode][4 read-size bytes][frames]; mode bit 0 set:
//                     the harness fixes each frame's CRC32C first
//   FuzzCatalog:      [mode][catalog file]; mode bit 0 set: the harness
//                     fixes the file length and the XXH3-64 checksum first
// The seed corpora under fuzz/corpus/<harness>/ are in these layouts.
//
// Thread safety: each call is independent; no shared state.
#ifndef ESCDR_FUZZ_FUZZ_TARGETS_H_
#define ESCDR_FUZZ_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace escdr::fuzz {

// Returns 0 (libFuzzer's convention); aborts on a broken contract.
int FuzzStreamParser(const std::uint8_t* data, std::size_t size);
int FuzzWireFrames(const std::uint8_t* data, std::size_t size);
int FuzzCatalog(const std::uint8_t* data, std::size_t size);

[[noreturn]] inline void FuzzCheckFailed(const char* file, int line, const char* what,
                                         const char* detail) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s %s\n", file, line, what, detail);
  std::abort();
}

}  // namespace escdr::fuzz

// Checks `cond`; `detail` (a const char*) is printed with it on failure.
#define FUZZ_CHECK_MSG(cond, detail) \
  ((cond) ? (void)0 : ::escdr::fuzz::FuzzCheckFailed(__FILE__, __LINE__, #cond, (detail)))
#define FUZZ_CHECK(cond) FUZZ_CHECK_MSG(cond, "")

#endif  // ESCDR_FUZZ_FUZZ_TARGETS_H_
