// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "attn/core/executor.hpp"
#include "attn/core/merge.hpp"
#include "attn/core/micro_kernels.hpp"
#include "attn/core/online_softmax.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/scratch.hpp"
#include "attn/core/tensor.hpp"

// The one tiled online-softmax loop every softmax variant runs on.
//
// Work item = (batch, kv head, query tile, KV split). A query tile packs the
// query heads of a GQA group that share the kv head, times a run of
// positions, so each K/V tile is read once per group:
//
//   rows r of the tile:  position i0 + r / heads, query head h0 + r % heads
//
// Per KV tile (classed by the mask): S^T = K Q^T, mask (partial tiles only),
// online-softmax update, O = alpha O + P V. Finalize: 1/l, lse, sinks.
namespace attn::detail {

// A validated softmax problem (the public entry points build it).
struct softmax_problem {
  view4<const float> q;  // (B, Nq, Hq, Dk)
  view4<const float> k;  // (B, Nk, Hkv, Dk)
  view4<const float> v;  // (B, Nk, Hkv, Dv)
  view4<float> out;      // (B, Nq, Hq, Dv)
  view3<float> lse;      // (B, Nq, Hq) or empty
  float scale;
  const float* sinks;    // (Hq) sink logits or null

  index_t batch() const { return q.extent[0]; }
  index_t nq() const { return q.extent[1]; }
  index_t hq() const { return q.extent[2]; }
  index_t dk() const { return q.extent[3]; }
  index_t nk() const { return k.extent[1]; }
  index_t hkv() const { return k.extent[2]; }
  index_t dv() const { return v.extent[3]; }
  index_t group() const { return hq() / hkv(); }
};

constexpr index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }
constexpr index_t ceil_div(index_t x, index_t m) { return (x + m - 1) / m; }

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
  index_t splits;       // KV splits per item (1 unless work is scarce)
  index_t split_keys;   // keys per split, a multiple of the KV tile

  work_split(const softmax_problem& p, std::size_t threads) {
    const index_t rows = B::query_tile_rows;
    heads = std::min(p.group(), rows);
    head_chunks = ceil_div(p.group(), heads);
    positions = std::max<index_t>(1, rows / heads);
    query_tiles = ceil_div(p.nq(), positions);
    // Decode (one tile per kv head): one item walks the keys of every kv
    // head, so K and V stream from memory in their own order instead of as
    // one short row per head and key; the KV tile shrinks to keep one tile of
    // all heads in L2.
    kv_heads = (query_tiles == 1 && head_chunks == 1) ? p.hkv() : 1;
    tile_keys = B::kv_tile;
    while (tile_keys > 2 * B::score_keys && tile_keys * kv_heads > 2 * B::kv_tile) tile_keys /= 2;
    items = p.batch() * (p.hkv() / kv_heads) * head_chunks * query_tiles;
    // Split the keys when there are fewer items than twice the threads,
    // keeping at least two KV tiles per split.
    const index_t kv_tiles = ceil_div(p.nk(), tile_keys);
    const index_t want = static_cast<index_t>(2 * threads);
    splits = 1;
    if (threads > 1 && items > 0 && items < want)
      splits = std::clamp<index_t>(ceil_div(want, items), 1, std::max<index_t>(1, kv_tiles / 2));
    split_keys = std::max<index_t>(1, ceil_div(kv_tiles, splits)) * tile_keys;
    splits = std::max<index_t>(1, ceil_div(p.nk(), split_keys));
  }
  index_t max_rows() const { return kv_heads * heads * positions; }
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

template <class B>
tile_rows locate(const softmax_problem& p, const work_split<B>& w, index_t item) {
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
  t.positions = std::min(w.positions, p.nq() - t.i0);
  t.h_offset = hc * w.heads;
  t.heads = std::min(w.heads, p.group() - t.h_offset);
  t.group = p.group();
  return t;
}

// Asks for rows x length floats at the given row stride to be brought into the
// cache: decode streams K and V once, and a key row of one head is only a few
// cache lines, too short for the hardware prefetcher to find.
inline void prefetch_rows(const float* p, index_t stride, index_t rows, index_t length) {
  constexpr index_t line = 64 / sizeof(float);
  for (index_t j = 0; j < rows; ++j)
    for (index_t d = 0; d < length; d += line) __builtin_prefetch(p + j * stride + d, 0, 2);
}

