// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>
#include <utility>

#include "attn/core/element.hpp"
#include "attn/core/tensor.hpp"

// Online softmax as named tile operations over the S^T tile (keys x queries):
// columns are queries, so every row statistic is a vertical, lane-parallel
// reduction. Scores arrive in log2 units (scale * log2(e) is folded into the
// packed queries), so the exponential is exp2.
namespace attn::detail {

// Running state per query: max m (log2 units), sum l, and the factor alpha by
// which this tile rescales the accumulator. m starts at the lowest finite
// float rather than -inf so that a row with nothing allowed yet needs no
// special case: exp2(-inf - lowest) = 0.
inline constexpr float lowest_score = std::numeric_limits<float>::lowest();
inline constexpr float log2e = std::numbers::log2e_v<float>;
inline constexpr float ln2 = std::numbers::ln2_v<float>;

// m_new = max(m, column max of S); alpha = exp2(m - m_new);
// S <- P = exp2(S - m_new); l <- alpha * l + column sum of P.
template <class B>
inline void softmax_update(float* st, index_t keys, index_t ldq,  // st: (keys, ldq)
                           float* m, float* l, float* alpha) {    // (ldq) each
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  for (index_t c = 0; c < ldq; c += W) {
    vec tile_max = B::broadcast(lowest_score);
    for (index_t j = 0; j < keys; ++j) tile_max = B::max(tile_max, B::load(st + j * ldq + c));
    const vec m_old = B::load(m + c);
    const vec m_new = B::max(m_old, tile_max);
    const vec a = B::exp2(B::sub(m_old, m_new));
    vec sum = B::zero();
    for (index_t j = 0; j < keys; ++j) {
      const vec p = B::exp2(B::sub(B::load(st + j * ldq + c), m_new));
      B::store(st + j * ldq + c, p);
      sum = B::add(sum, p);
    }
    B::store(m + c, m_new);
    B::store(alpha + c, a);
    B::store(l + c, B::fma(B::load(l + c), a, sum));
  }
}

// A whole row of n scores at once (no running state; n a multiple of W):
// s <- p = exp2(s - m) with m = max(row max, lowest_score), so a row of
// -inf gives p = 0 and l = 0; returns {m, l = sum of p}.
template <class B>
inline std::pair<float, float> softmax_row(float* s, index_t n) {
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec row_max = B::broadcast(lowest_score);
  for (index_t j = 0; j < n; j += W) row_max = B::max(row_max, B::load(s + j));
  const float m = B::reduce_max(row_max);
  const vec mv = B::broadcast(m);
  vec sum = B::zero();
  for (index_t j = 0; j < n; j += W) {
    const vec p = B::exp2(B::sub(B::load(s + j), mv));
    B::store(s + j, p);
    sum = B::add(sum, p);
  }
  return {m, B::reduce_add(sum)};
}

// dst[d * dst_stride] <- factor * src[d * src_stride], d < n, converted
// between storage types: a vector at a time (widening 16-bit or int8 loads)
// where both rows have unit stride and dst is fp32, else element by element.
// dst may be src.
template <class B, class S, class D>
inline void scale_row(const S* src, index_t src_stride, D* dst, index_t dst_stride, index_t n, float factor) {
  index_t d = 0;
  if constexpr (std::is_same_v<D, float>)
    if (src_stride == 1 && dst_stride == 1) {
      constexpr index_t W = static_cast<index_t>(B::width);
      const auto f = B::broadcast(factor);
      for (; d + W <= n; d += W) B::store(dst + d, B::mul(f, B::load(src + d)));
    }
  for (; d < n; ++d) dst[d * dst_stride] = from_float<D>(to_float(src[d * src_stride]) * factor);
}
// row <- factor * row over n floats.
template <class B>
inline void scale_row(float* row, index_t n, float factor) {
  scale_row<B>(row, 1, row, 1, n, factor);
}

// o row r <- alpha[r] * o row r, skipped where alpha is exactly 1.
template <class B>
inline void rescale_rows(float* o, index_t ldo, index_t rows, index_t dv, const float* alpha) {
  for (index_t r = 0; r < rows; ++r)
    if (alpha[r] != 1.0f) scale_row<B>(o + r * ldo, dv, alpha[r]);
}

// Natural-log lse and 1/l of a finished row; a row with no allowed key has
// l = 0 and gives lse = -inf, inverse 0 (its output is 0, never NaN).
struct row_result {
  float lse;
  float inverse_sum;
};
inline row_result finish_row(float m, float l) {
  if (l == 0.0f) return {-std::numeric_limits<float>::infinity(), 0.0f};
  return {(m + std::log2(l)) * ln2, 1.0f / l};
}

}  // namespace attn::detail
