// The libFuzzer entry point of one harness; ESCDR_FUZZ_ENTRY names its
// function in fuzz_targets.h (set per program by fuzz/CMakeLists.txt).
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return escdr::fuzz::ESCDR_FUZZ_ENTRY(data, size);
}