// True when every value of the (keys, dv) tile is finite: v * 0 is 0 for
// finite v and NaN otherwise.
template <class B>
bool tile_is_finite(const float* v, index_t stride, index_t keys, index_t dv) {
  constexpr index_t W = static_cast<index_t>(B::width);
  auto acc = B::zero();
  const auto zero = B::zero();
  for (index_t j = 0; j < keys; ++j)
    for (index_t d = 0; d < dv; d += W) acc = B::fma(B::load(v + j * stride + d), zero, acc);
  return B::reduce_add(acc) == 0.0f;
}

// Runs one work item over keys [key_lo, key_hi) and leaves, per row r, the
// normalised output in o[r * ldo ...] and the natural-log lse in lse_out[r].
template <class B, class Mask>
void attend_tile(const softmax_problem& p, const Mask& mask, const tile_rows& t,
                 index_t tile_keys, index_t key_lo, index_t key_hi, float* o, index_t ldo,
                 float* lse_out) {
  constexpr index_t W = static_cast<index_t>(B::width);
  constexpr index_t QW = B::score_query_vecs * W;
  const index_t rows = t.rows_per_kv();
  const index_t ldq = rows <= W ? W : round_up(rows, QW);
  const index_t dk = p.dk(), dv = p.dv(), dvp = round_up(dv, W);
  const bool pack_k = p.k.stride[3] != 1;
  // Decode-shaped tiles take dot products along Dk (Q packed by rows).
  const bool by_rows = rows <= W && dk % W == 0 && W > 1;
  const bool pack_v = p.v.stride[3] != 1 || dv % W != 0;
  auto padded = [](index_t n) { return static_cast<index_t>(scratch_carver::round_up(n)); };

  // Scratch, all O(tile): per kv head the packed queries and the row state,
  // shared the S^T tile and the packed K/V (only for non-unit inner strides).
  const index_t per_kv = padded(dk * ldq) + 3 * padded(ldq);
  scratch_carver carve(thread_scratch().floats(
      t.kv_heads * per_kv + padded(tile_keys * ldq) +
      (pack_k ? padded(tile_keys * dk) : 0) + (pack_v ? padded(tile_keys * dvp) : 0)));
  float* state = carve.take(t.kv_heads * per_kv);
  float* st = carve.take(tile_keys * ldq);  // (tile_keys, ldq) S^T, then P^T
  float* kbuf = pack_k ? carve.take(tile_keys * dk) : nullptr;   // (tile_keys, Dk)
  float* vbuf = pack_v ? carve.take(tile_keys * dvp) : nullptr;  // (tile_keys, Dvp)
  auto qt_of = [&](index_t kv) { return state + kv * per_kv; };  // (Dk, ldq) Q^T or (rows, Dk) Q
  auto m_of = [&](index_t kv) { return qt_of(kv) + padded(dk * ldq); };  // (ldq) running max
  auto l_of = [&](index_t kv) { return m_of(kv) + padded(ldq); };        // (ldq) running sum
  auto alpha_of = [&](index_t kv) { return l_of(kv) + padded(ldq); };    // (ldq) rescale

  // Pack Q^T (or Q by rows) with scale * log2(e) folded in; padding is zero.
  const float q_scale = p.scale * log2e;
  for (index_t kv = 0; kv < t.kv_heads; ++kv) {
    float* qt = qt_of(kv);
    const index_t row_stride = by_rows ? dk : 1, d_stride = by_rows ? 1 : ldq;
    for (index_t d = 0; d < dk; ++d) {
      for (index_t r = 0; r < rows; ++r) {
        const index_t tr = kv * rows + r;
        qt[d * d_stride + r * row_stride] = q_scale * p.q(t.b, t.position(tr), t.head(tr), d);
      }
      if (!by_rows)
        for (index_t r = rows; r < ldq; ++r) qt[d * ldq + r] = 0.0f;
    }
    std::fill_n(m_of(kv), ldq, lowest_score);
    std::fill_n(l_of(kv), ldq, 0.0f);
  }
  for (index_t r = 0; r < t.rows(); ++r) std::fill_n(o + r * ldo, dvp, 0.0f);
  if (by_rows) std::fill_n(st, tile_keys * ldq, 0.0f);  // padding columns stay zero

  auto block_of = [&](index_t kv) {
    const index_t h0 = (t.g0 + kv) * t.group + t.h_offset;
    return query_block{t.b, t.i0, t.i0 + t.positions, h0, h0 + t.heads, p.nq(), p.nk()};
  };
  index_t lo = key_hi, hi = key_lo;  // union of the kv heads' key ranges
  for (index_t kv = 0; kv < t.kv_heads; ++kv) {
    const key_range range = mask.keys(block_of(kv));
    lo = std::min(lo, std::max(range.begin, key_lo));
    hi = std::max(hi, std::min(range.end, key_hi));
  }

  for (index_t tile = lo / tile_keys * tile_keys; tile < hi; tile += tile_keys) {
    const index_t next = std::min(tile + 2 * tile_keys, hi) - (tile + tile_keys);
    for (index_t kv = 0; kv < t.kv_heads; ++kv) {
      const index_t g = t.g0 + kv;
      const query_block qb = block_of(kv);
      const key_range range = mask.keys(qb);
      const index_t j0 = std::max({tile, lo, range.begin}), j1 = std::min({tile + tile_keys, hi, range.end});
      if (next > 0) {  // start this head's next tile on its way from memory
        prefetch_rows(p.k.row(t.b, tile + tile_keys, g), p.k.stride[1], next, dk * p.k.stride[3]);
        prefetch_rows(p.v.row(t.b, tile + tile_keys, g), p.v.stride[1], next, dv * p.v.stride[3]);
      }
      if (j1 <= j0) continue;
      const index_t keys = j1 - j0;
      const tile_kind kind = mask.classify(qb, j0, j1);
      if (kind == tile_kind::empty) continue;
      float* m = m_of(kv);
      float* l = l_of(kv);
      float* alpha = alpha_of(kv);
      float* ok = o + kv * rows * ldo;

      // S^T = K Q^T
      const float* k = p.k.row(t.b, j0, g);
      index_t k_stride = p.k.stride[1];
      if (pack_k) {
        for (index_t j = 0; j < keys; ++j)
          for (index_t d = 0; d < dk; ++d) kbuf[j * dk + d] = p.k(t.b, j0 + j, g, d);
        k = kbuf;
        k_stride = dk;
      }
      if (by_rows) {
        score_dot_tile<B>(k, k_stride, keys, dk, qt_of(kv), rows, st, ldq);
      } else {
        score_tile<B>(k, k_stride, keys, dk, qt_of(kv), ldq, st);
      }

      // Mask (partial tiles only): disallowed pairs are removed, not penalised.
      if (kind == tile_kind::partial) {
        for (index_t j = 0; j < keys; ++j)
          for (index_t r = 0; r < rows; ++r) {
            const index_t tr = kv * rows + r;
            if (!mask.allowed(t.b, t.head(tr), t.position(tr), j0 + j))
              st[j * ldq + r] = -std::numeric_limits<float>::infinity();
          }
      }

      softmax_update<B>(st, keys, ldq, m, l, alpha);
      rescale_rows<B>(ok, ldo, rows, dvp, alpha);

      // O += P V
      const float* v = p.v.row(t.b, j0, g);
      index_t v_stride = p.v.stride[1];
      if (pack_v) {
        for (index_t j = 0; j < keys; ++j) {
          for (index_t d = 0; d < dv; ++d) vbuf[j * dvp + d] = p.v(t.b, j0 + j, g, d);
          for (index_t d = dv; d < dvp; ++d) vbuf[j * dvp + d] = 0.0f;
        }
        v = vbuf;
        v_stride = dvp;
      }
      if (kind == tile_kind::partial && !tile_is_finite<B>(v, v_stride, keys, dvp)) {
        // A masked pair has p = 0, and 0 * NaN would leak a non-finite value
        // into a row that never attends to it: skip zero weights explicitly.
        for (index_t r = 0; r < rows; ++r)
          for (index_t j = 0; j < keys; ++j) {
            const float pr = st[j * ldq + r];
            if (pr == 0.0f) continue;
            const auto pb = B::broadcast(pr);
            for (index_t d = 0; d < dvp; d += W)
              B::store(ok + r * ldo + d,
                       B::fma(pb, B::load(v + j * v_stride + d), B::load(ok + r * ldo + d)));
          }
      } else {
        value_tile<B>(st, ldq, rows, v, v_stride, keys, dvp, ok, ldo);
      }
    }
  }

  // Finalize: O / l and lse.
  for (index_t kv = 0; kv < t.kv_heads; ++kv)
    for (index_t r = 0; r < rows; ++r) {
      const row_result res = finish_row(m_of(kv)[r], l_of(kv)[r]);
      float* orow = o + (kv * rows + r) * ldo;
      const auto inv = B::broadcast(res.inverse_sum);
      for (index_t d = 0; d < dvp; d += W) B::store(orow + d, B::mul(inv, B::load(orow + d)));
      lse_out[kv * rows + r] = res.lse;
    }
}

