// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <concepts>
#include <limits>
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

// Key j is allowed for query i iff j <= i + offset (bottom-right aligned,
// FlashAttention >= 2.1): with Nq = 1 the query sees the whole cache.
struct causal_mask {
  index_t offset;  // Nk - Nq

  key_range keys(const query_block& qb) const {
    return {0, std::clamp<index_t>(qb.i_end - 1 + offset + 1, 0, qb.nk)};
  }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    if (j0 > qb.i_end - 1 + offset) return tile_kind::empty;
    if (j1 - 1 <= qb.i_begin + offset) return tile_kind::full;
    return tile_kind::partial;
  }
  constexpr bool allowed(index_t, index_t, index_t i, index_t j) const { return j <= i + offset; }
  constexpr position_range positions(index_t j) const {
    return {j - offset, std::numeric_limits<index_t>::max() / 4};
  }
};

// Sliding window (DESIGN §2): key j is allowed for query i iff
//   i + offset - left <= j <= i + offset + right   (left/right < 0: unbounded),
// or, with sink tokens (StreamingLLM), j < sink_tokens and j <= i + offset + right.
// window{-1, 0} is causal; Mistral's "window W" is window{W - 1, 0}.
struct window_mask {
  index_t offset;           // Nk - Nq
  index_t left, right;      // < 0: unbounded on that side
  index_t sink_tokens = 0;  // keys [0, sink_tokens) stay visible

  static constexpr index_t unbounded = std::numeric_limits<index_t>::max() / 4;
  constexpr index_t lo(index_t i) const { return left < 0 ? -unbounded : i + offset - left; }
  constexpr index_t hi(index_t i) const { return right < 0 ? unbounded : i + offset + right; }

  key_range keys(const query_block& qb) const {
    const index_t last = std::min(hi(qb.i_end - 1), qb.nk - 1);  // furthest key any row sees
    const index_t first = sink_tokens > 0 ? 0 : std::max<index_t>(lo(qb.i_begin), 0);
    return {std::min(first, last + 1), std::max<index_t>(last + 1, 0)};
  }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const index_t first_row = qb.i_begin, last_row = qb.i_end - 1;
    // Full when every row allows every key of the tile through the window or
    // through the sink tokens.
    const bool window_full = j0 >= lo(last_row) && j1 - 1 <= hi(first_row);
    const bool sinks_full = j1 <= sink_tokens && j1 - 1 <= hi(first_row);
    if (window_full || sinks_full) return tile_kind::full;
    const bool window_empty = j1 - 1 < lo(first_row) || j0 > hi(last_row);
    const bool sinks_empty = j0 >= sink_tokens || j0 > hi(last_row);
    return window_empty && sinks_empty ? tile_kind::empty : tile_kind::partial;
  }
  constexpr bool allowed(index_t, index_t, index_t i, index_t j) const {
    return j <= hi(i) && (j >= lo(i) || j < sink_tokens);
  }
  // j <= hi(i) <=> i >= j - offset - right; j >= lo(i) <=> i <= j - offset + left.
  constexpr position_range positions(index_t j) const {
    const index_t first = right < 0 ? -unbounded : j - offset - right;
    const index_t last = (left < 0 || j < sink_tokens) ? unbounded : j - offset + left;
    return {first, last + 1};
  }
};

static_assert(mask<no_mask> && band_mask<causal_mask> && band_mask<window_mask>,
              "built-in masks must model attn::mask (causal and window as band masks)");

}  // namespace attn
