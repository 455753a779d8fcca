// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "attn/core/element.hpp"

namespace attn::backend {

namespace detail {

// a * b + c rounded once. xsimd 8.1 has no AVX-512 fma kernel (it multiplies,
// then adds), so that one ISA is fused here; every other arch uses xsimd's.
template <class Arch>
inline xsimd::batch<float, Arch> fused_multiply_add(const xsimd::batch<float, Arch>& a,
                                                    const xsimd::batch<float, Arch>& b,
                                                    const xsimd::batch<float, Arch>& c,
                                                    xsimd::generic) {
  return xsimd::fma(a, b, c);
}
#if XSIMD_WITH_AVX512F
template <class Arch>
inline xsimd::batch<float, Arch> fused_multiply_add(const xsimd::batch<float, Arch>& a,
                                                    const xsimd::batch<float, Arch>& b,
                                                    const xsimd::batch<float, Arch>& c,
                                                    xsimd::avx512f) {
  return _mm512_fmadd_ps(a, b, c);
}
#endif

// Lane i of the result = the sum of the lanes of rows[i], i < the width.
// xsimd's haddp does this on every arch but AVX-512, where xsimd 8.1 returns
// the sums in a permuted lane order; that one ISA has its own tree here.
template <class Arch>
inline xsimd::batch<float, Arch> sum_each(const xsimd::batch<float, Arch>* rows, xsimd::generic) {
  return xsimd::haddp(rows);
}
#if XSIMD_WITH_AVX512F
template <class Arch>
inline xsimd::batch<float, Arch> sum_each(const xsimd::batch<float, Arch>* rows, xsimd::avx512f) {
  // Per 128-bit chunk: pairs of rows, then quadruples (4 sums of a chunk's
  // lanes); then the chunks of 4 quadruples are transposed and added.
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = rows[2 * i], b = rows[2 * i + 1];
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  for (int i = 0; i < 4; ++i) {
    const __m512 a = pairs[2 * i], b = pairs[2 * i + 1];
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  const __m512 q01 = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 q23 = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(q01, q23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(q01, q23, _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif

// A width x width block of floats transposed: dst row i, lane j = src row
// j, lane i (rows src_stride and dst_stride floats apart). Generic: element
// by element; AVX (8 x 8: unpack, shuffle, then swap 128-bit halves) and
// AVX-512 (four 8 x 8 blocks) in registers.
template <class Arch>
inline void transpose_block(const float* src, std::ptrdiff_t src_stride, float* dst, std::ptrdiff_t dst_stride,
                            xsimd::generic) {
  constexpr std::ptrdiff_t n = xsimd::batch<float, Arch>::size;
  for (std::ptrdiff_t i = 0; i < n; ++i)
    for (std::ptrdiff_t j = 0; j < n; ++j) dst[i * dst_stride + j] = src[j * src_stride + i];
}
#if XSIMD_WITH_AVX
inline void transpose_8x8(const float* src, std::ptrdiff_t src_stride, float* dst, std::ptrdiff_t dst_stride) {
  __m256 r[8], pairs[8], quads[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 4; ++i) {  // rows 2i, 2i+1 interleaved: lanes 0-1 and 4-5 (lo), 2-3 and 6-7 (hi)
    pairs[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    pairs[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h)  // rows 4h..4h+3: quads[4h + l] holds lane l (and l + 4) of each
    for (int i = 0; i < 2; ++i) {
      const __m256 a = pairs[4 * h + i], b = pairs[4 * h + 2 + i];
      quads[4 * h + 2 * i] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
      quads[4 * h + 2 * i + 1] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2));
    }
  for (int l = 0; l < 4; ++l) {
    _mm256_storeu_ps(dst + l * dst_stride, _mm256_permute2f128_ps(quads[l], quads[4 + l], 0x20));
    _mm256_storeu_ps(dst + (l + 4) * dst_stride, _mm256_permute2f128_ps(quads[l], quads[4 + l], 0x31));
  }
}
template <class Arch>
inline void transpose_block(const float* src, std::ptrdiff_t src_stride, float* dst, std::ptrdiff_t dst_stride,
                            xsimd::avx) {
  transpose_8x8(src, src_stride, dst, dst_stride);
}
#endif
#if XSIMD_WITH_AVX512F
template <class Arch>
inline void transpose_block(const float* src, std::ptrdiff_t src_stride, float* dst, std::ptrdiff_t dst_stride,
                            xsimd::avx512f) {
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 16; j += 8)
      transpose_8x8(src + j * src_stride + i, src_stride, dst + i * dst_stride + j, dst_stride);
}
#endif

// `width` 16-bit or int8 values from p widened to floats. Generic: lane by
// lane; SSE4.1, AVX2 (with F16C for fp16) and AVX-512 convert a vector in
// one or two instructions (bf16 is the upper half of a float: zero-extend
// and shift; int8 is sign-extended to int32, then converted).
template <class Arch, class T>
inline xsimd::batch<float, Arch> widen(const T* p, xsimd::generic) {
  constexpr std::size_t n = xsimd::batch<float, Arch>::size;
  alignas(64) float lanes[n];
  for (std::size_t i = 0; i < n; ++i) lanes[i] = to_float(p[i]);
  return xsimd::batch<float, Arch>::load_aligned(lanes);
}
#if XSIMD_WITH_SSE4_1
template <class Arch>
inline xsimd::batch<float, Arch> widen(const std::int8_t* p, xsimd::sse4_1) {
  std::int32_t bytes;
  std::memcpy(&bytes, p, sizeof(bytes));
  return _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(bytes)));
}
#endif
#if XSIMD_WITH_AVX2
template <class Arch>
inline xsimd::batch<float, Arch> widen(const std::int8_t* p, xsimd::avx2) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
template <class Arch>
inline xsimd::batch<float, Arch> widen(const bfloat16* p, xsimd::avx2) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
#if defined(__F16C__)
template <class Arch>
inline xsimd::batch<float, Arch> widen(const float16* p, xsimd::avx2) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
#endif
#if XSIMD_WITH_AVX512F
template <class Arch>
inline xsimd::batch<float, Arch> widen(const std::int8_t* p, xsimd::avx512f) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
template <class Arch>
inline xsimd::batch<float, Arch> widen(const float16* p, xsimd::avx512f) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
template <class Arch>
inline xsimd::batch<float, Arch> widen(const bfloat16* p, xsimd::avx512f) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
#endif

}  // namespace detail

// Register blocking per xsimd architecture. The generic entry suits any ISA
// with 16 vector registers; specialise for an ISA only where a benchmark shows
// that another blocking pays.
template <class Arch>
struct xsimd_blocking {
  static constexpr int score_keys = 6;        // 6 x 2 accumulators + 2 loads
  static constexpr int score_query_vecs = 2;  //   = 14 of 16 registers
  static constexpr int dot_rows = 4;          // decode tiles: 4 x 2 accumulators, reduced 8 at a
  static constexpr int dot_keys = 2;          //   time (one transpose-add tree per block)
  static constexpr int pv_rows = 6;
  static constexpr int pv_col_vecs = 2;
  static constexpr int pv_few_rows_col_vecs = 3;  // decode tiles: 4 x 3 accumulators + 3 loads + 1
  static constexpr int query_tile_rows = 96;
  static constexpr int kv_tile = 128;
};

// AVX-512 has 32 vector registers: wider P.V and decode dot blocks pay
// (decode +20% compute-bound, prefill unchanged; bench/softmax_bench.cpp).
template <class Arch>
  requires std::is_base_of_v<xsimd::avx512f, Arch>
struct xsimd_blocking<Arch> {
  static constexpr int score_keys = 6;
  static constexpr int score_query_vecs = 2;
  static constexpr int dot_rows = 4;          // 4 x 4 accumulators: one 16-lane
  static constexpr int dot_keys = 4;          //   transpose-add tree per block
  static constexpr int pv_rows = 6;           // 6 x 4 accumulators
  static constexpr int pv_col_vecs = 4;
  static constexpr int pv_few_rows_col_vecs = 6;  // 4 x 6 accumulators + 6 loads + 1
  static constexpr int query_tile_rows = 96;
  static constexpr int kv_tile = 128;
};

// Integer pair products for int8 keys (the decode score kernel's
// score_dot_block over int16 queries) on AVX2: K sign-extended to int16,
// queries rounded to int16, vpmaddwd multiplies 16 int16 pairs and sums each
// adjacent pair into one of 8 int32 lanes: one multiply and one add replace
// two FMAs and the widening of 16 keys to floats (int8 decode, 1 thread:
// 7% faster). Not on AVX-512: the same kernel there (vpmaddwd, or VNNI's
// vpdpwssd) was 4-8% slower than widening to floats on this machine's Zen 4
// (README, "Reduced precision"). Other archs run the float kernel.
template <class Arch>
struct xsimd_pairs {};
#if XSIMD_WITH_AVX2
template <class Arch>
  requires(std::is_base_of_v<xsimd::avx2, Arch> && !std::is_base_of_v<xsimd::avx512f, Arch>)
struct xsimd_pairs<Arch> {
  using pairs = __m256i;  // 16 int16, or 8 int32 sums
  static pairs zero_pairs() { return _mm256_setzero_si256(); }
  static pairs load_pairs(const std::int8_t* p) {  // 16 int8 values
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static pairs load_low_pairs(const std::int8_t* p) {  // 8 int8 values, then 8 zeros
    return _mm256_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static pairs load_pairs(const std::int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static pairs dot_pairs(pairs a, pairs b, pairs sums) { return _mm256_add_epi32(sums, _mm256_madd_epi16(a, b)); }
  static xsimd::batch<float, Arch> sums_to_float(pairs sums) { return _mm256_cvtepi32_ps(sums); }
};
#endif

// One backend for every xsimd architecture: the vector is
// xsimd::batch<float, Arch>, the exponential a Cephes-style polynomial.
template <class Arch>
struct xsimd_backend : xsimd_blocking<Arch>, xsimd_pairs<Arch> {
  using arch = Arch;
  using vec = xsimd::batch<float, Arch>;
  using ivec = xsimd::batch<std::int32_t, Arch>;
  static constexpr std::size_t width = vec::size;
  static constexpr const char* name = Arch::name();

  static vec zero() { return vec(0.0f); }
  static vec broadcast(float x) { return vec(x); }
  static vec load(const float* p) { return vec::load_unaligned(p); }
  // `width` fp16 or bf16 values widened to floats (exactly).
  static vec load(const float16* p) { return detail::widen<Arch>(p, Arch{}); }
  static vec load(const bfloat16* p) { return detail::widen<Arch>(p, Arch{}); }
  // `width` int8 values as floats (exactly; the row's scale is applied by the core).
  static vec load(const std::int8_t* p) { return detail::widen<Arch>(p, Arch{}); }
  static void store(float* p, vec x) { x.store_unaligned(p); }
  static vec add(vec a, vec b) { return a + b; }
  static vec sub(vec a, vec b) { return a - b; }
  static vec mul(vec a, vec b) { return a * b; }
  static vec fma(vec a, vec b, vec c) { return detail::fused_multiply_add(a, b, c, Arch{}); }
  // May drop a NaN operand: the core never relies on max to propagate NaN
  // (a NaN score reaches the output through exp2 and the sums).
  static vec max(vec a, vec b) { return xsimd::max(a, b); }
  static vec tanh(vec x) { return xsimd::tanh(x); }  // softcap

  // 2^x with a max relative error of a few ulp on [-126, 127]; -inf and
  // anything below -126.5 give exactly 0 (masked scores vanish exactly), NaN
  // gives NaN, x > 127.5 gives +inf.
  static vec exp2(vec x) {
    // Clamp with the argument second so that a NaN passes through.
    x = xsimd::select(x < vec(-127.0f), vec(-127.0f), x);
    x = xsimd::select(x > vec(128.0f), vec(128.0f), x);
    const ivec n = xsimd::nearbyint_as_int(x);
    const vec f = x - xsimd::to_float(n);  // f in [-0.5, 0.5]
    // Minimax polynomial for 2^f on [-0.5, 0.5] (Cephes exp2f coefficients).
    vec p(1.535336188319500e-4f);
    p = xsimd::fma(p, f, vec(1.339887440266574e-3f));
    p = xsimd::fma(p, f, vec(9.618437357674640e-3f));
    p = xsimd::fma(p, f, vec(5.550332471162809e-2f));
    p = xsimd::fma(p, f, vec(2.402264791363012e-1f));
    p = xsimd::fma(p, f, vec(6.931472028550421e-1f));
    p = xsimd::fma(p, f, vec(1.0f));
    // 2^n built in the exponent field: n = -127 gives the bit pattern of 0,
    // n = 128 that of +inf.
    const vec scale = xsimd::bitwise_cast<vec>((n + ivec(127)) << 23);
    return p * scale;
  }

  static float reduce_add(vec x) { return xsimd::hadd(x); }
  // Lane i of the result is the sum of the lanes of rows[i], i < width: a
  // transpose-add tree, about 2 shuffles and 1 add per vector instead of a
  // whole reduction each.
  static vec reduce_add_lanes(const vec* rows) { return detail::sum_each(rows, Arch{}); }
  // dst (width, width) = the transpose of src (width, width), rows `stride` floats apart.
  static void transpose(const float* src, std::ptrdiff_t src_stride, float* dst, std::ptrdiff_t dst_stride) {
    detail::transpose_block<Arch>(src, src_stride, dst, dst_stride, Arch{});
  }
  static float reduce_max(vec x) {
    alignas(64) float lanes[width];
    x.store_unaligned(lanes);
    float m = lanes[0];
    for (std::size_t i = 1; i < width; ++i) m = (lanes[i] > m || lanes[i] != lanes[i]) ? lanes[i] : m;
    return m;
  }
};

}  // namespace attn::backend
