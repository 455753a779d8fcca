// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "attn/core/element.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/merge.hpp"
#include "attn/core/micro_kernels.hpp"
#include "attn/core/online_softmax.hpp"
#include "attn/core/problem.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/score_mod.hpp"
#include "attn/core/scratch.hpp"
#include "attn/core/tensor.hpp"

// The one tiled online-softmax loop every softmax variant runs on.
//
// Work item = (batch, kv heads, query tile, KV split). A query tile packs the
// query heads of a GQA group that share a kv head, times a run of positions,
// so each K/V tile is read once per group; in decode one item takes every kv
// head of a sequence (see work_split and tile_rows for the row order).
//
// Per KV tile (classed by the mask): S^T = K Q^T, score modifier, mask
// (partial tiles only),
// online-softmax update, O = alpha O + P V. Finalize: 1/l, lse, sinks.
namespace attn::detail {

// A validated softmax problem (the public entry points build it), its
// tensors stored as Q, K, V and O (fp32 everywhere inside).
template <class Q, class K, class V, class O>
struct typed_softmax_problem : typed_views<Q, K, V, O> {
  view3<float> lse;      // (B, Nq, Hq) or empty
  float scale;
  const float* sinks;    // (Hq) sink logits or null
  // Query rows per tile; 0: the backend's query_tile_rows. Latent attention
  // asks for every head of a position in one tile (its cache is read once).
  index_t tile_rows = 0;
  // KV splits per work item; 0: chosen from the shape (see kv_splits).
  index_t num_splits = 0;
  // Cascade: each row's result is merged with its result over another key
  // set, (out, lse) already there or, when `earlier` is given, (earlier,
  // lse): an fp32 copy of the rows (B, Nq, Hq, Dv) for a 16-bit out, which
  // would otherwise be rounded twice. lse is then required.
  bool merge_into_out = false;
  view4<const float> earlier{};

  float* lse_at(index_t b, index_t i, index_t h) const { return &lse(b, this->q_index(b, i), h); }
};
using softmax_problem = typed_softmax_problem<float, float, float, float>;

constexpr index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }
constexpr index_t ceil_div(index_t x, index_t m) { return (x + m - 1) / m; }

// Fewest keys per KV tile a paged cache's page size may impose (below it,
// tiles crossing pages are gathered instead).
inline constexpr index_t min_page_tile = 16;

// Keys of every kv head a joint (decode) tile walks at a time: a key's heads
// are adjacent in a BSHD cache, so K and V stream almost in memory order,
// which the hardware prefetcher follows; one head's whole tile is a run of
// short rows a page apart (Zen 4, Nk = 32768, 1 thread: 7.5 -> 11 GB/s).
inline constexpr index_t joint_walk_keys = 8;

// Whether K or V rows are copied into a tile buffer rather than read in
// place: strided rows, V rows not a whole number of vectors, or 16-bit
// rows for the broadcast (prefill) kernels, which widen element by element
// (decode's by-rows kernels widen a vector at a time, in place).
template <class P>
bool packs_keys(const P& p, bool by_rows) {
  return p.k.stride[3] != 1 || (!by_rows && !std::is_same_v<typename P::k_type, float>);
}
template <class B, class P>
bool packs_values(const P& p, bool by_rows) {
  return p.v.stride[3] != 1 || p.dv() % static_cast<index_t>(B::width) != 0 ||
         (!by_rows && !std::is_same_v<typename P::v_type, float>);
}

// How the problem is cut into work items.
template <class B>
struct work_split {
  index_t heads;        // query heads per kv head in a tile (a GQA group or a chunk of it)
  index_t head_chunks;  // chunks per group
  index_t positions;    // query positions per tile
  index_t query_tiles;
  index_t kv_heads;     // kv heads per item: all of them in decode, else 1
  index_t items;        // batch * (hkv / kv_heads) * head_chunks * query_tiles
  index_t tile_keys;    // keys per KV tile

  // Query tiles of default_positions() tokens and KV tiles of kv_tile keys,
  // unless the mask asks for its own tile shape.
  template <class P>
  explicit work_split(const P& p, std::optional<tile_shape> shape = {}) {
    const index_t rows = p.tile_rows > 0 ? p.tile_rows : B::query_tile_rows;
    heads = std::min(p.group(), rows);
    head_chunks = ceil_div(p.group(), heads);
    positions = shape ? shape->positions : default_positions(p.group(), rows);
    query_tiles = ceil_div(p.nq(), positions);
    // Decode (one tile per kv head): one item walks the keys of every kv
    // head, so K and V stream from memory in their own order instead of as
    // one short row per head and key; the KV tile shrinks to keep one tile of
    // all heads in L2.
    kv_heads = (query_tiles == 1 && head_chunks == 1) ? p.hkv() : 1;
    tile_keys = B::kv_tile;
    while (tile_keys > 2 * B::score_keys && tile_keys * kv_heads > 2 * B::kv_tile) tile_keys /= 2;
    if (shape) tile_keys = shape->keys;
    // A paged cache: tiles of a divisor of the page size never straddle two
    // pages, so their rows are read in place; when the page size has no
    // divisor of at least min_page_tile keys up to the tile (tiny or prime
    // pages), tiles keep their size and those crossing a page are gathered.
    if (p.pages.paged()) {
      index_t divisor = tile_keys;
      while (p.pages.page_size % divisor != 0) --divisor;
      if (divisor >= min_page_tile) tile_keys = divisor;
    }
    items = p.batch() * (p.hkv() / kv_heads) * head_chunks * query_tiles;
  }
  index_t max_rows() const { return kv_heads * heads * positions; }
  // Query positions per tile: the tile's rows are positions x (query heads of
  // a GQA group, up to the row budget).
  static index_t default_positions(index_t group, index_t rows = B::query_tile_rows) {
    return std::max<index_t>(1, rows / std::min(group, rows));
  }
};

// One work item's tile geometry. Rows are ordered kv head, position, head:
//   r = (kv - g0) * rows_per_kv() + (i - i0) * heads + (h - first head of kv)
struct tile_rows {
  index_t b;
  index_t g0, kv_heads;  // kv heads [g0, g0 + kv_heads)
  index_t i0, positions; // query positions [i0, i0 + positions)
  index_t h_offset;      // first query head within each GQA group
  index_t heads;         // query heads per kv head
  index_t group;         // Hq / Hkv
  index_t rows_per_kv() const { return positions * heads; }
  index_t rows() const { return kv_heads * rows_per_kv(); }
  index_t kv_head(index_t r) const { return g0 + r / rows_per_kv(); }
  index_t position(index_t r) const { return i0 + (r % rows_per_kv()) / heads; }
  index_t head(index_t r) const { return kv_head(r) * group + h_offset + r % heads; }
};

