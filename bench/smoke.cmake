# SPDX-FileCopyrightText: 2026 The attn authors
# SPDX-License-Identifier: Apache-2.0
#
# The benchmark smoke test (ctest bench.smoke): runs the first instance
# attn_bench lists of every benchmark family (its smallest problem, one
# thread) for a moment, so that a benchmark whose arguments a kernel now
# refuses, or one that crashes, fails CI rather than the next README run.
# Timings are not looked at.
#
#   cmake -DBENCH=<attn_bench> [-DSKIP=family;family] -P bench/smoke.cmake

cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "bench/smoke.cmake: pass -DBENCH=<path to attn_bench>")
endif()

execute_process(COMMAND "${BENCH}" --benchmark_list_tests OUTPUT_VARIABLE listed RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "attn_bench --benchmark_list_tests exited with ${rc}")
endif()

string(REPLACE "\n" ";" names "${listed}")
# "+" (fma3+avx2) is the only regex character in the names: any character
# matches it.
set(families "")
set(exact_names "")
foreach(name IN LISTS names)
  string(REGEX REPLACE "/.*" "" family "${name}")
  if(family STREQUAL "" OR family IN_LIST families OR family IN_LIST SKIP)
    continue()
  endif()
  list(APPEND families "${family}")
  string(REPLACE "+" "." exact "^${name}$")
  list(APPEND exact_names "${exact}")
endforeach()
list(JOIN exact_names "|" pattern)
list(LENGTH families count)
if(count EQUAL 0)
  message(FATAL_ERROR "attn_bench lists no benchmarks")
endif()
message(STATUS "running ${count} benchmarks, one per family")

execute_process(COMMAND "${BENCH}" "--benchmark_filter=${pattern}" --benchmark_min_time=0.001
                OUTPUT_VARIABLE report ERROR_VARIABLE errors RESULT_VARIABLE rc)
message("${report}${errors}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "attn_bench exited with ${rc}")
endif()
if(report MATCHES "ERROR OCCURRED")
  message(FATAL_ERROR "a benchmark reported an error (above)")
endif()
foreach(family IN LISTS families)
  string(REPLACE "+" "." family_pattern "${family}")
  if(NOT report MATCHES "(^|\n)${family_pattern}/")
    message(FATAL_ERROR "benchmark family ${family} did not run")
  endif()
endforeach()
