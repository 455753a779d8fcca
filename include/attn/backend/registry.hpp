// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstddef>

#include "attn/backend/scalar.hpp"
#include "attn/backend/xsimd.hpp"

namespace attn {

// What the core asks of a SIMD backend: a vector of `width` floats, the few
// operations the micro-kernels use, and the register blocking.
template <class B>
concept simd_backend = requires(const float* src, float* dst, typename B::vec v, float s) {
  { B::width } -> std::convertible_to<std::size_t>;
  { B::name } -> std::convertible_to<const char*>;
  { B::zero() } -> std::same_as<typename B::vec>;
  { B::broadcast(s) } -> std::same_as<typename B::vec>;
  { B::load(src) } -> std::same_as<typename B::vec>;
  B::store(dst, v);
  { B::add(v, v) } -> std::same_as<typename B::vec>;
  { B::sub(v, v) } -> std::same_as<typename B::vec>;
  { B::mul(v, v) } -> std::same_as<typename B::vec>;
  { B::fma(v, v, v) } -> std::same_as<typename B::vec>;
  { B::max(v, v) } -> std::same_as<typename B::vec>;
  { B::exp2(v) } -> std::same_as<typename B::vec>;
  { B::reduce_add(v) } -> std::convertible_to<float>;
  { B::reduce_max(v) } -> std::convertible_to<float>;
  requires B::score_keys >= 1 && B::score_query_vecs >= 1;
  requires B::pv_rows >= 1 && B::pv_col_vecs >= 1;
  requires B::dot_rows >= 1 && B::dot_keys >= 1;
  requires B::query_tile_rows >= 1 && B::kv_tile >= 1;
};

namespace backend {

// The best xsimd architecture the compile flags enable (e.g. fma3<avx2> with
// -mavx2 -mfma, avx512f with -mavx512f, sse2 on plain x86-64, neon64 on Arm).
using native = xsimd_backend<xsimd::default_arch>;

// Every backend this build can run, for typed tests and benchmarks.
template <class... B>
struct list {};
using all = list<scalar, native>;

}  // namespace backend

using default_backend = backend::native;

static_assert(simd_backend<backend::scalar>, "the scalar backend must model attn::simd_backend");
static_assert(simd_backend<backend::native>, "the xsimd backend must model attn::simd_backend");

}  // namespace attn
