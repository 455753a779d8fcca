// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <tuple>
#include <utility>

#include "attn/backend/scalar.hpp"
#include "attn/core/tensor.hpp"

// Score modifiers (DESIGN §1 step 2-3, FlexAttention's score_mod): a modifier
// rewrites the scores of one S^T tile after the score micro-kernel and
// before the mask, on full and partial tiles alike. It works on the whole
// tile so that built-ins run vectorised over the backend B.
namespace attn {

// One S^T tile of a work item, as a modifier sees it. Scores are in log2
// units: the core folds scale * log2(e) into the queries, so a modifier that
// adds a natural-log term t adds t * log2(e) (attn::log2e below).
// Column c is query position i0 + c / heads and query head h0 + c % heads;
// columns in [columns(), ldq) are padding a modifier may leave alone.
struct score_tile_ref {
  float* st;                 // (keys, ldq) S^T: st[j * ldq + c] is key j0 + j, column c
  index_t ldq;
  index_t j0, keys;          // keys [j0, j0 + keys)
  index_t b;                 // batch
  index_t i0, positions;     // query positions [i0, i0 + positions)
  index_t h0, heads;         // query heads [h0, h0 + heads)
  index_t offset;            // Nk - Nq: query i sits at key position i + offset

  constexpr index_t columns() const { return positions * heads; }
  constexpr index_t position(index_t c) const { return i0 + c / heads; }
  constexpr index_t head(index_t c) const { return h0 + c % heads; }
};

template <class M>
concept score_modifier = requires(const M& m, const score_tile_ref& t) {
  m.template apply<backend::scalar>(t);
};

// Leaves scores alone; the core skips the call entirely.
struct no_modifier {
  template <class B>
  void apply(const score_tile_ref&) const {}
};

// Modifiers applied in order (DESIGN §1: softcap, then additive terms).
template <score_modifier... Ms>
struct modifier_chain {
  std::tuple<Ms...> parts;
  template <class B>
  void apply(const score_tile_ref& t) const {
    std::apply([&](const auto&... m) { (m.template apply<B>(t), ...); }, parts);
  }
};

template <score_modifier... Ms>
modifier_chain<Ms...> chain(Ms... ms) {
  return {std::tuple<Ms...>{std::move(ms)...}};
}

static_assert(score_modifier<no_modifier>, "no_modifier must model attn::score_modifier");

}  // namespace attn
