// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/element.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/micro_kernels.hpp"
#include "attn/core/online_softmax.hpp"
#include "attn/core/scratch.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/variant/dense.hpp"

// MoBA, Mixture of Block Attention (Lu et al. 2025; DESIGN §2 "Block-sparse").
//
// Keys fall in blocks of bk (the last may be shorter). The gate scores every
// past block of a query by q_i . mean(k over the block), unscaled, in fp32,
// and keeps the query's own block (causal inside it) plus the topk - 1 best
// past blocks; future blocks are never eligible and ties go to the lower
// block. Softmax attention then runs over exactly the selected keys.
//
// Cost: the gate is O(N * N/bk * Dk) (block means once per kv head, then a
// small GEMM of queries against means through the core's score kernel); the
// attention is O(N * topk * bk * (Dk + Dv)).
//
// Kernel: neighbouring queries select different blocks, so query tiles over
// the union of their blocks would degenerate to dense attention. It runs
// key-block-major instead, as MoBA's reference implementation does with
// varlen FlashAttention: per work item (batch, kv head, span of positions)
// and per key block, the (position, head) rows that selected the block are
// gathered in chunks of query_tile_rows, scored against the block's KV tiles
// and folded into per-row online-softmax state (m, l, fp32 O) that lives for
// the whole item, the size of the item's output (spans are cut so that it
// stays under 32 MiB per thread).
//
// q, k, v and out may each be fp32, fp16 or bf16, widened as they are gathered (fp32 compute).
//
// Extra memory: the selection (B, Hq, Nq, topk) int32, the block means
// (B, Hkv, N/bk, Dk), per thread one span's row state and O(tile) scratch;
// never N x N.
namespace attn {

struct moba_options {
  index_t block_k = 512;       // keys per block, bk (the last block may be shorter)
  index_t topk = 3;            // blocks per query, its own block included
  std::optional<float> scale;  // default 1 / sqrt(Dk)
};

// The gate's choice: for each (b, query head h, query i) the selected key
// blocks in ascending order, padded with -1 (a query near the start has fewer
// eligible blocks than topk; one with no key at or before its position,
// i + Nk - Nq < 0, has none). topk here is min(options' topk, ceil(Nk / bk)).
struct moba_selection {
  index_t batch = 0, heads = 0, queries = 0, topk = 0;
  std::vector<std::int32_t> blocks;  // (B, Hq, Nq, topk)

  std::span<const std::int32_t> operator()(index_t b, index_t h, index_t i) const {
    return {blocks.data() + offset(b, h, i), static_cast<std::size_t>(topk)};
  }
  std::span<std::int32_t> operator()(index_t b, index_t h, index_t i) {
    return {blocks.data() + offset(b, h, i), static_cast<std::size_t>(topk)};
  }

 private:
  std::size_t offset(index_t b, index_t h, index_t i) const {
    return static_cast<std::size_t>(((b * heads + h) * queries + i) * topk);
  }
};

namespace detail {

// The block geometry of one problem.
struct moba_blocks {
  index_t size;    // bk
  index_t count;   // ceil(Nk / bk)
  index_t nk;
  index_t topk;    // as asked
  index_t width;   // selections stored per query: min(topk, count)
  index_t offset;  // Nk - Nq: query i sits at key position i + offset