template <class B, class P>
tile_rows locate(const P& p, const work_split<B>& w, index_t item) {
  const index_t qt = item % w.query_tiles;
  index_t rest = item / w.query_tiles;
  const index_t hc = rest % w.head_chunks;
  rest /= w.head_chunks;
  const index_t kv_items = p.hkv() / w.kv_heads;
  const index_t g0 = (rest % kv_items) * w.kv_heads;
  tile_rows t;
  t.b = rest / kv_items;
  t.g0 = g0;
  t.kv_heads = w.kv_heads;
  t.i0 = qt * w.positions;
  t.positions = std::max<index_t>(0, std::min(w.positions, p.nq_of(t.b) - t.i0));  // 0: past a ragged sequence
  t.h_offset = hc * w.heads;
  t.heads = std::min(w.heads, p.group() - t.h_offset);
  t.group = p.group();
  return t;
}

// Asks for rows x length floats at the given row stride to be brought into the
// cache: decode streams K and V once, and a key row of one head is only a few
// cache lines, too short for the hardware prefetcher to find.
// GCC deletes a loop whose only statements are prefetches (it assumes loops
// finish, -ffinite-loops at -O2, and a prefetch is no side effect to it): the
// empty asm statement that takes each address keeps them.
template <class T>
void prefetch_rows(const T* p, index_t stride, index_t rows, index_t length) {
  constexpr index_t line = 64 / sizeof(T);
  for (index_t j = 0; j < rows; ++j)
    for (index_t d = 0; d < length; d += line) {
      const T* address = p + j * stride + d;
      __builtin_prefetch(address, 0, 2);
      asm volatile("" : : "r"(address));
    }
}
// The same for keys [j0, j1) of kv head g of k or v, page by page.
template <class P, class T>
void prefetch_keys(const P& p, const view4<const T>& x, index_t b, index_t j0, index_t j1, index_t g) {
  const index_t length = x.extent[3] * x.stride[3];
  for (index_t j = j0; j < j1;) {
    const index_t end = p.pages.paged() ? std::min(j1, (j / p.pages.page_size + 1) * p.pages.page_size) : j1;
    prefetch_rows(p.kv_row(x, b, j, g), x.stride[1], end - j, length);
    j = end;
  }
}

// True when every value of the (keys, dv) tile is finite: v * 0 is 0 for
// finite v and NaN otherwise.
template <class B, class T>
bool tile_is_finite(const T* v, index_t stride, index_t keys, index_t dv) {
  constexpr index_t W = static_cast<index_t>(B::width);
  auto acc = B::zero();
  const auto zero = B::zero();
  for (index_t j = 0; j < keys; ++j)
    for (index_t d = 0; d < dv; d += W) acc = B::fma(B::load(v + j * stride + d), zero, acc);
  return B::reduce_add(acc) == 0.0f;
}

// Where one work item keeps its tiles, carved from the thread's scratch; all
// of it O(tile). Per kv head: the packed queries; the row state (m, l,
// alpha) per kv head, or one for all of them when they share the S^T tile;
// shared: the S^T tile and K/V rows packed when their inner stride is not 1.
template <class B>
struct workspace {
  static constexpr index_t W = static_cast<index_t>(B::width);
  index_t rows;       // query rows per kv head
  index_t ldq;        // columns of S^T: rows (of every kv head when joint) padded to the width
  index_t dk, dv, dvp;
  index_t tile_keys;
  // Decode-shaped: dot products along Dk, Q packed by rows. A tile of W rows
  // or more fills the broadcast kernel's lanes, which needs no reductions
  // (latent decode with H = 16: +35%, bench/latent_bench.cpp).
  bool by_rows;
  // Decode-shaped with several kv heads: their S^T tiles are the column
  // blocks [kv * rows, (kv + 1) * rows) of one tile, so one softmax update
  // fills the lanes that a group of a few rows leaves idle.
  bool joint;
  // K / V rows always packed: a gathered walk, an inner stride, padding, or
  // 16-bit or int8 storage under the prefill kernels (widened once per tile
  // for all its query rows; the decode kernels widen as they load).
  bool pack_k, pack_v;
  // Decode-shaped with int8 K on a backend with integer pair products: the
  // queries are also kept rounded to int16 (round_queries), row stride
  // int_stride (Dk padded to 2W).
  bool int_dot;
  index_t int_stride;
  index_t query_size;   // floats per kv head's packed queries
  index_t state_stride; // offset of kv head kv + 1's row state from kv's
  float* state;       // per kv head: queries; then m, l, alpha
  float* st;          // (tile_keys, ldq) S^T, then P^T
  float* kbuf;        // (tile_keys, Dk)  packed K rows, if needed
  float* vbuf;        // (tile_keys, Dvp) packed V rows, if needed

  static index_t padded(index_t n) { return static_cast<index_t>(scratch_carver::round_up(n)); }
  index_t int_query_size() const { return padded(rows + 1) + padded(rows * int_stride / 2); }

