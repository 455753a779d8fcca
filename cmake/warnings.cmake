# SPDX-FileCopyrightText: 2026 The attn authors
# SPDX-License-Identifier: Apache-2.0
#
# attn_warnings: the warning flags of attn's own tests, benchmarks and
# examples. Internal: never linked into attn::attn, never installed, so a
# user's build keeps its own warning policy.

add_library(attn_warnings INTERFACE)
target_compile_options(
  attn_warnings
  INTERFACE "$<$<CXX_COMPILER_ID:GNU,Clang,AppleClang,IntelLLVM>:-Wall;-Wextra;-Wpedantic>"
            "$<$<CXX_COMPILER_ID:MSVC>:/W4;/permissive->")

# GCC 12 reports -Wmaybe-uninitialized inside its own avx512fintrin.h for every
# xsimd AVX-512 batch (the _mm512_undefined idiom): a known false positive that
# would bury real warnings, so it is off for GCC.
target_compile_options(attn_warnings INTERFACE "$<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>")
