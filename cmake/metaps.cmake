# metaps_test(NAME SOURCES... LIBS ... LABELS ... [TIMEOUT s])
# Declares a GoogleTest executable and registers it with ctest under the given labels
# (unit, integration, slow). Tests find the built CLI through $METAPS_BIN and the shared
# golden cases through $METAPS_SHARED.
function(metaps_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "METAPS_BIN=${CMAKE_BINARY_DIR}/bin/metaps;METAPS_SHARED=${PROJECT_SOURCE_DIR}/../shared;METAPS_SOURCE=${PROJECT_SOURCE_DIR}")
endfunction()