  // gather: K and V rows are always copied into kbuf / vbuf (gathered tiles).
  // share: the kv heads may share one S^T tile (no score modifier, which
  // may write a whole tile's width).
  template <class P>
  workspace(const P& p, const tile_rows& t, index_t keys_per_tile, bool gather = false, bool share = false)
      : rows(t.rows_per_kv()),
        dk(p.dk()), dv(p.dv()), dvp(round_up(dv, W)), tile_keys(keys_per_tile),
        by_rows(rows < W && dk % W == 0 && W > 1),
        joint(by_rows && share && !gather && t.kv_heads > 1),
        pack_k(gather || packs_keys(p, by_rows)),
        pack_v(gather || packs_values<B>(p, by_rows)),
        int_dot(by_rows && quantized_element<typename P::k_type> && pair_products<B>),
        int_stride(round_up(dk, 2 * W)) {
    ldq = joint ? round_up(t.kv_heads * rows, W) : rows <= W ? W : round_up(rows, B::score_query_vecs * W);
    query_size = padded(by_rows ? rows * dk : dk * ldq) + (int_dot ? int_query_size() : 0);
    state_stride = joint ? rows : 3 * padded(ldq);
    const index_t state_size = joint ? 3 * padded(ldq) : t.kv_heads * state_stride;
    // Tiles that may straddle two pages are gathered when they do.
    const bool crossing = p.pages.paged() && p.pages.page_size % tile_keys != 0;
    const bool k_buffer = pack_k || crossing, v_buffer = pack_v || crossing;
    scratch_carver carve(thread_scratch().floats(
        t.kv_heads * query_size + state_size + padded(tile_keys * ldq) +
        (k_buffer ? padded(tile_keys * dk) : 0) + (v_buffer ? padded(tile_keys * dvp) : 0)));
    state = carve.take(t.kv_heads * query_size + state_size);
    stats = state + t.kv_heads * query_size;
    st = carve.take(tile_keys * ldq);
    kbuf = k_buffer ? carve.take(tile_keys * dk) : nullptr;
    vbuf = v_buffer ? carve.take(tile_keys * dvp) : nullptr;
  }
  float* queries(index_t kv) const { return state + kv * query_size; }  // (Dk, ldq) or (rows, Dk)
  // After a kv head's float queries: their row scales, a flag (1: rounded),
  // the int16 rows. Empty (values null) unless int_dot and rounded.
  float* int_query_scales(index_t kv) const { return queries(kv) + padded(rows * dk); }
  std::int16_t* int_query_values(index_t kv) const {
    return reinterpret_cast<std::int16_t*>(int_query_scales(kv) + padded(rows + 1));
  }
  int16_queries int_queries(index_t kv) const {
    if (!int_dot || int_query_scales(kv)[rows] == 0.0f) return {};
    return {int_query_values(kv), int_stride, int_query_scales(kv)};
  }
  float* m(index_t kv) const { return stats + kv * state_stride; }      // (ldq) running max
  float* l(index_t kv) const { return m(kv) + padded(ldq); }           // (ldq) running sum
  float* alpha(index_t kv) const { return l(kv) + padded(ldq); }       // (ldq) rescale
  // The S^T columns of kv head kv (the whole tile unless joint).
  float* scores(index_t kv) const { return joint ? st + kv * rows : st; }

 private:
  float* stats;       // m, l, alpha of kv head 0
};

// Q^T (dk, ldq), or Q by rows (rows, dk) for decode-shaped tiles, with
// scale * log2(e) folded in and zero padding; running max and sum reset.
template <class B, class P>
void pack_queries(const P& p, const tile_rows& t, const workspace<B>& ws) {
  const float q_scale = p.scale * log2e;
  const index_t q_stride = p.q.stride[3];
  for (index_t kv = 0; kv < t.kv_heads; ++kv) {
    float* q = ws.queries(kv);
    if (!ws.by_rows) std::fill_n(q, ws.dk * ws.ldq, 0.0f);  // by rows (dk % W == 0) fills every element
    for (index_t r = 0; r < ws.rows; ++r) {
      const index_t tr = kv * ws.rows + r;
      // By rows: row r, a vector at a time (decode: a few rows per call); else column r of Q^T.
      scale_row<B>(p.q_row(t.b, t.position(tr), t.head(tr)), q_stride, q + (ws.by_rows ? r * ws.dk : r),
                   ws.by_rows ? 1 : ws.ldq, ws.dk, q_scale);
    }
    if (ws.int_dot) {
      float* scales = ws.int_query_scales(kv);
      const bool rounded = round_queries(q, ws.rows, ws.dk, ws.int_query_values(kv), ws.int_stride, ws.W, scales);
      scales[ws.rows] = rounded ? 1.0f : 0.0f;
    }
    if (ws.joint && kv > 0) continue;  // one row state for all kv heads
    std::fill_n(ws.m(kv), ws.ldq, lowest_score);
    std::fill_n(ws.l(kv), ws.ldq, 0.0f);
  }
  if (ws.by_rows) std::fill_n(ws.st, ws.tile_keys * ws.ldq, 0.0f);  // padding columns stay 0
}

// Rows [j0, j0 + keys) of one kv head of k or v: in place (stored as T),
// or packed as floats (zero-padded to `width` columns) into a buffer.
template <class T = float>
struct row_panel {
  const T* data;
  index_t stride;
};

// n values of a row (stride `stride`) as floats in dst: a copy, or, from
// 16-bit or int8 storage, widened a vector at a time.
template <class B, class T>
void widen_row(const T* src, index_t stride, index_t n, float* dst) {
  constexpr index_t W = static_cast<index_t>(B::width);
  index_t d = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) {
      std::copy_n(src, n, dst);
      return;
    }
  } else if (stride == 1) {
    for (; d + W <= n; d += W) B::store(dst + d, B::load(src + d));
  }
  for (; d < n; ++d) dst[d] = to_float(src[d * stride]);
}

// Copies rows [j0, j0 + keys) of one kv head into buf from row `at` on
// (width columns, zero-padded, as floats): pieces of several key runs
// gathered into one KV tile, or a tile of 16-bit or int8 K or V widened
// (int8 values unscaled: see scale_key_rows).
template <class B, class P, class T>
void gather_rows(const P& p, const view4<const T>& x, index_t b, index_t j0, index_t keys, index_t g,
                 float* buf, index_t at, index_t width) {
  const index_t n = x.extent[3];
  for (index_t j = 0; j < keys; ++j) {
    float* dst = buf + (at + j) * width;
    widen_row<B>(p.kv_row(x, b, j0 + j, g), x.stride[3], n, dst);
    std::fill(dst + n, dst + width, 0.0f);
  }
}

// f(rows [j0, j0 + keys)): a row_panel<T> in place when they can be (not
// `pack`, inner stride 1, one page), else a row_panel<float> gathered into
// buf.
template <class B, class P, class T, class F>
void with_rows(const P& p, const view4<const T>& x, index_t b, index_t j0, index_t keys, index_t g, bool pack,
               float* buf, index_t width, F&& f) {
  if (!pack && p.pages.contiguous(j0, keys)) return f(row_panel<T>{p.kv_row(x, b, j0, g), x.stride[1]});
  gather_rows<B>(p, x, b, j0, keys, g, buf, 0, width);
  f(row_panel<float>{buf, width});
}
// The same for fp32 storage, returning the rows.
template <class B, class P>
row_panel<float> rows_of(const P& p, const view4<const float>& x, index_t b, index_t j0, index_t keys,
                         index_t g, bool pack, float* buf, index_t width) {
  row_panel<float> rows{};
  with_rows<B>(p, x, b, j0, keys, g, pack, buf, width, [&](row_panel<float> r) { rows = r; });
  return rows;
}

