# SPDX-FileCopyrightText: 2026 The attn authors
# SPDX-License-Identifier: Apache-2.0
#
# Dependency provider for attn's own builds (CMake >= 3.24). The presets load
# it through CMAKE_PROJECT_TOP_LEVEL_INCLUDES; without a preset:
#
#   cmake -S . -B build -DCMAKE_PROJECT_TOP_LEVEL_INCLUDES=cmake/dependencies.cmake
#
# It answers find_package() for the packages below and passes every other
# find_package() through unchanged. For each of them, in this order:
#
#   1. find_package() as usual (xsimd_DIR, CMAKE_PREFIX_PATH, ... all work);
#   2. only as root on Debian/Ubuntu and with ATTN_APT_INSTALL on:
#      `apt-get update` (once per configure), `apt-get install -y <deb>`,
#      then find_package() again;
#   3. only with ATTN_FETCH_DEPENDENCIES on (a last resort): FetchContent of a
#      pinned release archive (URL overridable with ATTN_FETCH_URL_<name>,
#      e.g. for a mirror), run in a child `cmake -P` so that a failed
#      download ends in the message of step 4; or the source tree named by
#      FETCHCONTENT_SOURCE_DIR_<NAME>, without downloading;
#   4. a fatal error naming the missing package and how to install it.
#
# The library itself needs only xsimd; Eigen3, GTest and benchmark are for
# attn's tests, benchmarks and examples.

if(CMAKE_VERSION VERSION_LESS 3.24)
  message(WARNING "attn: cmake/dependencies.cmake needs CMake >= 3.24 (this is "
                  "${CMAKE_VERSION}); dependencies are looked up with plain find_package()")
  return()
endif()

option(ATTN_APT_INSTALL
       "As root on Debian/Ubuntu, apt-get install the dependencies that find_package() misses" ON)
option(ATTN_FETCH_DEPENDENCIES
       "As a last resort, download missing dependencies with FetchContent" ON)

# Package name -> Debian package, pinned release, archive URL, advice.
set(_attn_dep_xsimd_deb "libxsimd-dev")
set(_attn_dep_xsimd_version "8.1.0")
set(_attn_dep_xsimd_url "https://github.com/xtensor-stack/xsimd/archive/refs/tags/8.1.0.tar.gz")
set(_attn_dep_xsimd_advice
    "libxsimd-dev (Debian/Ubuntu), xsimd (Homebrew, conda-forge, vcpkg), or set xsimd_DIR")

set(_attn_dep_Eigen3_deb "libeigen3-dev")
set(_attn_dep_Eigen3_version "3.4.0")
set(_attn_dep_Eigen3_url "https://gitlab.com/libeigen/eigen/-/archive/3.4.0/eigen-3.4.0.tar.gz")
set(_attn_dep_Eigen3_advice
    "libeigen3-dev (Debian/Ubuntu), eigen (Homebrew, conda-forge, vcpkg), or set Eigen3_DIR")

set(_attn_dep_GTest_deb "libgtest-dev")
set(_attn_dep_GTest_version "1.12.1")
set(_attn_dep_GTest_url
    "https://github.com/google/googletest/archive/refs/tags/release-1.12.1.tar.gz")
string(CONCAT _attn_dep_GTest_advice
       "libgtest-dev (Debian/Ubuntu), googletest (Homebrew), gtest (conda-forge, vcpkg), "
       "or set GTest_DIR; or configure with -DATTN_BUILD_TESTS=OFF")

set(_attn_dep_benchmark_deb "libbenchmark-dev")
set(_attn_dep_benchmark_version "1.7.1")
set(_attn_dep_benchmark_url "https://github.com/google/benchmark/archive/refs/tags/v1.7.1.tar.gz")
string(CONCAT _attn_dep_benchmark_advice
       "libbenchmark-dev (Debian/Ubuntu), google-benchmark (Homebrew), benchmark (conda-forge, "
       "vcpkg), or set benchmark_DIR; or configure with -DATTN_BUILD_BENCHMARKS=OFF")

set(_attn_managed_dependencies xsimd Eigen3 GTest benchmark)

# Sets ${out} to why apt-get may not be used here, or to "" when it may.
function(_attn_apt_unavailable out)
  set(why "")
  if(NOT ATTN_APT_INSTALL)
    set(why "not tried, ATTN_APT_INSTALL is OFF")
  elseif(NOT CMAKE_HOST_UNIX OR NOT EXISTS /etc/os-release)
    set(why "not tried, not a Debian/Ubuntu host")
  else()
    file(STRINGS /etc/os-release os_ids REGEX "^ID(_LIKE)?=")
    if(NOT os_ids MATCHES "(debian|ubuntu)")
      set(why "not tried, not a Debian/Ubuntu host")
    else()
      execute_process(COMMAND id -u OUTPUT_VARIABLE uid OUTPUT_STRIP_TRAILING_WHITESPACE
                      RESULT_VARIABLE rc)
      find_program(ATTN_APT_GET apt-get)
      mark_as_advanced(ATTN_APT_GET)
      if(NOT rc EQUAL 0 OR NOT uid STREQUAL "0")
        set(why "not tried, not running as root")
      elseif(NOT ATTN_APT_GET)
        set(why "not tried, apt-get not found")
      endif()
    endif()
  endif()
  set(${out} "${why}" PARENT_SCOPE)
