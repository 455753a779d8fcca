// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <concepts>
#include <limits>
#include <optional>
#include <utility>

#include "attn/core/tensor.hpp"

// A variant tells the core three things (STYLE habit 3): which keys a query
// tile may see at all, which KV tiles inside that range need an element mask,
// and the mask itself. The core never evaluates the mask on a full tile and
// never visits an empty one.
namespace attn {

enum class tile_kind { empty, partial, full };

// The queries of one work item: positions [i_begin, i_end) of batch b, query
// heads [h_begin, h_end). nq and nk are the sequence lengths of the problem.
struct query_block {
  index_t b;
  index_t i_begin, i_end;
  index_t h_begin, h_end;
  index_t nq, nk;
  // Bottom-right alignment: query i sits at key position i + offset().
  constexpr index_t offset() const { return nk - nq; }
};

// The shape of a problem, for masks that hold per-problem data (document
// ids, precomputed blocks) and check it before a call: see check_mask.
struct problem_shape {
  index_t batch, hq, nq, nk;
};

// [begin, end) of keys.
struct key_range {
  index_t begin, end;
};

template <class M>
concept mask = requires(const M& m, const query_block& qb, index_t x) {
  { m.keys(qb) } -> std::same_as<key_range>;               // superset of allowed keys
  { m.classify(qb, x, x) } -> std::same_as<tile_kind>;     // tile [j0, j1) of keys
  { m.allowed(x, x, x, x) } -> std::convertible_to<bool>;  // (b, h, i, j)
};

// [begin, end) of query positions.
struct position_range {
  index_t begin, end;
};

// A mask whose allowed pairs depend only on (i, j) and, for each key j, form
// one run of query positions: `positions(j)` names it, and partial tiles are
// masked a key row at a time instead of pair by pair. It must agree with
// allowed(); tests compare every mask with the oracle.
template <class M>
concept band_mask = mask<M> && requires(const M& m, index_t j) {
  { m.positions(j) } -> std::same_as<position_range>;
};

// Every key, every tile full.
struct no_mask {
  key_range keys(const query_block& qb) const { return {0, qb.nk}; }
  tile_kind classify(const query_block&, index_t, index_t) const { return tile_kind::full; }
  constexpr bool allowed(index_t, index_t, index_t, index_t) const { return true; }
};

// A mask that lays tokens out in tiles of its own (neighborhood attention's
// spatial tiles) asks the work split for query tiles of `positions` tokens and
// KV tiles of `keys` keys, both aligned to multiples of their size.
struct tile_shape {
  index_t positions, keys;
};
template <class M>
std::optional<tile_shape> tile_shape_of(const M& m) {
  if constexpr (requires { { m.tile_shape() } -> std::same_as<tile_shape>; })
    return m.tile_shape();
  else
    return std::nullopt;
}

// Runs m.check(shape) when the mask has one (it throws attn::error on a
// mismatch); the public entry calls it before any work starts.
template <class M>
void check_mask(const M& m, const problem_shape& s) {
  if constexpr (requires { m.check(s); }) m.check(s);
}

// ---------------------------------------------------------------------------
// Composition (FlexAttention's model): a & b allows a pair iff both do, a | b
// iff either does. Classification composes too: an intersection is empty if
// either side is and full only if both are; a union the other way round.
// The intersection of two band masks is a band (the runs intersect).

template <mask A, mask B>
struct mask_and {
  A a;
  B b;

  key_range keys(const query_block& qb) const {
    const key_range x = a.keys(qb), y = b.keys(qb);
    const index_t begin = std::max(x.begin, y.begin);
    return {begin, std::max(begin, std::min(x.end, y.end))};
  }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const tile_kind x = a.classify(qb, j0, j1);
    if (x == tile_kind::empty) return x;
    const tile_kind y = b.classify(qb, j0, j1);
    if (y == tile_kind::empty) return y;
    return x == tile_kind::full && y == tile_kind::full ? tile_kind::full : tile_kind::partial;
  }
  constexpr bool allowed(index_t bi, index_t h, index_t i, index_t j) const {
    return a.allowed(bi, h, i, j) && b.allowed(bi, h, i, j);
  }
  void check(const problem_shape& s) const {
    check_mask(a, s);
    check_mask(b, s);
  }
  constexpr position_range positions(index_t j) const
    requires band_mask<A> && band_mask<B>
  {
    const position_range x = a.positions(j), y = b.positions(j);
    const index_t begin = std::max(x.begin, y.begin);
    return {begin, std::max(begin, std::min(x.end, y.end))};
  }
};

template <mask A, mask B>
struct mask_or {
  A a;
  B b;

  key_range keys(const query_block& qb) const {
    const key_range x = a.keys(qb), y = b.keys(qb);
    if (x.end <= x.begin) return y;
    if (y.end <= y.begin) return x;
    return {std::min(x.begin, y.begin), std::max(x.end, y.end)};
  }
  // Keys outside a side's keys() are disallowed by that side, so a side is
  // asked only about the part of the tile inside its range.
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const tile_kind x = clipped(a, qb, j0, j1);
    if (x == tile_kind::full) return x;
    const tile_kind y = clipped(b, qb, j0, j1);
    if (y == tile_kind::full) return y;
    return x == tile_kind::empty && y == tile_kind::empty ? tile_kind::empty : tile_kind::partial;
  }
  constexpr bool allowed(index_t bi, index_t h, index_t i, index_t j) const {
    return a.allowed(bi, h, i, j) || b.allowed(bi, h, i, j);
  }
  void check(const problem_shape& s) const {
    check_mask(a, s);
    check_mask(b, s);
  }

 private:
  template <class M>
  static tile_kind clipped(const M& m, const query_block& qb, index_t j0, index_t j1) {
    const key_range r = m.keys(qb);
    const index_t c0 = std::max(j0, r.begin), c1 = std::min(j1, r.end);
    if (c1 <= c0) return tile_kind::empty;
    const tile_kind kind = m.classify(qb, c0, c1);
    return kind == tile_kind::full && (c0 != j0 || c1 != j1) ? tile_kind::partial : kind;
  }
};

template <mask A, mask B>
mask_and<A, B> operator&(const A& a, const B& b) {
  return {a, b};
}
template <mask A, mask B>
mask_or<A, B> operator|(const A& a, const B& b) {
  return {a, b};
}

static_assert(mask<no_mask>, "no_mask must model attn::mask");

}  // namespace attn