// int8 K or V (attn::quantized): key j's row is scale_j times its int8
// values and the kernels ran on the values, so each key's row of S^T (its
// scores) is scaled after scoring (except where the dot-product kernel read
// the int8 rows in place and scaled them itself: score_rows_dot), and of P^T
// (its probabilities) before P V; other storage types pass through. Keys
// [j0, j0 + keys) of kv head g, in columns [0, columns) of a (keys, ldq) tile.
template <class P>
void scale_key_rows(const P& p, const view3<const float>& scales, index_t b, index_t j0, index_t keys, index_t g,
                    float* st, index_t ldq, index_t columns, bool zero_stays_zero) {
  if (keys <= 0) return;
  const bool in_page = p.pages.contiguous(j0, keys);  // the keys' scales evenly strided
  const float* first = &p.kv_scale(scales, b, j0, g);
  auto scale_rows = [&](auto width) {  // width: columns, a constant for decode's few rows
    auto scale_row = [&](index_t j, float s) {
      float* row = st + j * ldq;
      if (!zero_stays_zero || std::isfinite(s))
        for (index_t c = 0; c < width; ++c) row[c] *= s;
      else  // p = 0 (a masked pair) times a NaN or inf scale stays 0
        for (index_t c = 0; c < width; ++c) row[c] = row[c] == 0.0f ? 0.0f : row[c] * s;
    };
    // One loop per case, no branch per key on the page.
    if (in_page)
      for (index_t j = 0; j < keys; ++j) scale_row(j, first[j * scales.stride[1]]);
    else
      for (index_t j = 0; j < keys; ++j) scale_row(j, p.kv_scale(scales, b, j0 + j, g));
  };
  if (columns <= 8)
    with_count<8>(static_cast<int>(columns), scale_rows);
  else
    scale_rows(columns);
}
template <class P>
void apply_k_scales(const P& p, index_t b, index_t j0, index_t keys, index_t g, float* st, index_t ldq,
                    index_t columns) {
  if constexpr (quantized_element<typename P::k_type>)
    scale_key_rows(p, p.k_scales, b, j0, keys, g, st, ldq, columns, false);
}
template <class P>
void apply_v_scales(const P& p, index_t b, index_t j0, index_t keys, index_t g, float* pt, index_t ldq,
                    index_t columns) {
  if constexpr (quantized_element<typename P::v_type>)
    scale_key_rows(p, p.v_scales, b, j0, keys, g, pt, ldq, columns, true);
}

// S^T (keys, ldq) of keys [j0, j0 + keys) of kv head g by dot products
// (decode-shaped tiles), each key's scores scaled for int8 K: by the kernel
// when its int8 rows are read in place (their scales then evenly strided),
// after it when they were gathered as floats (widened unscaled). int8 rows
// read in place take the integer kernel where the backend has one and the
// queries could be rounded (iq.values set).
template <class B, class P, class T>
void score_rows_dot(const P& p, row_panel<T> k, index_t b, index_t j0, index_t keys, index_t g, index_t dk,
                    const float* q, int16_queries iq, index_t rows, float* st, index_t ldq) {
  if constexpr (quantized_element<T>) {
    const float* scales = &p.kv_scale(p.k_scales, b, j0, g);
    if constexpr (pair_products<B>) {
      if (iq.values) {
        score_dot_tile<B>(k.data, k.stride, keys, dk, iq, rows, st, ldq, scales, p.k_scales.stride[1]);
        return;
      }
    }
    score_dot_tile<B>(k.data, k.stride, keys, dk, q, rows, st, ldq, scales, p.k_scales.stride[1]);
  } else {
    score_dot_tile<B>(k.data, k.stride, keys, dk, q, rows, st, ldq);
    apply_k_scales(p, b, j0, keys, g, st, ldq, rows);
  }
}

// A mask whose key runs are short (a neighborhood's grid rows) asks for them
// to be gathered: pieces of several runs are copied into one KV tile, so the
// micro-kernels and the softmax update run on whole tiles.
template <class M>
bool gathers_runs(const M& m) {
  if constexpr (requires { { m.gathers_runs() } -> std::convertible_to<bool>; })
    return m.gathers_runs();
  else
    return false;
}

template <class M>
inline constexpr bool is_mask_and = false;
template <class A, class B>
inline constexpr bool is_mask_and<mask_and<A, B>> = true;

// Removes the disallowed pairs of a partial tile (never a finite penalty).
// A band mask (causal, window, documents) names for each key the one run of
// query positions that may see it, so a key row is masked with two fills;
// an intersection masks with each side that is partial on this tile; a mask
// with its own remove_pairs (neighborhood) masks the tile itself; any other
// mask is asked pair by pair, rows walked as (position, head).
template <class Mask>
void mask_tile(const Mask& mask, const query_block& qb, const tile_rows& t, index_t j0,
               index_t keys, float* st, index_t ldq) {
  constexpr float removed = -std::numeric_limits<float>::infinity();
  if constexpr (requires { mask.remove_pairs(qb, t.heads, j0, keys, st, ldq); }) {
    mask.remove_pairs(qb, t.heads, j0, keys, st, ldq);  // the mask masks its own tiles
    return;
  } else if constexpr (!band_mask<Mask> && is_mask_and<Mask>) {
    if (mask.a.classify(qb, j0, j0 + keys) != tile_kind::full) mask_tile(mask.a, qb, t, j0, keys, st, ldq);
    if (mask.b.classify(qb, j0, j0 + keys) != tile_kind::full) mask_tile(mask.b, qb, t, j0, keys, st, ldq);
    return;
  }
  for (index_t j = 0; j < keys; ++j) {
    float* row = st + j * ldq;
    if constexpr (band_mask<Mask>) {
      const position_range seen = mask.positions(j0 + j);
      const index_t a = std::clamp(seen.begin - t.i0, index_t{0}, t.positions);
      const index_t b = std::clamp(seen.end - t.i0, a, t.positions);
      std::fill(row, row + a * t.heads, removed);
      std::fill(row + b * t.heads, row + t.positions * t.heads, removed);
    } else {
      for (index_t pi = 0; pi < t.positions; ++pi)
        for (index_t hh = 0; hh < t.heads; ++hh)
          if (!mask.allowed(t.b, qb.h_begin + hh, t.i0 + pi, j0 + j)) row[pi * t.heads + hh] = removed;
    }
  }
}