endfunction()

# Runs apt-get update (once per configure) and apt-get install -y <deb>, with
# their output in attn-apt-get-*.log in the build tree; ${ok} says whether the
# install worked.
function(_attn_apt_install deb ok)
  set(apt ${CMAKE_COMMAND} -E env DEBIAN_FRONTEND=noninteractive ${ATTN_APT_GET})
  get_property(updated GLOBAL PROPERTY _ATTN_APT_UPDATED)
  if(NOT updated)
    set(log "${CMAKE_BINARY_DIR}/attn-apt-get-update.log")
    message(STATUS "attn: apt-get update (log: ${log})")
    execute_process(COMMAND ${apt} update OUTPUT_FILE "${log}" ERROR_FILE "${log}"
                    RESULT_VARIABLE rc)
    set_property(GLOBAL PROPERTY _ATTN_APT_UPDATED TRUE)
    if(NOT rc EQUAL 0)
      message(STATUS "attn: apt-get update failed (${rc}); trying the install anyway")
    endif()
  endif()
  set(log "${CMAKE_BINARY_DIR}/attn-apt-get-${deb}.log")
  message(STATUS "attn: apt-get install -y ${deb} (log: ${log})")
  execute_process(COMMAND ${apt} install -y --no-install-recommends ${deb}
                  OUTPUT_FILE "${log}" ERROR_FILE "${log}" RESULT_VARIABLE rc)
  if(rc EQUAL 0)
    set(${ok} TRUE PARENT_SCOPE)
  else()
    message(STATUS "attn: apt-get install ${deb} failed (${rc}), see ${log}")
    set(${ok} FALSE PARENT_SCOPE)
  endif()
endfunction()

