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
  index_t heads;        // query heads per tile (a GQA group, or a chunk of it)
  index_t head_chunks;  // chunks per group
  index_t positions;    // query positions per tile
  index_t query_tiles;
  index_t items;        // batch * hkv * head_chunks * query_tiles
  index_t splits;       // KV splits per item (1 unless work is scarce)
  index_t split_keys;   // keys per split, a multiple of the KV tile

  work_split(const softmax_problem& p, std::size_t threads) {
    const index_t rows = B::query_tile_rows;
    heads = std::min(p.group(), rows);
    head_chunks = ceil_div(p.group(), heads);
    positions = std::max<index_t>(1, rows / heads);
    query_tiles = ceil_div(p.nq(), positions);
    items = p.batch() * p.hkv() * head_chunks * query_tiles;
    // Split the keys when there are fewer items than twice the threads
    // (decode), keeping at least two KV tiles per split.
    const index_t kv_tiles = ceil_div(p.nk(), B::kv_tile);
    const index_t want = static_cast<index_t>(2 * threads);
    splits = 1;
    if (threads > 1 && items > 0 && items < want)
      splits = std::clamp<index_t>(ceil_div(want, items), 1, std::max<index_t>(1, kv_tiles / 2));
    split_keys = ceil_div(kv_tiles, splits) * B::kv_tile;
    splits = std::max<index_t>(1, ceil_div(p.nk(), split_keys));
  }
  index_t max_rows() const { return heads * positions; }
};

// One work item's tile geometry.
struct tile_rows {
  index_t b, g;       // batch, kv head
  index_t i0, h0;     // first position, first query head
  index_t positions;  // positions in this tile
  index_t heads;      // query heads in this tile
  index_t rows() const { return positions * heads; }
  index_t position(index_t r) const { return i0 + r / heads; }
  index_t head(index_t r) const { return h0 + r % heads; }
};

