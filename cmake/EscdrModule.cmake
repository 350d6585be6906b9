# Helpers that keep every module's CMakeLists.txt short and alike.
#
# escdr_module(NAME SOURCES a.cc b.cc DEPS escdr_base ... [PRIVATE_DEPS ...])
#   Creates the static library escdr_NAME with PUBLIC include/ and PRIVATE src/.
# escdr_test(NAME SOURCES a_test.cc ... DEPS escdr_x ... [LABELS l1 l2] [TIMEOUT s])
#   Creates a GoogleTest binary registered with CTest (one CTest test per TEST).
#   Its own sources get ESCDR_TEST_CXXFLAGS after the build type's flags.

set(ESCDR_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wimplicit-fallthrough)

function(escdr_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(escdr_${name} STATIC ${ARG_SOURCES})
  target_include_directories(escdr_${name}
    PUBLIC ${PROJECT_SOURCE_DIR}/include
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(escdr_${name} PRIVATE ${ESCDR_WARNINGS}
    $<$<BOOL:${ESCDR_WERROR}>:-Werror>)
  target_link_libraries(escdr_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  set_target_properties(escdr_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

function(escdr_test name)
  if(NOT ESCDR_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "SERIAL" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${name} PRIVATE ${ESCDR_WARNINGS} ${ESCDR_TEST_CXXFLAGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  target_compile_definitions(${name} PRIVATE ESCDR_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    ESCDR_BINARY_DIR="${PROJECT_BINARY_DIR}")
  set(serial FALSE)
  if(ARG_SERIAL)
    set(serial TRUE)
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}" RUN_SERIAL ${serial})
endfunction()

# escdr_cli_link(escdr_x ...): the escdr executable links these libraries
# (call from a module's CMakeLists.txt; the cli module comes last).
function(escdr_cli_link)
  set_property(GLOBAL APPEND PROPERTY ESCDR_CLI_LIBS ${ARGN})
endfunction()

# escdr_glob_module(NAME [DEPS ...] [PRIVATE_DEPS ...] [TEST_DEPS ...])
#   The usual module: library escdr_NAME from every *.cc in the directory that is
#   not a test; one unit-test binary per *_test.cc (label "unit"); one
#   integration-test binary per *_itest.cc (label "integration", run alone,
#   15 min timeout: these boot real QEMU guests or start real servers; a
#   module sets ESCDR_ITEST_TIMEOUT_<name> before the call for a longer one).
#   Adding a file needs no edit here (CONFIGURE_DEPENDS).
function(escdr_glob_module name)
  cmake_parse_arguments(ARG "" "" "DEPS;PRIVATE_DEPS;TEST_DEPS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  list(FILTER srcs EXCLUDE REGEX "_i?test\\.cc$")
  if(NOT srcs)
    message(STATUS "escdr: module ${name} has no sources yet; skipped")
    return()
  endif()
  escdr_module(${name} SOURCES ${srcs} DEPS ${ARG_DEPS} PRIVATE_DEPS ${ARG_PRIVATE_DEPS})
  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cc)
  foreach(t ${tests})
    get_filename_component(n ${t} NAME_WE)
    escdr_test(${n} SOURCES ${t} DEPS escdr_${name} ${ARG_TEST_DEPS})
  endforeach()
  file(GLOB itests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_itest.cc)
  foreach(t ${itests})
    get_filename_component(n ${t} NAME_WE)
    set(timeout 900)
    if(DEFINED ESCDR_ITEST_TIMEOUT_${n})
      set(timeout ${ESCDR_ITEST_TIMEOUT_${n}})
    endif()
    escdr_test(${n} SOURCES ${t} DEPS escdr_${name} ${ARG_TEST_DEPS}
      LABELS integration TIMEOUT ${timeout} SERIAL)
  endforeach()
endfunction()

# escdr_qemu10_tests(TARGET ENV_VAR FILTER)
#   Registers the tests of integration-test binary TARGET that match the gtest
#   FILTER once more, prefixed "qemu10.", with ENV_VAR=10.0 in their
#   environment: the test then runs its guests on QEMU 10.0
#   (tools/install-qemu.sh) instead of the host's 7.2.
function(escdr_qemu10_tests target env filter)
  if(NOT ESCDR_BUILD_TESTS)
    return()
  endif()
  gtest_discover_tests(${target}
    TEST_PREFIX "qemu10."
    TEST_FILTER "${filter}"
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 900 LABELS integration RUN_SERIAL TRUE ENVIRONMENT ${env}=10.0)
endfunction()
