# Helpers that keep every module's CMakeLists.txt short and alike.
#
# escdr_module(NAME SOURCES a.cc b.cc DEPS escdr_base ... [PRIVATE_DEPS ...])
#   Creates the static library escdr_NAME with PUBLIC include/ and PRIVATE src/.
# escdr_test(NAME SOURCES a_test.cc ... DEPS escdr_x ... [LABELS l1 l2] [TIMEOUT s])
#   Creates a GoogleTest binary registered with CTest (one CTest test per TEST).

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
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${name} PRIVATE ${ESCDR_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()

# escdr_cli_link(escdr_x ...): the escdr executable links these libraries
# (call from a module's CMakeLists.txt; the cli module comes last).
function(escdr_cli_link)
  set_property(GLOBAL APPEND PROPERTY ESCDR_CLI_LIBS ${ARGN})
endfunction()