template <class B>
tile_rows locate(const softmax_problem& p, const work_split<B>& w, index_t item) {
  const index_t qt = item % w.query_tiles;
  index_t rest = item / w.query_tiles;
  const index_t hc = rest % w.head_chunks;
  rest /= w.head_chunks;
  const index_t g = rest % p.hkv();
  const index_t b = rest / p.hkv();
  tile_rows t;
  t.b = b;
  t.g = g;
  t.i0 = qt * w.positions;
  t.h0 = g * p.group() + hc * w.heads;
  t.positions = std::min(w.positions, p.nq() - t.i0);
  t.heads = std::min(w.heads, (g + 1) * p.group() - t.h0);
  return t;
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
                 index_t key_lo, index_t key_hi, float* o, index_t ldo, float* lse_out) {
  constexpr index_t W = static_cast<index_t>(B::width);
  constexpr index_t QW = B::score_query_vecs * W;
  constexpr index_t kv_tile = B::kv_tile;
  const index_t rows = t.rows();
  const index_t ldq = round_up(rows, QW);
  const index_t dk = p.dk(), dv = p.dv(), dvp = round_up(dv, W);
  const bool pack_k = p.k.stride[3] != 1;
  const bool pack_v = p.v.stride[3] != 1 || dv % W != 0;

  // Scratch (all O(tile)):
  scratch_carver carve(thread_scratch().floats(
      scratch_carver::round_up(dk * ldq) + scratch_carver::round_up(kv_tile * ldq) +
      3 * scratch_carver::round_up(ldq) + (pack_k ? scratch_carver::round_up(kv_tile * dk) : 0) +
      (pack_v ? scratch_carver::round_up(kv_tile * dvp) : 0)));
  float* qt = carve.take(dk * ldq);       // (Dk, ldq)   packed, scaled Q^T
  float* st = carve.take(kv_tile * ldq);  // (kv_tile, ldq) S^T, then P^T
  float* m = carve.take(ldq);             // (ldq)       running max, log2 units
  float* l = carve.take(ldq);             // (ldq)       running sum
  float* alpha = carve.take(ldq);         // (ldq)       rescale factor of this tile
  float* kbuf = pack_k ? carve.take(kv_tile * dk) : nullptr;   // (kv_tile, Dk)
  float* vbuf = pack_v ? carve.take(kv_tile * dvp) : nullptr;  // (kv_tile, Dvp)

  // Pack Q^T with scale * log2(e) folded in; padding columns are zero.
  const float q_scale = p.scale * log2e;
  for (index_t d = 0; d < dk; ++d) {
    for (index_t r = 0; r < rows; ++r) qt[d * ldq + r] = q_scale * p.q(t.b, t.position(r), t.head(r), d);
    for (index_t r = rows; r < ldq; ++r) qt[d * ldq + r] = 0.0f;
  }
  std::fill_n(m, ldq, lowest_score);
  std::fill_n(l, ldq, 0.0f);
  for (index_t r = 0; r < rows; ++r) std::fill_n(o + r * ldo, dvp, 0.0f);

  const query_block qb{t.b, t.i0, t.i0 + t.positions, t.h0, t.h0 + t.heads, p.nq(), p.nk()};
  const key_range range = mask.keys(qb);
  const index_t lo = std::max(range.begin, key_lo), hi = std::min(range.end, key_hi);
  for (index_t tile = lo / kv_tile * kv_tile; tile < hi; tile += kv_tile) {
    const index_t j0 = std::max(tile, lo), j1 = std::min(tile + kv_tile, hi);
    const index_t keys = j1 - j0;
    const tile_kind kind = mask.classify(qb, j0, j1);
    if (kind == tile_kind::empty) continue;

    // S^T = K Q^T
    const float* k = p.k.row(t.b, j0, t.g);
    index_t k_stride = p.k.stride[1];
    if (pack_k) {
      for (index_t j = 0; j < keys; ++j)
        for (index_t d = 0; d < dk; ++d) kbuf[j * dk + d] = p.k(t.b, j0 + j, t.g, d);
      k = kbuf;
      k_stride = dk;
    }
    score_tile<B>(k, k_stride, keys, dk, qt, ldq, st);

    // Mask (partial tiles only): disallowed pairs are removed, not penalised.
    if (kind == tile_kind::partial) {
      for (index_t j = 0; j < keys; ++j)
        for (index_t r = 0; r < rows; ++r)
          if (!mask.allowed(t.b, t.head(r), t.position(r), j0 + j))
            st[j * ldq + r] = -std::numeric_limits<float>::infinity();
    }

    softmax_update<B>(st, keys, ldq, m, l, alpha);
    rescale_rows<B>(o, ldo, rows, dvp, alpha);

    // O += P V
    const float* v = p.v.row(t.b, j0, t.g);
    index_t v_stride = p.v.stride[1];
    if (pack_v) {
      for (index_t j = 0; j < keys; ++j) {
        for (index_t d = 0; d < dv; ++d) vbuf[j * dvp + d] = p.v(t.b, j0 + j, t.g, d);
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
            B::store(o + r * ldo + d, B::fma(pb, B::load(v + j * v_stride + d), B::load(o + r * ldo + d)));
        }
    } else {
      value_tile<B>(st, ldq, rows, v, v_stride, keys, dvp, o, ldo);
    }
  }

  // Finalize: O / l and lse.
  for (index_t r = 0; r < rows; ++r) {
    const row_result res = finish_row(m[r], l[r]);
    const auto inv = B::broadcast(res.inverse_sum);
    for (index_t d = 0; d < dvp; d += W) B::store(o + r * ldo + d, B::mul(inv, B::load(o + r * ldo + d)));
    lse_out[r] = res.lse;
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
      attend_tile<B>(p, mask, t, 0, p.nk(), o_buf.data(), dvp, lse_buf.data());
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
    attend_tile<B>(p, mask, t, s * w.split_keys, std::min(p.nk(), (s + 1) * w.split_keys),
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