// Writes one finished row to out/lse, merging in the sink logit first.
inline void store_row(const softmax_problem& p, index_t b, index_t i, index_t h, float* o,
                      float lse) {
  if (p.sinks) merge_row(o, lse, nullptr, p.sinks[h], p.dv());
  for (index_t d = 0; d < p.dv(); ++d) p.out(b, i, h, d) = o[d];
  if (!p.lse.empty()) p.lse(b, i, h) = lse;
}

template <class B, class Mask, class Exec>
void run_softmax(const softmax_problem& p, const Mask& mask, const Exec& exec) {
  const work_split<B> w(p, exec.concurrency());
  if (w.items == 0) return;
  constexpr index_t W = static_cast<index_t>(B::width);
  const index_t dvp = round_up(p.dv(), W);
  const index_t max_rows = w.max_rows();

  if (w.splits == 1) {
    exec.parallel_for(static_cast<std::size_t>(w.items), [&](std::size_t item) {
      const tile_rows t = locate(p, w, static_cast<index_t>(item));
      thread_local std::vector<float> o_buf, lse_buf;
      o_buf.resize(static_cast<std::size_t>(max_rows * dvp));
      lse_buf.resize(static_cast<std::size_t>(max_rows));
      attend_tile<B>(p, mask, t, w.tile_keys, 0, p.nk(), o_buf.data(), dvp, lse_buf.data());
      for (index_t r = 0; r < t.rows(); ++r)
        store_row(p, t.b, t.position(r), t.head(r), o_buf.data() + r * dvp, lse_buf[r]);
    });
    return;
  }

  // Split-KV (flash-decoding): each (item, split) leaves a partial (o, lse);
  // a second pass merges the splits of each item.
  const index_t units = w.items * w.splits;
  std::vector<float> part_o(static_cast<std::size_t>(units * max_rows * dvp));
  std::vector<float> part_lse(static_cast<std::size_t>(units * max_rows));
  exec.parallel_for(static_cast<std::size_t>(units), [&](std::size_t unit) {
    const index_t u = static_cast<index_t>(unit);
    const tile_rows t = locate(p, w, u / w.splits);
    const index_t s = u % w.splits;
    attend_tile<B>(p, mask, t, w.tile_keys, s * w.split_keys, std::min(p.nk(), (s + 1) * w.split_keys),
                   part_o.data() + u * max_rows * dvp, dvp, part_lse.data() + u * max_rows);
  });
  exec.parallel_for(static_cast<std::size_t>(w.items), [&](std::size_t item) {
    const index_t it = static_cast<index_t>(item);
    const tile_rows t = locate(p, w, it);
    for (index_t r = 0; r < t.rows(); ++r) {
      const index_t u0 = it * w.splits;
      float* o = part_o.data() + (u0 * max_rows + r) * dvp;
      float lse = part_lse[u0 * max_rows + r];
      for (index_t s = 1; s < w.splits; ++s)
        merge_row(o, lse, part_o.data() + ((u0 + s) * max_rows + r) * dvp,
                  part_lse[(u0 + s) * max_rows + r], p.dv());
      store_row(p, t.b, t.position(r), t.head(r), o, lse);
    }
  });
}

}  // namespace attn::detail