  // The query's own block, or -1 when no key precedes it (i + offset < 0).
  index_t own(index_t i) const {
    const index_t pos = i + offset;
    return pos < 0 ? -1 : pos / size;
  }
  index_t begin(index_t c) const { return c * size; }
  index_t end(index_t c) const { return std::min(nk, (c + 1) * size); }
};

inline moba_blocks make_moba_blocks(const moba_options& opt, index_t nq, index_t nk) {
  require(opt.block_k >= 1, "block_k", "a block size >= 1", opt.block_k);
  require(opt.topk >= 1, "topk", "a block count >= 1 (the query's own block included)", opt.topk);
  const index_t count = ceil_div(nk, opt.block_k);
  require(count <= std::numeric_limits<std::int32_t>::max(), "block_k",
          "at most 2^31 - 1 blocks (int32 block indices)", std::to_string(count) + " blocks");
  return {opt.block_k, count, nk, opt.topk, std::min(opt.topk, count), nk - nq};
}

// The gate's argument checks: q and k as in softmax attention.
template <class Q, class K>
void check_gate_inputs(const view4<const Q>& q, const view4<const K>& k) {
  const index_t b = q.extent[0], hq = q.extent[2], dk = q.extent[3];
  require_view(q, "q", "(B, Nq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  const index_t hkv = k.extent[2];
  require_view(k, "k", dims({{"B", b}, {"Nk", -1}, {"Hkv", -1}, {"Dk", dk}}) + " with Hkv >= 1",
               k.extent[0] == b && hkv >= 1 && k.extent[3] == dk);
  require(hq % hkv == 0, "k", "a kv head count dividing Hq = " + std::to_string(hq) + " (GQA)",
          "Hkv = " + std::to_string(hkv));
}

// Columns of a packed Q^T tile of `rows` queries: a multiple of the score
// kernel's width, as the core's workspace pads them.
template <class B>
index_t packed_columns(index_t rows) {
  constexpr index_t W = static_cast<index_t>(B::width);
  return rows <= W ? W : round_up(rows, B::score_query_vecs * W);
}

// Gate keys: the fp32 mean of each key block, per (b, kv head):
// (B, Hkv, blocks, Dk), computed once for every query that reads them.
template <class K, class Exec>
std::vector<float> key_block_means(const view4<const K>& k, const moba_blocks& blk,
                                   const Exec& exec) {
  const index_t nb = k.extent[0], hkv = k.extent[2], dk = k.extent[3];
  std::vector<float> means(static_cast<std::size_t>(nb * hkv * blk.count * dk), 0.0f);
  exec.parallel_for(static_cast<std::size_t>(nb * hkv), [&](std::size_t item) {
    const index_t b = static_cast<index_t>(item) / hkv, g = static_cast<index_t>(item) % hkv;
    for (index_t c = 0; c < blk.count; ++c) {
      float* mean = means.data() + (static_cast<index_t>(item) * blk.count + c) * dk;  // (Dk)
      for (index_t j = blk.begin(c); j < blk.end(c); ++j) {
        const K* key = k.row(b, j, g);
        for (index_t d = 0; d < dk; ++d) mean[d] += to_float(key[d * k.stride[3]]);
      }
      const float n = static_cast<float>(blk.end(c) - blk.begin(c));
      for (index_t d = 0; d < dk; ++d) mean[d] /= n;
    }
  });
  return means;
}

// The best `keep` past blocks of one query seen so far, best first; among
// equal scores the lower block comes first and a later block never displaces
// it. NaN scores rank below every number.
struct best_blocks {
  float* score;
  std::int32_t* block;
  index_t keep;
  index_t count = 0;

  void offer(float s, std::int32_t c) {
    if (std::isnan(s)) s = -std::numeric_limits<float>::infinity();
    index_t at;
    if (count < keep)
      at = count++;
    else if (s > score[keep - 1])
      at = keep - 1;
    else
      return;
    for (; at > 0 && s > score[at - 1]; --at) {
      score[at] = score[at - 1];
      block[at] = block[at - 1];
    }
    score[at] = s;
    block[at] = c;
  }
};

// The gate of one chunk of positions [i0, i1) of one (b, kv head): gate
// scores S^T (means x rows) = M . Q^T by the core's score kernel, a tile of
// means at a time, each row offered its past blocks; then the selection of
// every row written ascending (past blocks, own block, -1 padding).
template <class B, class Q>
void select_blocks(const view4<const Q>& q, const float* means,  // means: (blocks, Dk)
                   const moba_blocks& blk, index_t b, index_t g, index_t group, index_t i0,
                   index_t i1, moba_selection& sel) {
  const index_t dk = q.extent[3], rows = (i1 - i0) * group, ldq = packed_columns<B>(rows);
  const index_t tile_blocks = B::kv_tile;
  const index_t keep = blk.width - 1;  // past blocks per query
  scratch_carver carve(thread_scratch().floats(
      scratch_carver::round_up(static_cast<std::size_t>(dk * ldq)) +
      scratch_carver::round_up(static_cast<std::size_t>(tile_blocks * ldq))));
  float* qt = carve.take(static_cast<std::size_t>(dk * ldq));           // (Dk, ldq) Q^T, unscaled
  float* st = carve.take(static_cast<std::size_t>(tile_blocks * ldq));  // (tile_blocks, ldq)

  thread_local std::vector<float> best_score;
  thread_local std::vector<std::int32_t> best_block;
  thread_local std::vector<best_blocks> best;
  best_score.resize(static_cast<std::size_t>(rows * keep));
  best_block.resize(static_cast<std::size_t>(rows * keep));
  best.clear();
  for (index_t r = 0; r < rows; ++r)
    best.push_back({best_score.data() + r * keep, best_block.data() + r * keep, keep});

  const index_t past_end = std::max<index_t>(0, blk.own(i1 - 1));  // blocks any row may score
  if (keep > 0 && past_end > 0) {
    std::fill_n(qt, dk * ldq, 0.0f);
    for (index_t r = 0; r < rows; ++r) {
      const Q* src = q.row(b, i0 + r / group, g * group + r % group);
      for (index_t d = 0; d < dk; ++d) qt[d * ldq + r] = to_float(src[d * q.stride[3]]);
    }
    for (index_t c0 = 0; c0 < past_end; c0 += tile_blocks) {
      const index_t c1 = std::min(past_end, c0 + tile_blocks);
      score_tile<B>(means + c0 * dk, dk, c1 - c0, dk, qt, ldq, st);
      for (index_t r = 0; r < rows; ++r) {
        const index_t last = std::min(c1, blk.own(i0 + r / group));
        for (index_t c = c0; c < last; ++c)
          best[static_cast<std::size_t>(r)].offer(st[(c - c0) * ldq + r], static_cast<std::int32_t>(c));
      }
    }
  }

  for (index_t r = 0; r < rows; ++r) {
    const index_t i = i0 + r / group;
    const std::span<std::int32_t> out = sel(b, g * group + r % group, i);
    std::fill(out.begin(), out.end(), -1);
    const index_t own = blk.own(i);
    if (own < 0) continue;
    const best_blocks& chosen = best[static_cast<std::size_t>(r)];
    std::copy_n(chosen.block, chosen.count, out.begin());
    std::sort(out.begin(), out.begin() + chosen.count);
    out[static_cast<std::size_t>(chosen.count)] = static_cast<std::int32_t>(own);
  }
}

template <class B, class Q, class K, class Exec>
moba_selection run_moba_gate(const view4<const Q>& q, const view4<const K>& k,
                             const moba_blocks& blk, const Exec& exec) {
  const index_t nb = q.extent[0], nq = q.extent[1], hq = q.extent[2], hkv = k.extent[2];
  const index_t group = hq / hkv;
  moba_selection sel{nb, hq, nq, blk.width, {}};
  sel.blocks.assign(static_cast<std::size_t>(nb * hq * nq * blk.width), -1);
  if (sel.blocks.empty()) return sel;
  const std::vector<float> means = key_block_means(k, blk, exec);
  // Work items: (b, kv head, chunk of positions), a chunk being one packed
  // query tile of query_tile_rows rows (positions x the group's heads).
  const index_t positions = std::max<index_t>(1, B::query_tile_rows / group);
  const index_t chunks = ceil_div(nq, positions);
  exec.parallel_for(static_cast<std::size_t>(nb * hkv * chunks), [&](std::size_t item) {
    const index_t it = static_cast<index_t>(item);
    const index_t chunk = it % chunks, bg = it / chunks;
    const index_t i0 = chunk * positions, i1 = std::min(nq, i0 + positions);
    select_blocks<B>(q, means.data() + bg * blk.count * q.extent[3], blk, bg / hkv, bg % hkv, group,
                     i0, i1, sel);
  });
  return sel;
}

// How the attention is cut into work items: (b, kv head, span of query
// positions). A span splits a sequence when there are fewer (b, kv head)
// pairs than twice the threads (keeping at least four chunks of rows per
// span), and when its row state would pass max_state_floats.
template <class B>
struct moba_split {
  static constexpr index_t max_state_floats = index_t{1} << 23;  // 32 MiB of O per thread
  index_t spans, span_positions, items;

  template <class P>
  moba_split(const P& p, std::size_t threads) {
    const index_t pairs = p.batch() * p.hkv();
    const index_t want = ceil_div(static_cast<index_t>(2 * threads), std::max<index_t>(1, pairs));
    const index_t most = std::max<index_t>(1, p.nq() * p.group() / (4 * B::query_tile_rows));
    spans = std::clamp<index_t>(want, 1, most);
    const index_t row_floats = p.group() * round_up(p.dv(), static_cast<index_t>(B::width));
    span_positions = std::clamp<index_t>(ceil_div(p.nq(), spans), 1,
                                         std::max<index_t>(1, max_state_floats / row_floats));
    spans = p.nq() == 0 ? 0 : ceil_div(p.nq(), span_positions);
    items = pairs * spans;
  }
};

// One work item: positions [i0, i1) of kv head g of batch b, every query
// head of its group. Rows r = (i - i0) * group + (h - g * group) keep their
// online-softmax state (m, l, fp32 O) across the item's key blocks.
// K and V rows are read in place when stored as fp32 with inner stride 1;
// 16-bit rows are widened into kbuf / vbuf once per tile for every row of
// the chunk, as the core packs them for its prefill kernels (workspace).
template <class B, class P>
void attend_moba_span(const P& p, const moba_selection& sel, const moba_blocks& blk, index_t b,
                      index_t g, index_t i0, index_t i1) {
  constexpr index_t W = static_cast<index_t>(B::width);
  constexpr float removed = -std::numeric_limits<float>::infinity();
  const index_t group = p.group(), dk = p.dk(), dv = p.dv(), dvp = round_up(dv, W);
  const index_t rows = (i1 - i0) * group;
  const index_t chunk_rows = B::query_tile_rows, tile_keys = B::kv_tile;
  const index_t ldq_max = packed_columns<B>(chunk_rows);
  const bool pack_k = packs_keys(p, false), pack_v = packs_values<B>(p, false);

  // Per-row state of the item: (rows) m and l, (rows, Dvp) O.
  thread_local std::vector<float> m, l, o, lse;
  m.assign(static_cast<std::size_t>(rows), lowest_score);
  l.assign(static_cast<std::size_t>(rows), 0.0f);
  o.assign(static_cast<std::size_t>(rows * dvp), 0.0f);
  lse.resize(static_cast<std::size_t>(rows));

  // Rows by selected block (counting sort): rows_of_block[first[c], first[c + 1]),
  // ascending in r, hence in position.
  thread_local std::vector<index_t> first, rows_of_block;
  first.assign(static_cast<std::size_t>(blk.count + 1), 0);
  auto selected = [&](index_t r) { return sel(b, g * group + r % group, i0 + r / group); };
  for (index_t r = 0; r < rows; ++r)
    for (const std::int32_t c : selected(r))
      if (c >= 0) ++first[static_cast<std::size_t>(c) + 1];
  for (index_t c = 0; c < blk.count; ++c) first[c + 1] += first[c];
  rows_of_block.resize(static_cast<std::size_t>(first[blk.count]));
  {
    thread_local std::vector<index_t> next;
    next.assign(first.begin(), first.end() - 1);
    for (index_t r = 0; r < rows; ++r)
      for (const std::int32_t c : selected(r))
        if (c >= 0) rows_of_block[static_cast<std::size_t>(next[c]++)] = r;
  }

  // Tiles of one chunk, carved from the thread's scratch.
  scratch_carver carve(thread_scratch().floats(
      scratch_carver::round_up(static_cast<std::size_t>(dk * ldq_max)) +
      scratch_carver::round_up(static_cast<std::size_t>(tile_keys * ldq_max)) +
      3 * scratch_carver::round_up(static_cast<std::size_t>(ldq_max)) +
      scratch_carver::round_up(static_cast<std::size_t>(chunk_rows * dvp)) +
      (pack_k ? scratch_carver::round_up(static_cast<std::size_t>(tile_keys * dk)) : 0) +
      (pack_v ? scratch_carver::round_up(static_cast<std::size_t>(tile_keys * dvp)) : 0)));
  float* qt = carve.take(static_cast<std::size_t>(dk * ldq_max));         // (Dk, ldq) scaled Q^T
  float* st = carve.take(static_cast<std::size_t>(tile_keys * ldq_max));  // (keys, ldq) S^T, P^T
  float* cm = carve.take(static_cast<std::size_t>(ldq_max));              // (ldq) running max
  float* cl = carve.take(static_cast<std::size_t>(ldq_max));              // (ldq) running sum
  float* alpha = carve.take(static_cast<std::size_t>(ldq_max));           // (ldq) rescale
  float* co = carve.take(static_cast<std::size_t>(chunk_rows * dvp));     // (rows, Dvp) O
  float* kbuf = pack_k ? carve.take(static_cast<std::size_t>(tile_keys * dk)) : nullptr;
  float* vbuf = pack_v ? carve.take(static_cast<std::size_t>(tile_keys * dvp)) : nullptr;
  index_t pos[static_cast<std::size_t>(B::query_tile_rows)];  // key position of each chunk row

  const float q_scale = p.scale * log2e;
  for (index_t c = 0; c < blk.count; ++c) {
    for (index_t at = first[c]; at < first[c + 1]; at += chunk_rows) {
      const index_t n = std::min(chunk_rows, first[c + 1] - at), ldq = packed_columns<B>(n);
      const index_t* chunk = rows_of_block.data() + at;  // (n) rows, ascending

      // Gather: queries (scale * log2(e) folded in), state; padding columns
      // score 0 against a fresh state and are never scattered back.
      std::fill_n(qt, dk * ldq, 0.0f);
      std::fill_n(cm, ldq, lowest_score);
      std::fill_n(cl, ldq, 0.0f);
      for (index_t x = 0; x < n; ++x) {
        const index_t r = chunk[x], i = i0 + r / group;
        pos[x] = i + blk.offset;
        const auto* src = p.q.row(b, i, g * group + r % group);
        for (index_t d = 0; d < dk; ++d)
          qt[d * ldq + x] = q_scale * to_float(src[d * p.q.stride[3]]);
        cm[x] = m[r];
        cl[x] = l[r];
        std::copy_n(o.data() + r * dvp, dvp, co + x * dvp);
      }

      // The block's KV tiles, cut from its first key. A key j is allowed
      // iff j <= pos (the causal rule inside the own block; every key of a
      // past block precedes the row), so rows, ascending in position, lose
      // a prefix of columns on each key row of a partial tile.
      for (index_t j0 = blk.begin(c); j0 < blk.end(c); j0 += tile_keys) {
        if (j0 > pos[n - 1]) break;  // no row of the chunk sees these keys
        const index_t keys = std::min(tile_keys, blk.end(c) - j0);
        with_rows<B>(p, p.k, b, j0, keys, g, pack_k, kbuf, dk,
                     [&](auto kp) { score_tile<B>(kp.data, kp.stride, keys, dk, qt, ldq, st); });
        const tile_kind kind = j0 + keys - 1 > pos[0] ? tile_kind::partial : tile_kind::full;
        if (kind == tile_kind::partial) {
          index_t hidden = 0;  // rows with pos < j
          for (index_t j = 0; j < keys; ++j) {
            while (hidden < n && pos[hidden] < j0 + j) ++hidden;
            std::fill_n(st + j * ldq, hidden, removed);
          }
        }
        softmax_update<B>(st, keys, ldq, cm, cl, alpha);
        rescale_rows<B>(co, dvp, n, dvp, alpha);
        with_rows<B>(p, p.v, b, j0, keys, g, pack_v, vbuf, dvp, [&](auto vp) {
          accumulate_values<B>(kind, st, ldq, n, vp, keys, dvp, co, dvp);
        });
      }

      for (index_t x = 0; x < n; ++x) {  // scatter
        const index_t r = chunk[x];
        m[r] = cm[x];
        l[r] = cl[x];
        std::copy_n(co + x * dvp, dvp, o.data() + r * dvp);
      }
    }
  }

  // A row that selected nothing (no key at or before it) finishes as 0, -inf.
  finalize_rows<B>(m.data(), l.data(), rows, dvp, o.data(), dvp, lse.data());
  for (index_t r = 0; r < rows; ++r)
    store_row(p, b, i0 + r / group, g * group + r % group, o.data() + r * dvp, lse[r]);
}

template <class B, class P, class Exec>
void run_moba(const P& p, const moba_selection& sel, const moba_blocks& blk, const Exec& exec) {
  const moba_split<B> w(p, exec.concurrency());
  exec.parallel_for(static_cast<std::size_t>(w.items), [&](std::size_t item) {
    const index_t it = static_cast<index_t>(item);
    const index_t span = it % w.spans, bg = it / w.spans;
    const index_t i0 = span * w.span_positions, i1 = std::min(p.nq(), i0 + w.span_positions);
    attend_moba_span<B>(p, sel, blk, bg / p.hkv(), bg % p.hkv(), i0, i1);
  });
}

// The bodies of moba_gate and moba_attention for every storage type.
template <class Backend, class Q, class K, class Exec>
moba_selection moba_gate(view4<const Q> q, view4<const K> k, const moba_options& opt,
                         const Exec& exec) {
  check_gate_inputs(q, k);
  const moba_blocks blk = make_moba_blocks(opt, q.extent[1], k.extent[1]);
  return run_moba_gate<Backend>(q, k, blk, exec);
}
template <class Backend, class Q, class K, class V, class O, class Exec>
void moba(view4<const Q> q, view4<const K> k, view4<const V> v, view4<O> out, view3<float> lse,
          const moba_options& opt, const Exec& exec) {
  softmax_options shape_only;
  shape_only.scale = opt.scale;
  const auto p = make_softmax_problem(q, k, v, out, lse, shape_only);
  const moba_blocks blk = make_moba_blocks(opt, p.nq(), p.nk());
  const moba_selection sel = run_moba_gate<Backend>(p.q, p.k, blk, exec);
  run_moba<Backend>(p, sel, blk, exec);
}

}  // namespace detail

// The MoBA gate alone: the key blocks each query attends to.
//   q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk) -> selection (B, Hq, Nq, topk)
// Any strides; Hq % Hkv == 0, query head h scores the block means of kv head
// h / (Hq / Hkv). Throws attn::error naming a bad argument.
template <simd_backend Backend = default_backend, executor Exec = serial>
moba_selection moba_gate(view4<const float> q, view4<const float> k, const moba_options& opt,
                         const Exec& exec = {}) {
  return detail::moba_gate<Backend>(q, k, opt, exec);
}

// The same with q or k stored in 16 bits (README, "Reduced precision"): q
// and k each float, attn::float16 or attn::bfloat16 (mixed_storage with v
// and out, which the gate does not read, taken as float).
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K>
  requires mixed_storage<Q, K, float, float>
moba_selection moba_gate(strided_view<Q, 4> q, strided_view<K, 4> k, const moba_options& opt,
                         const Exec& exec = {}) {
  using detail::as_input;
  return detail::moba_gate<Backend>(as_input(q), as_input(k), opt, exec);
}

// MoBA attention (DESIGN §2): softmax attention of each query over the keys
// of the blocks the gate selects (its own block causally), lse in natural
// log when `lse` is given (an empty view skips it).
//   q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv) -> out (B, Nq, Hq, Dv)
// Bottom-right aligned like causal attention: query i sits at key i + Nk - Nq;
// with Nk <= block_k * topk it equals causal attention.
template <simd_backend Backend = default_backend, executor Exec = serial>
void moba_attention(view4<const float> q, view4<const float> k, view4<const float> v,
                    view4<float> out, view3<float> lse, const moba_options& opt,
                    const Exec& exec = {}) {
  detail::moba<Backend>(q, k, v, out, lse, opt, exec);
}

// The same with tensors stored in 16 bits (README, "Reduced precision"):
// q, k, v and out each float, attn::float16 or attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K, class V,
          class O>
  requires mixed_storage<Q, K, V, O>
void moba_attention(strided_view<Q, 4> q, strided_view<K, 4> k, strided_view<V, 4> v,
                    strided_view<O, 4> out, view3<float> lse, const moba_options& opt,
                    const Exec& exec = {}) {
  using detail::as_input;
  detail::moba<Backend>(as_input(q), as_input(k), as_input(v), out, lse, opt, exec);
}

}  // namespace attn