// O += P V. On a partial tile whose values hold NaN or inf, masked pairs
// (p = 0) are skipped explicitly: 0 * NaN would leak into rows that never
// attend to that key.
template <class B, class T>
void accumulate_values(tile_kind kind, const float* pt, index_t ldp, index_t rows, row_panel<T> v,
                       index_t keys, index_t dvp, float* o, index_t ldo) {
  constexpr index_t W = static_cast<index_t>(B::width);
  if (kind == tile_kind::full || tile_is_finite<B>(v.data, v.stride, keys, dvp)) {
    value_tile<B>(pt, ldp, rows, v.data, v.stride, keys, dvp, o, ldo);
    return;
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = 0; j < keys; ++j) {
      const float pr = pt[j * ldp + r];
      if (pr == 0.0f) continue;
      const auto pb = B::broadcast(pr);
      for (index_t d = 0; d < dvp; d += W)
        B::store(o + r * ldo + d, B::fma(pb, B::load(v.data + j * v.stride + d), B::load(o + r * ldo + d)));
    }
}

// O / l and the natural-log lse of every row of one kv head.
template <class B>
void finalize_rows(const float* m, const float* l, index_t rows, index_t dvp, float* o,
                   index_t ldo, float* lse) {
  for (index_t r = 0; r < rows; ++r) {
    const row_result res = finish_row(m[r], l[r]);
    scale_row<B>(o + r * ldo, dvp, res.inverse_sum);
    lse[r] = res.lse;
  }
}

// Sets the scores of keys [a, b) of a (keys, ldq) S^T tile to -inf in
// columns [0, columns): pairs a kv head does not visit in a joint tile.
inline void remove_keys(float* st, index_t ldq, index_t columns, index_t a, index_t b) {
  for (index_t j = a; j < b; ++j) std::fill_n(st + j * ldq, columns, -std::numeric_limits<float>::infinity());
}

// The gathered form of a work item's walk (see gathers_runs): per kv head,
// the pieces of its key runs inside [key_lo, key_hi) that the mask does not
// class empty are copied into KV tiles of up to tile_keys keys; each tile
// runs the same pipeline as a contiguous one, masked piece by piece.
template <class B, class P, class Mask, class BlockOf>
void attend_gathered(const P& p, const Mask& mask, const tile_rows& t,
                     const workspace<B>& ws, index_t key_lo, index_t key_hi, float* o, index_t ldo,
                     const BlockOf& block_of) {
  struct piece {
    index_t j0, keys;
    tile_kind kind;
  };
  thread_local std::vector<key_range> runs;
  thread_local std::vector<piece> pieces;
  const index_t ldq = ws.ldq, rows = ws.rows;
  for (index_t kv = 0; kv < t.kv_heads; ++kv) {
    const index_t g = t.g0 + kv;
    const query_block qb = block_of(kv);
    float* ok = o + kv * rows * ldo;  // (rows, ldo) this kv head's accumulator
    index_t filled = 0;                // keys gathered into the tile
    bool partial = false;
    auto flush = [&] {
      if (filled == 0) return;
      if (ws.by_rows)
        score_dot_tile<B>(ws.kbuf, ws.dk, filled, ws.dk, ws.queries(kv), rows, ws.st, ldq);
      else
        score_tile<B>(ws.kbuf, ws.dk, filled, ws.dk, ws.queries(kv), ldq, ws.st);
      index_t at = 0;
      for (const piece& x : pieces) {
        apply_k_scales(p, t.b, x.j0, x.keys, g, ws.st + at * ldq, ldq, rows);
        if (x.kind == tile_kind::partial) mask_tile(mask, qb, t, x.j0, x.keys, ws.st + at * ldq, ldq);
        at += x.keys;
      }
      softmax_update<B>(ws.st, filled, ldq, ws.m(kv), ws.l(kv), ws.alpha(kv));
      rescale_rows<B>(ok, ldo, rows, ws.dvp, ws.alpha(kv));
      at = 0;
      for (const piece& x : pieces) {
        apply_v_scales(p, t.b, x.j0, x.keys, g, ws.st + at * ldq, ldq, rows);
        at += x.keys;
      }
      accumulate_values<B>(partial ? tile_kind::partial : tile_kind::full, ws.st, ldq, rows,
                           row_panel<float>{ws.vbuf, ws.dvp}, filled, ws.dvp, ok, ldo);
      filled = 0;
      partial = false;
      pieces.clear();
    };
    runs.clear();
    pieces.clear();
    mask.key_runs(qb, runs);
    for (const key_range run : runs) {
      for (index_t j0 = std::max(run.begin, key_lo); j0 < std::min(run.end, key_hi);) {
        const index_t keys = std::min({run.end, key_hi, j0 + ws.tile_keys - filled}) - j0;
        const tile_kind kind = mask.classify(qb, j0, j0 + keys);
        if (kind != tile_kind::empty) {
          gather_rows<B>(p, p.k, t.b, j0, keys, g, ws.kbuf, filled, ws.dk);
          gather_rows<B>(p, p.v, t.b, j0, keys, g, ws.vbuf, filled, ws.dvp);
          pieces.push_back({j0, keys, kind});
          partial = partial || kind == tile_kind::partial;
          filled += keys;
          if (filled == ws.tile_keys) flush();
        }
        j0 += keys;
      }
    }
    flush();
  }
}

