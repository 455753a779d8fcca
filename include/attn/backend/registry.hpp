// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "attn/backend/scalar.hpp"
#include "attn/backend/xsimd.hpp"

namespace attn {

// What the core asks of a SIMD backend: a vector of `width` floats, the few
// operations the micro-kernels use, and the register blocking.
// Loads from fp16 and bf16 storage widen `width` values to floats.
template <class B>
concept simd_backend = requires(const float* src, const float16* half_src, const bfloat16* bf16_src,
                                const std::int8_t* int8_src, float* dst, typename B::vec v, float s) {
  { B::width } -> std::convertible_to<std::size_t>;
  { B::name } -> std::convertible_to<const char*>;
  { B::zero() } -> std::same_as<typename B::vec>;
  { B::broadcast(s) } -> std::same_as<typename B::vec>;
  { B::load(src) } -> std::same_as<typename B::vec>;
  { B::load(half_src) } -> std::same_as<typename B::vec>;
  { B::load(bf16_src) } -> std::same_as<typename B::vec>;
  { B::load(int8_src) } -> std::same_as<typename B::vec>;
  B::store(dst, v);
  { B::add(v, v) } -> std::same_as<typename B::vec>;
  { B::sub(v, v) } -> std::same_as<typename B::vec>;
  { B::mul(v, v) } -> std::same_as<typename B::vec>;
  { B::fma(v, v, v) } -> std::same_as<typename B::vec>;
  { B::max(v, v) } -> std::same_as<typename B::vec>;
  { B::exp2(v) } -> std::same_as<typename B::vec>;
  { B::tanh(v) } -> std::same_as<typename B::vec>;
  { B::reduce_add(v) } -> std::convertible_to<float>;
  { B::reduce_max(v) } -> std::convertible_to<float>;
  B::transpose(src, 1, dst, 1);  // a width x width block
  requires B::score_keys >= 1 && B::score_query_vecs >= 1;
  requires B::pv_rows >= 1 && B::pv_col_vecs >= 1 && B::pv_few_rows_col_vecs >= 1;
  requires B::dot_rows >= 1 && B::dot_keys >= 1;
  requires B::query_tile_rows >= 1 && B::kv_tile >= 1;
};

namespace backend {

// The best xsimd architecture the compile flags enable (e.g. fma3<avx2> with
// -mavx2 -mfma, avx512f with -mavx512f, sse2 on plain x86-64, neon64 on Arm).
using native = xsimd_backend<xsimd::default_arch>;

template <class... B>
struct list {};

namespace detail {
template <class List, bool Add, class B>
struct append_if {
  using type = List;
};
template <class... Bs, class B>
struct append_if<list<Bs...>, true, B> {
  using type = list<Bs..., B>;
};
// Adds xsimd_backend<Arch> when the compile flags enable Arch and it is not
// already the native backend.
template <class List, class Arch>
using add_arch = typename append_if<
    List, Arch::supported() && !std::is_same_v<Arch, xsimd::default_arch>, xsimd_backend<Arch>>::type;
}  // namespace detail

// Every backend this build can run, for typed tests and benchmarks: scalar,
// the native one, and the narrower x86 ones the flags also enable (an
// AVX-512 build also runs its AVX2 and SSE4.2 code paths).
using all = detail::add_arch<detail::add_arch<list<scalar, native>, xsimd::fma3<xsimd::avx2>>,
                             xsimd::sse4_2>;

}  // namespace backend

using default_backend = backend::native;

static_assert(simd_backend<backend::scalar>, "the scalar backend must model attn::simd_backend");
static_assert(simd_backend<backend::native>, "the xsimd backend must model attn::simd_backend");

}  // namespace attn
