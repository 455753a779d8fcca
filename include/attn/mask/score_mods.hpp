// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "attn/core/online_softmax.hpp"
#include "attn/core/score_mod.hpp"
#include "attn/core/tensor.hpp"

// The built-in score modifiers (DESIGN §1 steps 2-3), each vectorised over
// the backend. Scores arrive in log2 units (see attn::score_tile_ref); each
// built-in converts its natural-log definition with log2(e).
namespace attn {

// Runs per-vector score transforms over a tile in one pass: for each key row
// and each vector of columns, x <- f(x, first column, key) for each f in
// order. A transform comes from a modifier's lanes<B>(tile).
template <class B, class... F>
void map_scores(const score_tile_ref& t, const F&... f) {
  constexpr index_t W = static_cast<index_t>(B::width);
  for (index_t j = 0; j < t.keys; ++j) {
    float* row = t.st + j * t.ldq;
    const auto key = B::broadcast(static_cast<float>(t.j0 + j));
    for (index_t c = 0; c < t.ldq; c += W) {
      auto x = B::load(row + c);
      ((x = f(x, c, key)), ...);
      B::store(row + c, x);
    }
  }
}

// Softcap (Gemma 2, Grok): s <- cap * tanh(s / cap). With t = s log2(e) and
// c = cap log2(e) it reads the same in log2 units: t <- c tanh(t / c).
struct softcap {
  float cap;  // > 0

  template <class B>
  auto lanes(const score_tile_ref&) const {
    const float c = cap * detail::log2e;
    return [c = B::broadcast(c), inverse = B::broadcast(1.0f / c)](auto x, index_t, auto) {
      return B::mul(c, B::tanh(B::mul(x, inverse)));
    };
  }
  template <class B>
  void apply(const score_tile_ref& t) const {
    map_scores<B>(t, lanes<B>(t));
  }
};

// ALiBi (Press et al.): s <- s - slope_h |i + offset - j|, one slope per
// query head (attn::alibi_slopes gives the standard ones).
struct alibi {
  const float* slopes;  // (Hq)

  // Per column: -slope * log2(e) and the key position of its query, valid
  // until the next call on this thread.
  template <class B>
  auto lanes(const score_tile_ref& t) const {
    thread_local std::vector<float> columns;
    columns.assign(static_cast<std::size_t>(2 * t.ldq), 0.0f);
    float* neg_slope = columns.data();
    float* position = columns.data() + t.ldq;
    for (index_t c = 0; c < t.columns(); ++c) {
      neg_slope[c] = -slopes[t.head(c)] * detail::log2e;
      position[c] = static_cast<float>(t.position(c) + t.offset);
    }
    return [neg_slope, position](auto x, index_t c, auto key) {
      const auto distance = B::sub(B::load(position + c), key);
      const auto abs_distance = B::max(distance, B::sub(B::zero(), distance));
      return B::fma(B::load(neg_slope + c), abs_distance, x);
    };
  }
  template <class B>
  void apply(const score_tile_ref& t) const {
    map_scores<B>(t, lanes<B>(t));
  }
};

// The standard ALiBi slopes for any head count: for n a power of two,
// 2^(-8k/n), k = 1..n; otherwise those of the power of two p below n, then
// every other slope of 2p for the remaining n - p heads.
inline std::vector<float> alibi_slopes(index_t heads) {
  auto power_of_two = [](index_t n) {
    std::vector<float> s(static_cast<std::size_t>(n));
    for (index_t k = 1; k <= n; ++k) s[k - 1] = std::exp2(-8.0f * static_cast<float>(k) / static_cast<float>(n));
    return s;
  };
  index_t p = 1;
  while (2 * p <= heads) p *= 2;
  std::vector<float> slopes = power_of_two(p);
  if (p < heads) {
    const std::vector<float> finer = power_of_two(2 * p);
    for (index_t k = 0; k < heads - p; ++k) slopes.push_back(finer[2 * k]);
  }
  slopes.resize(static_cast<std::size_t>(std::max<index_t>(heads, 0)));
  return slopes;
}

// Additive bias tensor (B|1, Hq|1, Nq, Nk), any strides (a 1 extent is
// broadcast): s <- s + bias[b][h][i][j]. -inf entries remove pairs.
struct score_bias {
  view4<const float> bias;

  template <class B>
  void apply(const score_tile_ref& t) const {
    const index_t bb = bias.extent[0] == 1 ? 0 : t.b;
    for (index_t c = 0; c < t.columns(); ++c) {
      const index_t h = bias.extent[1] == 1 ? 0 : t.head(c);
      const float* src = &bias(bb, h, t.position(c), t.j0);
      const index_t step = bias.stride[3];
      for (index_t j = 0; j < t.keys; ++j) t.st[j * t.ldq + c] += detail::log2e * src[j * step];
    }
  }
};

// A user score function (s, b, h, i, j) -> s in natural-log units
// (FlexAttention's score_mod), called once per pair of every visited tile,
// including pairs the mask then removes: it must accept any (b, h, i, j).
// Each column's head and position are looked up once per tile, so the inner
// loop over a key row is the call alone.
template <class F>
struct score_function {
  F fn;

  template <class B>
  void apply(const score_tile_ref& t) const {
    thread_local std::vector<index_t> columns;
    columns.resize(static_cast<std::size_t>(2 * t.columns()));
    index_t* head = columns.data();
    index_t* position = columns.data() + t.columns();
    for (index_t c = 0; c < t.columns(); ++c) {
      head[c] = t.head(c);
      position[c] = t.position(c);
    }
    for (index_t j = 0; j < t.keys; ++j) {
      float* row = t.st + j * t.ldq;
      const index_t key = t.j0 + j;
      for (index_t c = 0; c < t.columns(); ++c)
        row[c] = detail::log2e * fn(row[c] * detail::ln2, t.b, head[c], position[c], key);
    }
  }
};

template <class F>
score_function<F> score_mod_from(F fn) {
  return {std::move(fn)};
}

static_assert(score_modifier<softcap> && score_modifier<alibi> && score_modifier<score_bias>,
              "built-in modifiers must model attn::score_modifier");

}  // namespace attn