// Runs one work item over keys [key_lo, key_hi) and leaves, per row r, the
// normalised output in o[r * ldo ...] and the natural-log lse in lse_out[r].
template <class B, class P, class Mask, class Modifier>
void attend_tile(const P& p, const Mask& mask, const Modifier& modifier,
                 const tile_rows& t,
                 index_t tile_keys, index_t key_lo, index_t key_hi, float* o, index_t ldo,
                 float* lse_out) {
  const bool gather = gathers_runs(mask);
  const workspace<B> ws(p, t, tile_keys, gather, std::is_same_v<Modifier, no_modifier>);
  const index_t rows = ws.rows, ldq = ws.ldq;
  pack_queries<B>(p, t, ws);
  for (index_t r = 0; r < t.rows(); ++r) std::fill_n(o + r * ldo, ws.dvp, 0.0f);

  auto block_of = [&](index_t kv) {
    const index_t h0 = (t.g0 + kv) * t.group + t.h_offset;
    return query_block{t.b, t.i0, t.i0 + t.positions, h0, h0 + t.heads, p.nq_of(t.b), p.nk_of(t.b)};
  };
  index_t lo = key_hi, hi = key_lo;  // union of the kv heads' key ranges
  for (index_t kv = 0; kv < t.kv_heads; ++kv) {
    const key_range range = mask.keys(block_of(kv));
    lo = std::min(lo, std::max(range.begin, key_lo));
    hi = std::max(hi, std::min(range.end, key_hi));
  }

  // The key runs to walk: the mask's own (key_runs: several ranges, e.g. the
  // rows of a neighborhood's tiles, merged over the kv heads) or [lo, hi).
  thread_local std::vector<key_range> runs;
  runs.clear();
  constexpr bool has_key_runs = requires(const query_block& qb) { mask.key_runs(qb, runs); };
  if constexpr (has_key_runs) {
    for (index_t kv = 0; kv < t.kv_heads; ++kv) mask.key_runs(block_of(kv), runs);
    std::sort(runs.begin(), runs.end(), [](key_range a, key_range b) { return a.begin < b.begin; });
  } else {
    runs.push_back({lo, hi});
  }

  if constexpr (has_key_runs && std::is_same_v<Modifier, no_modifier>) {
    if (gather) {
      attend_gathered<B>(p, mask, t, ws, key_lo, key_hi, o, ldo, block_of);
      for (index_t kv = 0; kv < t.kv_heads; ++kv)
        finalize_rows<B>(ws.m(kv), ws.l(kv), rows, ws.dvp, o + kv * rows * ldo, ldo, lse_out + kv * rows);
      return;
    }
  }

  // A kv head's part of a KV tile: keys [j0, j0 + keys) of kind `kind`,
  // scored into st (keys, ldq).
  struct visit {
    index_t kv, j0, keys;
    tile_kind kind;
    float* st;
    index_t next0, next1;  // keys of this head's next visited tile (empty: none)
  };
  thread_local std::vector<visit> visits;
  // O += P V over keys [a, b) of a visited kv head (after its softmax
  // update and rescale).
  auto add_values = [&](const visit& x, index_t a, index_t b) {
    if (a >= b) return;
    float* ok = o + x.kv * rows * ldo;  // (rows, ldo) this kv head's accumulator
    // A modifier may remove pairs (a -inf bias) on a full tile too.
    const tile_kind value_kind = std::is_same_v<Modifier, no_modifier> ? x.kind : tile_kind::partial;
    apply_v_scales(p, t.b, a, b - a, t.g0 + x.kv, x.st + (a - x.j0) * ldq, ldq, rows);
    with_rows<B>(p, p.v, t.b, a, b - a, t.g0 + x.kv, ws.pack_v, ws.vbuf, ws.dvp, [&](auto v) {
      accumulate_values<B>(value_kind, x.st + (a - x.j0) * ldq, ldq, rows, v, b - a, ws.dvp, ok, ldo);
    });
  };

  index_t done = lo;  // keys below are walked (runs may overlap after merging heads)
  for (std::size_t run_index = 0; run_index < runs.size(); ++run_index) {
    const key_range run = runs[run_index];
    const index_t run_lo = std::max({run.begin, lo, done}), run_hi = std::min(run.end, hi);
    if (run_hi <= run_lo) continue;
    done = run_hi;
    // The part of keys [a, b) kv head `kv` visits ([j0, j1), clipped to the
    // run and the mask's key range) and its kind.
    auto classify_tile = [&](index_t kv, index_t a, index_t b, index_t& j0, index_t& j1) {
      const query_block qb = block_of(kv);
      const key_range range = mask.keys(qb);
      j0 = std::max({a, run_lo, range.begin});
      j1 = std::min({b, run_hi, range.end});
      return j1 <= j0 ? tile_kind::empty : mask.classify(qb, j0, j1);
    };
    // KV tiles are aligned to multiples of tile_keys, except inside a mask's
    // own runs, which are cut into tiles from their first key.
    const index_t first_tile = has_key_runs ? run_lo : run_lo / tile_keys * tile_keys;
    for (index_t tile = first_tile; tile < run_hi; tile += tile_keys) {
      // Joint: S^T rows are keys [ta, tb) for every kv head, -inf where a
      // head does not visit the key.
      const index_t ta = std::max(tile, run_lo), tb = std::min(tile + tile_keys, run_hi);
      visits.clear();
      bool in_place = true;  // every visited K and V row read in place
      for (index_t kv = 0; kv < t.kv_heads; ++kv) {
        const index_t g = t.g0 + kv;
        index_t j0, j1, n0, n1;
        const tile_kind kind = classify_tile(kv, tile, tile + tile_keys, j0, j1);
        // Start this head's next visited tile on its way from memory: the
        // next one of this run, or at its end the first of the next run
        // (block-sparse runs are short, and their first tiles would
        // otherwise arrive cold).
        bool next_visited =
            classify_tile(kv, tile + tile_keys, tile + 2 * tile_keys, n0, n1) != tile_kind::empty;
        if (!next_visited && tile + tile_keys >= run_hi && run_index + 1 < runs.size()) {
          const key_range nr = runs[run_index + 1];
          const query_block nqb = block_of(kv);
          const key_range range = mask.keys(nqb);
          n0 = std::max({nr.begin, run_hi, range.begin, lo});
          n1 = std::min({n0 + tile_keys, nr.end, range.end, hi});
          next_visited = n1 > n0 && mask.classify(nqb, n0, n1) != tile_kind::empty;
        }
        if (!next_visited) n0 = n1 = 0;
        if (next_visited && !ws.joint) {
          prefetch_keys(p, p.k, t.b, n0, n1, g);
          prefetch_keys(p, p.v, t.b, n0, n1, g);
        }
        if (ws.joint) {
          if (kind == tile_kind::empty) j0 = j1 = tb;
          remove_keys(ws.scores(kv), ldq, rows, 0, j0 - ta);
          remove_keys(ws.scores(kv), ldq, rows, j1 - ta, tb - ta);
        }
        if (kind == tile_kind::empty) continue;
        const query_block qb = block_of(kv);
        const index_t keys = j1 - j0;
        float* sk = ws.scores(kv) + (ws.joint ? (j0 - ta) * ldq : 0);  // (keys, ldq) this head's S^T
        if (ws.joint) {
          visits.push_back({kv, j0, keys, kind, sk, n0, n1});
          in_place = in_place && !ws.pack_k && !ws.pack_v && p.pages.contiguous(j0, keys);
          continue;
        }

        with_rows<B>(p, p.k, t.b, j0, keys, g, ws.pack_k, ws.kbuf, ws.dk, [&](auto k) {
          if (ws.by_rows) {
            score_rows_dot<B>(p, k, t.b, j0, keys, g, ws.dk, ws.queries(kv), ws.int_queries(kv), rows, sk, ldq);
          } else {
            score_tile<B>(k.data, k.stride, keys, ws.dk, ws.queries(kv), ldq, sk);
            apply_k_scales(p, t.b, j0, keys, g, sk, ldq, rows);
          }
        });
        if constexpr (!std::is_same_v<Modifier, no_modifier>)
          modifier.template apply<B>(score_tile_ref{sk, ldq, j0, keys, t.b, t.i0, t.positions,
                                                    qb.h_begin, t.heads, qb.offset()});
        if (kind == tile_kind::partial) mask_tile(mask, qb, t, j0, keys, sk, ldq);
        softmax_update<B>(sk, keys, ldq, ws.m(kv), ws.l(kv), ws.alpha(kv));
        rescale_rows<B>(o + kv * rows * ldo, ldo, rows, ws.dvp, ws.alpha(kv));
        add_values({kv, j0, keys, kind, sk, n0, n1}, j0, j1);
      }
      if (visits.empty()) continue;
      // Joint: K and V are walked in memory order, a few keys of every kv
      // head at a time (a key's heads are adjacent in a BSHD cache), when
      // their rows are read in place.
      const index_t step = in_place ? joint_walk_keys : tile_keys;
      // The next tile's keys are asked for a step at a time as this one is
      // walked (K while scoring, V while adding values): one burst of a whole
      // tile's prefetches per tile left memory and arithmetic taking turns
      // (fp16 decode, 2 threads: 9.7 -> 8.6 ms; README, "Reduced precision").
      auto prefetch_next = [&](const visit& x, const auto& xv, index_t c) {
        const index_t a = x.next0 + (c - ta), b = c + step >= tb ? x.next1 : std::min(a + step, x.next1);
        if (a < b) prefetch_keys(p, xv, t.b, a, b, t.g0 + x.kv);
      };
      for (index_t c = ta; c < tb; c += step)
        for (const visit& x : visits) {
          prefetch_next(x, p.k, c);
          const index_t a = std::max(c, x.j0), b = std::min(c + step, x.j0 + x.keys);
          if (a >= b) continue;
          with_rows<B>(p, p.k, t.b, a, b - a, t.g0 + x.kv, ws.pack_k, ws.kbuf, ws.dk, [&](auto k) {
            score_rows_dot<B>(p, k, t.b, a, b - a, t.g0 + x.kv, ws.dk, ws.queries(x.kv), ws.int_queries(x.kv), rows,
                              x.st + (a - x.j0) * ldq, ldq);
          });
        }
      for (const visit& x : visits)
        if (x.kind == tile_kind::partial) mask_tile(mask, block_of(x.kv), t, x.j0, x.keys, x.st, ldq);
      softmax_update<B>(ws.st, tb - ta, ldq, ws.m(0), ws.l(0), ws.alpha(0));
      for (const visit& x : visits) rescale_rows<B>(o + x.kv * rows * ldo, ldo, rows, ws.dvp, ws.alpha(x.kv));
      // Values: fp32 V streams best in the same steps; 16-bit and int8 V
      // (half the bytes or less, the walk compute-bound) go a head's whole
      // tile per call, so the P V kernel loads and stores its accumulators
      // once per tile rather than once per step (fp16 decode, 2 threads,
      // Nkv = 32768: 8.8-9.4 -> 7.3-7.6 ms; fp32 that way: 11.4-12.2 ->
      // 12.9-14.1 ms).
      if (in_place && sizeof(typename P::v_type) < sizeof(float)) {
        for (const visit& x : visits) {
          for (index_t c = ta; c < tb; c += step) prefetch_next(x, p.v, c);
          add_values(x, x.j0, x.j0 + x.keys);
        }
      } else {
        for (index_t c = ta; c < tb; c += step)
          for (const visit& x : visits) {
            prefetch_next(x, p.v, c);
            add_values(x, std::max(c, x.j0), std::min(c + step, x.j0 + x.keys));
          }
      }
    }
  }

  for (index_t kv = 0; kv < t.kv_heads; ++kv)
    finalize_rows<B>(ws.m(kv), ws.l(kv), rows, ws.dvp, o + kv * rows * ldo, ldo, lse_out + kv * rows);
}

