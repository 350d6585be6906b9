# Sanitizer and fuzzing builds (docs/reliability.md).
#
# ESCDR_SANITIZE=<list>  e.g. "address,undefined" or "thread": the whole build
#   (libraries, tests, tools) is compiled and linked with -fsanitize=<list>.
#   Any report stops the program (-fno-sanitize-recover=all), so undefined
#   behaviour fails the test that ran into it. Used by tools/sanitize-tests.sh.
# ESCDR_FUZZ=ON  (clang >= 16 only) builds the libFuzzer harnesses of fuzz/:
#   the modules they need are compiled with fuzzer coverage, ASan and UBSan;
#   tests, benchmarks and the modules above wire/ are left out. Used by
#   tools/fuzz.sh. The regression test of fuzz/ is built by every normal build.

set(ESCDR_SANITIZE "" CACHE STRING
    "Sanitizers for the whole build, as for -fsanitize= (address,undefined or thread)")
option(ESCDR_FUZZ "Build the libFuzzer harnesses under fuzz/ (clang only)" OFF)

# The modules a fuzz build compiles (the decoders and what they link).
set(ESCDR_FUZZ_MODULES base sys page qemu image catalog wire)

if(ESCDR_SANITIZE AND ESCDR_FUZZ)
  message(FATAL_ERROR "ESCDR_SANITIZE and ESCDR_FUZZ exclude each other: "
                      "the fuzz build chooses its own sanitizers")
endif()

if(ESCDR_SANITIZE)
  add_compile_options(-fsanitize=${ESCDR_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${ESCDR_SANITIZE})
endif()

if(ESCDR_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang" OR CMAKE_CXX_COMPILER_VERSION VERSION_LESS 16)
    message(FATAL_ERROR "ESCDR_FUZZ needs clang >= 16 (libFuzzer, and libstdc++ 12's "
                        "<expected>); this is ${CMAKE_CXX_COMPILER_ID} "
                        "${CMAKE_CXX_COMPILER_VERSION}. tools/fuzz.sh sets it up.")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  set(ESCDR_BUILD_TESTS OFF)
  set(ESCDR_BUILD_BENCHMARKS OFF)
endif()
