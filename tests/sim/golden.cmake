# Golden-output test: runs `escdr simulate SCENARIO --trace` and compares its
# stdout with EXPECTED. With ESCDR_UPDATE_GOLDEN=1 in the environment it
# rewrites EXPECTED instead (review the diff before committing it).
#   cmake -DESCDR=... -DSCENARIO=... -DEXPECTED=... -DACTUAL=... -P golden.cmake
execute_process(COMMAND ${ESCDR} simulate ${SCENARIO} --trace
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "escdr simulate ${SCENARIO} failed (${rc}): ${err}")
endif()
if(DEFINED ENV{ESCDR_UPDATE_GOLDEN})
  file(WRITE ${EXPECTED} "${out}")
  message(STATUS "rewrote ${EXPECTED}")
  return()
endif()
file(READ ${EXPECTED} expected)
if(NOT out STREQUAL expected)
  file(WRITE ${ACTUAL} "${out}")
  message(FATAL_ERROR "simulated output differs from the golden file: diff ${EXPECTED} ${ACTUAL}")
endif()