// Writes one finished row to out/lse, merging in the sink logit first and,
// in a cascade, the row's earlier result over another key set.
template <class P>
void store_row(const P& p, index_t b, index_t i, index_t h, float* o, float lse) {
  if (p.sinks) merge_row(o, lse, nullptr, p.sinks[h], p.dv());
  auto* out = p.out_row(b, i, h);
  const index_t d_stride = p.out.stride[3];
  if (p.merge_into_out) {
    thread_local std::vector<float> earlier;
    earlier.resize(static_cast<std::size_t>(p.dv()));
    if (p.earlier.empty())
      for (index_t d = 0; d < p.dv(); ++d) earlier[d] = to_float(out[d * d_stride]);
    else
      for (index_t d = 0; d < p.dv(); ++d) earlier[d] = p.earlier(b, p.q_index(b, i), h, d);
    merge_row(o, lse, earlier.data(), *p.lse_at(b, i, h), p.dv());
  }
  if constexpr (std::is_same_v<typename P::out_type, float>)
    if (d_stride == 1) {
      std::copy_n(o, p.dv(), out);
      if (!p.lse.empty()) *p.lse_at(b, i, h) = lse;
      return;
    }
  for (index_t d = 0; d < p.dv(); ++d) out[d * d_stride] = from_float<typename P::out_type>(o[d]);
  if (!p.lse.empty()) *p.lse_at(b, i, h) = lse;
}