# Makes the source tree of ${name} available in ${src_out}: the directory
# named by FETCHCONTENT_SOURCE_DIR_<NAME>, an earlier download, or a new one.
# Sets ${src_out} to "" and ${why_out} to the reason when that fails.
function(_attn_fetch_source name src_out why_out)
  string(TOUPPER "${name}" upper)
  set(${src_out} "" PARENT_SCOPE)
  if(FETCHCONTENT_SOURCE_DIR_${upper})
    set(${src_out} "${FETCHCONTENT_SOURCE_DIR_${upper}}" PARENT_SCOPE)
    return()
  endif()
  if(NOT ATTN_FETCH_DEPENDENCIES)
    set(${why_out} "not tried, ATTN_FETCH_DEPENDENCIES is OFF" PARENT_SCOPE)
    return()
  endif()
  if(FETCHCONTENT_BASE_DIR)
    set(base "${FETCHCONTENT_BASE_DIR}")
  else()
    set(base "${CMAKE_BINARY_DIR}/_deps")
  endif()
  set(src "${base}/attn-${name}-src")
  if(EXISTS "${src}/.attn-populated")
    set(${src_out} "${src}" PARENT_SCOPE)
    return()
  endif()
  if(FETCHCONTENT_FULLY_DISCONNECTED)
    set(${why_out} "not tried, FETCHCONTENT_FULLY_DISCONNECTED is ON and ${src} is empty"
        PARENT_SCOPE)
    return()
  endif()
  set(url "${_attn_dep_${name}_url}")
  if(ATTN_FETCH_URL_${name})
    set(url "${ATTN_FETCH_URL_${name}}")
  endif()
  set(log "${CMAKE_BINARY_DIR}/attn-fetch-${name}.log")
  message(STATUS "attn: fetching ${name} ${_attn_dep_${name}_version} from ${url} (log: ${log})")
  set(script "${CMAKE_BINARY_DIR}/attn-fetch-${name}.cmake")
  file(WRITE "${script}" "include(FetchContent)\n"
       "FetchContent_Populate(attn_${name} QUIET URL [==[${url}]==]\n"
       "  SOURCE_DIR [==[${src}]==]\n"
       "  SUBBUILD_DIR [==[${base}/attn-${name}-subbuild]==]\n"
       "  BINARY_DIR [==[${base}/attn-${name}-unused]==])\n")
  execute_process(COMMAND ${CMAKE_COMMAND} -E env "CMAKE_GENERATOR=${CMAKE_GENERATOR}"
                          ${CMAKE_COMMAND} -P "${script}"
                  OUTPUT_FILE "${log}" ERROR_FILE "${log}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(STRINGS "${log}" reason REGEX "status_string:" LIMIT_COUNT 1)
    string(REGEX REPLACE ".*status_string: *" "" reason "${reason}")
    if(reason STREQUAL "")
      set(reason "exit status ${rc}")
    endif()
    set(${why_out} "downloading ${url} failed: ${reason} (log: ${log})" PARENT_SCOPE)
    return()
  endif()
  file(TOUCH "${src}/.attn-populated")
  set(${src_out} "${src}" PARENT_SCOPE)
endfunction()

# Adds the fetched ${name} to the build; the targets are those its own package
# would give (xsimd, Eigen3::Eigen, GTest::gtest_main, benchmark::benchmark).
function(_attn_add_fetched name src)
  set(bin "${CMAKE_BINARY_DIR}/_deps/attn-${name}-build")
  # The subprojects' option() calls take these normal variables.
  set(CMAKE_POLICY_DEFAULT_CMP0077 NEW)
  if(name STREQUAL "xsimd")
    # A real subproject, so that `cmake --install` installs xsimd beside attn
    # and the installed attnConfig.cmake finds it.
    set(BUILD_TESTS OFF)
    set(BUILD_BENCHMARK OFF)
    set(BUILD_EXAMPLES OFF)
    add_subdirectory("${src}" "${bin}")
  elseif(name STREQUAL "Eigen3")
    # Only the headers: Eigen's own CMakeLists configures BLAS, docs and tests.
    add_library(Eigen3::Eigen INTERFACE IMPORTED GLOBAL)
    set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${src}")
  elseif(name STREQUAL "GTest")
    set(INSTALL_GTEST OFF)
    set(BUILD_GMOCK OFF)
    set(gtest_force_shared_crt ON)
    add_subdirectory("${src}" "${bin}" EXCLUDE_FROM_ALL)
  elseif(name STREQUAL "benchmark")
    set(BENCHMARK_ENABLE_TESTING OFF)
    set(BENCHMARK_ENABLE_INSTALL OFF)
    set(BENCHMARK_ENABLE_GTEST_TESTS OFF)
    set(BENCHMARK_ENABLE_WERROR OFF)
    set(BENCHMARK_INSTALL_DOCS OFF)
    add_subdirectory("${src}" "${bin}" EXCLUDE_FROM_ALL)
  endif()
endfunction()

# Steps 1-4 above for one managed package; on success either find_package()
# will now find it, or the global property ATTN_FETCHED_<name> holds the
# version that was added to the build.
function(_attn_ensure_dependency name)
  get_property(fetched GLOBAL PROPERTY ATTN_FETCHED_${name})
  if(fetched)
    return()
  endif()
  # Find modules look their package up again (FindGTest asks for GTest in
  # config mode); those nested calls get a plain find_package().
  set_property(GLOBAL PROPERTY _ATTN_PROVIDING_${name} TRUE)
  _attn_ensure_dependency_steps(${name} ${ARGN})
  set_property(GLOBAL PROPERTY _ATTN_PROVIDING_${name} FALSE)
endfunction()

function(_attn_ensure_dependency_steps name)
  set(args ${ARGN})
  list(REMOVE_ITEM args REQUIRED QUIET)
  find_package(${name} ${args} QUIET BYPASS_PROVIDER)
  if(${name}_FOUND)
    return()
  endif()

  set(deb "${_attn_dep_${name}_deb}")
  _attn_apt_unavailable(no_apt)
  if(no_apt STREQUAL "")
    _attn_apt_install(${deb} installed)
    if(installed)
      find_package(${name} ${args} QUIET BYPASS_PROVIDER)
      if(${name}_FOUND)
        message(STATUS "attn: installed ${deb} for ${name}")
        return()
      endif()
      set(no_apt "installed ${deb}, yet find_package(${name}) still fails")
    else()
      set(no_apt "installing ${deb} failed, see ${CMAKE_BINARY_DIR}/attn-apt-get-${deb}.log")
    endif()
  endif()

  _attn_fetch_source(${name} src no_fetch)
  if(src)
    _attn_add_fetched(${name} "${src}")
    set_property(GLOBAL PROPERTY ATTN_FETCHED_${name} "${_attn_dep_${name}_version}")
    message(STATUS "attn: using ${name} ${_attn_dep_${name}_version} from ${src}")
    return()
  endif()

  message(FATAL_ERROR
          "attn: ${name} not found; install ${_attn_dep_${name}_advice}.\n"
          "  apt-get: ${no_apt}.\n"
          "  FetchContent: ${no_fetch}.")
endfunction()

# A macro, so that the variables find_package() sets reach the caller.
# `method` and `package` are macro arguments (text, not variables), so they
# survive the nested find_package() calls of a Find module or subproject.
macro(attn_provide_dependency method package)
  get_property(_attn_providing GLOBAL PROPERTY _ATTN_PROVIDING_${package})
  if("${package}" IN_LIST _attn_managed_dependencies AND NOT _attn_providing)
    _attn_ensure_dependency(${package} ${ARGN})
    get_property(_attn_fetched_version GLOBAL PROPERTY ATTN_FETCHED_${package})
  else()
    set(_attn_fetched_version "")
  endif()
  if(_attn_fetched_version)
    set(${package}_FOUND TRUE)
    set(${package}_VERSION "${_attn_fetched_version}")
  else()
    find_package(${package} ${ARGN} BYPASS_PROVIDER)
  endif()
endmacro()

cmake_language(SET_DEPENDENCY_PROVIDER attn_provide_dependency SUPPORTED_METHODS FIND_PACKAGE)