// Masks that differ per sequence: a ragged batch aligns each sequence's mask
// bottom-right at its own query and key counts, so at(b) builds sequence b's
// mask (a few integers for the built-ins).
template <class F>
struct per_sequence {
  F at;
};
template <class F>
per_sequence(F) -> per_sequence<F>;  // aggregate deduction, for compilers without it (clang < 17)
template <class M>
const M& sequence_mask(const M& mask, index_t) {
  return mask;
}
template <class F>
auto sequence_mask(const per_sequence<F>& masks, index_t b) {
  return masks.at(b);
}

// The KV splits of every work item (flash-decoding), each item's splits
// adjacent: `first[item]` is its first split, `keys[s]` the key range of
// split s. An item whose keys exceed a balanced share of all items' keys,
// total / (2 threads), is cut into splits of that share (whole KV tiles, at
// least two), so every thread has work and a long sequence of a ragged batch
// does not run alone while the others wait; p.num_splits > 0 cuts every item
// into that many (fewer when it has fewer KV tiles).
struct kv_splits {
  std::vector<index_t> first;   // (items + 1)
  std::vector<key_range> keys;  // (splits)
  std::vector<index_t> order;   // splits, longest first (the order to hand them out)

  index_t count() const { return static_cast<index_t>(keys.size()); }
  bool split() const { return keys.size() + 1 > first.size(); }

  template <class B, class P>
  kv_splits(const P& p, const work_split<B>& w, std::size_t threads) {
    std::vector<index_t> item_keys(static_cast<std::size_t>(w.items));
    index_t total = 0, longest = 0;
    for (index_t item = 0; item < w.items; ++item) {
      const tile_rows t = locate(p, w, item);
      item_keys[item] = t.positions > 0 ? p.nk_of(t.b) : 0;
      total += item_keys[item];
      longest = std::max(longest, item_keys[item]);
    }
    const index_t share = std::max(
        2 * w.tile_keys, round_up(ceil_div(total, static_cast<index_t>(2 * std::max<std::size_t>(threads, 1))), w.tile_keys));
    const bool auto_split = p.num_splits == 0 && threads > 1 && longest > share;
    first.reserve(static_cast<std::size_t>(w.items + 1));
    for (index_t item = 0; item < w.items; ++item) {
      first.push_back(count());
      const index_t n = item_keys[item];
      index_t piece = n;
      if (p.num_splits > 0) piece = round_up(ceil_div(n, p.num_splits), w.tile_keys);
      if (auto_split) piece = share;
      index_t lo = 0;
      do {
        const index_t hi = piece > 0 ? std::min(n, lo + piece) : n;
        keys.push_back({lo, hi});
        lo = hi;
      } while (lo < n);
    }
    first.push_back(count());
    order.resize(keys.size());
    for (index_t s = 0; s < count(); ++s) order[s] = s;
    if (p.ragged())  // uneven sequences: longest first, so no thread is left with one at the end
      std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
        return keys[a].end - keys[a].begin > keys[b].end - keys[b].begin;
      });
  }
};

template <class B, class P, class Masks, class Modifier, class Exec>
void run_softmax(const P& p, const Masks& masks, const Modifier& modifier,
                 const Exec& exec) {
  const work_split<B> w(p, tile_shape_of(masks));
  if (w.items == 0) return;
  const kv_splits splits(p, w, exec.concurrency());
  constexpr index_t W = static_cast<index_t>(B::width);
  const index_t dvp = round_up(p.dv(), W);
  const index_t max_rows = w.max_rows();
  auto attend = [&](index_t item, key_range keys, float* o, float* lse) {
    const tile_rows t = locate(p, w, item);
    if (t.rows() == 0) return t;
    attend_tile<B>(p, sequence_mask(masks, t.b), modifier, t, w.tile_keys, keys.begin, keys.end, o, dvp, lse);
    return t;
  };

  if (!splits.split()) {
    exec.parallel_for(static_cast<std::size_t>(w.items), [&](std::size_t n) {
      const index_t item = splits.order[n];
      thread_local std::vector<float> o_buf, lse_buf;
      o_buf.resize(static_cast<std::size_t>(max_rows * dvp));
      lse_buf.resize(static_cast<std::size_t>(max_rows));
      const tile_rows t = attend(item, splits.keys[item], o_buf.data(), lse_buf.data());
      for (index_t r = 0; r < t.rows(); ++r)
        store_row(p, t.b, t.position(r), t.head(r), o_buf.data() + r * dvp, lse_buf[r]);
    });
    return;
  }

  // Split-KV (flash-decoding): each split leaves a partial (o, lse); a second
  // pass merges the splits of each item.
  const index_t units = splits.count();
  std::vector<float> part_o(static_cast<std::size_t>(units * max_rows * dvp));
  std::vector<float> part_lse(static_cast<std::size_t>(units * max_rows));
  std::vector<index_t> item_of(static_cast<std::size_t>(units));
  for (index_t item = 0; item < w.items; ++item)
    std::fill(item_of.begin() + splits.first[item], item_of.begin() + splits.first[item + 1], item);
  exec.parallel_for(static_cast<std::size_t>(units), [&](std::size_t n) {
    const index_t u = splits.order[n];
    attend(item_of[u], splits.keys[u], part_o.data() + u * max_rows * dvp, part_lse.data() + u * max_rows);
  });
  exec.parallel_for(static_cast<std::size_t>(w.items), [&](std::size_t item) {
    const tile_rows t = locate(p, w, static_cast<index_t>(item));
    const index_t u0 = splits.first[item], u1 = splits.first[item + 1];
    for (index_t r = 0; r < t.rows(); ++r) {
      float* o = part_o.data() + (u0 * max_rows + r) * dvp;
      float lse = part_lse[u0 * max_rows + r];
      for (index_t u = u0 + 1; u < u1; ++u)
        merge_row(o, lse, part_o.data() + (u * max_rows + r) * dvp, part_lse[u * max_rows + r], p.dv());
      store_row(p, t.b, t.position(r), t.head(r), o, lse);
    }
  });
}

}  // namespace attn::detail
