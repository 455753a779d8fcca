// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/variant/dense.hpp"

// Block-sparse attention with an explicit layout (DESIGN §2): query blocks of
// block_q positions, key blocks of block_k keys, and a layout of 0/1 per
// (query head, query block, key block); key j is allowed for query i of head
// h iff layout[h or 0][i / block_q][j / block_k] != 0, optionally intersected
// with causal (bottom-right aligned).
//
// The layout becomes one bit per block (O(H x nbq x nbk) per call, never
// O(Nq x Nk)), and that bitset is the mask of the one tiled core: a query
// tile visits only the key blocks some of its rows select (key_runs), a KV
// tile runs unmasked when every row selects every block it touches, and a
// partial tile is masked with fills of column runs per key block.
namespace attn {

struct block_sparse_options {
  index_t block_q = 64, block_k = 64;  // block sizes, each >= 1, independent of the core's tiles
  bool causal = false;                 // also require j <= i + (Nk - Nq)
  std::optional<float> scale;          // default 1 / sqrt(Dk)
};

// Which key blocks each query block attends to, per query head (extent Hq)
// or shared by every head (extent 1), in one of two forms:
//   dense(mask01)   (H|1, nbq, nbk): nonzero selects the block;
//   lists(kv_num_blocks (H|1, nbq), kv_indices (H|1, nbq, max_blocks)):
//                   row (h, qb) selects kv_indices[h][qb][0 .. kv_num_blocks[h][qb])
//                   (FlexAttention's BlockMask kv_num_blocks / kv_indices, batch
//                   dimension dropped). Indices need not be sorted; a duplicate
//                   selects its block once.
// with nbq = ceil(Nq / block_q), nbk = ceil(Nk / block_k). A block_layout only
// refers to the caller's memory (any strides): keep it alive for the call.
// Shapes and values are checked by block_sparse_attention.
class block_layout {
 public:
  static block_layout dense(strided_view<const std::uint8_t, 3> mask01) {  // (H|1, nbq, nbk)
    block_layout l;
    l.dense_ = true;
    l.mask01_ = mask01;
    return l;
  }
  static block_layout lists(
      strided_view<const std::int32_t, 2> kv_num_blocks,  // (H|1, nbq)
      strided_view<const std::int32_t, 3> kv_indices) {   // (H|1, nbq, max_blocks)
    block_layout l;
    l.dense_ = false;
    l.num_blocks_ = kv_num_blocks;
    l.indices_ = kv_indices;
    return l;
  }

  bool is_dense() const { return dense_; }
  const strided_view<const std::uint8_t, 3>& mask01() const { return mask01_; }
  const strided_view<const std::int32_t, 2>& kv_num_blocks() const { return num_blocks_; }
  const strided_view<const std::int32_t, 3>& kv_indices() const { return indices_; }

 private:
  block_layout() = default;
  bool dense_ = true;
  strided_view<const std::uint8_t, 3> mask01_;
  strided_view<const std::int32_t, 2> num_blocks_;
  strided_view<const std::int32_t, 3> indices_;
};

namespace detail {

// One bit per key block for every (layout head, query block): row
// (lh, qk) holds words() 64-bit words, bit kb of word kb / 64 set iff the
// block is selected; bits past nbk are 0.
class block_bits {
 public:
  block_bits(index_t heads, index_t nbq, index_t nbk)
      : heads_(heads), nbq_(nbq), nbk_(nbk), words_(std::max<index_t>(1, (nbk + 63) / 64)),
        bits_(static_cast<std::size_t>(heads * nbq * words_), 0) {}

  // Reads a layout, checking it against the problem: heads Hq or 1, nbq
  // query blocks, nbk key blocks; list counts in [0, min(nbk, max_blocks)],
  // indices in [0, nbk). Throws attn::error before anything is written.
  static block_bits read(const block_layout& layout, index_t hq, index_t nbq, index_t nbk) {
    if (layout.is_dense()) {
      const strided_view<const std::uint8_t, 3>& m = layout.mask01();
      require_view(
          m, "layout",
          "(Hq|1 = " + std::to_string(hq) + "|1, nbq = " + std::to_string(nbq) +
              ", nbk = " + std::to_string(nbk) + ") from the block sizes",
          (m.extent[0] == hq || m.extent[0] == 1) && m.extent[1] == nbq && m.extent[2] == nbk);
      block_bits bits(m.extent[0], nbq, nbk);
      for (index_t h = 0; h < bits.heads_; ++h)
        for (index_t qk = 0; qk < nbq; ++qk) {
          std::uint64_t* row = bits.row(h, qk);
          const std::uint8_t* src = m.data + h * m.stride[0] + qk * m.stride[1];
          for (index_t kb = 0; kb < nbk; ++kb)
            row[kb >> 6] |= std::uint64_t{src[kb * m.stride[2]] != 0} << (kb & 63);
        }
      return bits;
    }
    const strided_view<const std::int32_t, 2>& count = layout.kv_num_blocks();
    const strided_view<const std::int32_t, 3>& index = layout.kv_indices();
    require_view(count, "kv_num_blocks",
                 "(Hq|1 = " + std::to_string(hq) + "|1, nbq = " + std::to_string(nbq) + ")",
                 (count.extent[0] == hq || count.extent[0] == 1) && count.extent[1] == nbq);
    const index_t heads = count.extent[0], max_blocks = index.extent[2];
    require_view(index, "kv_indices",
                 "(" + std::to_string(heads) + ", nbq = " + std::to_string(nbq) +
                     ", max_blocks) with the heads of kv_num_blocks",
                 index.extent[0] == heads && index.extent[1] == nbq);
    const index_t most = std::min(nbk, max_blocks);
    block_bits bits(heads, nbq, nbk);
    for (index_t h = 0; h < heads; ++h)
      for (index_t qk = 0; qk < nbq; ++qk) {
        const index_t n = count(h, qk);
        require(
            n >= 0 && n <= most, "kv_num_blocks",
            "counts in [0, min(nbk, max_blocks)] = [0, " + std::to_string(most) + "]",
            std::to_string(n) + " at (h=" + std::to_string(h) + ", qb=" + std::to_string(qk) + ")");
        std::uint64_t* row = bits.row(h, qk);
        for (index_t s = 0; s < n; ++s) {
          const index_t kb = index(h, qk, s);
          require(kb >= 0 && kb < nbk, "kv_indices",
                  "block indices in [0, nbk) = [0, " + std::to_string(nbk) + ")",
                  std::to_string(kb) + " at (h=" + std::to_string(h) +
                      ", qb=" + std::to_string(qk) + ", " + std::to_string(s) + ")");
          row[kb >> 6] |= std::uint64_t{1} << (kb & 63);
        }
      }
    return bits;
  }

  index_t heads() const { return heads_; }
  index_t query_blocks() const { return nbq_; }
  index_t key_blocks() const { return nbk_; }
  index_t words() const { return words_; }
  std::uint64_t* row(index_t h, index_t qk) {
    return bits_.data() + static_cast<std::size_t>((h * nbq_ + qk) * words_);
  }
  const std::uint64_t* row(index_t h, index_t qk) const {
    return bits_.data() + static_cast<std::size_t>((h * nbq_ + qk) * words_);
  }
  bool test(index_t h, index_t qk, index_t kb) const {
    return (row(h, qk)[kb >> 6] >> (kb & 63)) & 1u;
  }

  // Bits [a, b] (inclusive, a <= b) of a row: any of them set / all set.
  static bool any(const std::uint64_t* row, index_t a, index_t b) {
    const index_t wa = a >> 6, wb = b >> 6;
    const std::uint64_t first = ~std::uint64_t{0} << (a & 63),
                        last = ~std::uint64_t{0} >> (63 - (b & 63));
    if (wa == wb) return (row[wa] & first & last) != 0;
    if (row[wa] & first) return true;
    for (index_t w = wa + 1; w < wb; ++w)
      if (row[w]) return true;
    return (row[wb] & last) != 0;
  }
  static bool all(const std::uint64_t* row, index_t a, index_t b) {
    const index_t wa = a >> 6, wb = b >> 6;
    const std::uint64_t first = ~std::uint64_t{0} << (a & 63),
                        last = ~std::uint64_t{0} >> (63 - (b & 63));
    if (wa == wb) return (row[wa] & first & last) == (first & last);
    if ((row[wa] & first) != first) return false;
    for (index_t w = wa + 1; w < wb; ++w)
      if (row[w] != ~std::uint64_t{0}) return false;
    return (row[wb] & last) == last;
  }
  // f(begin, end) for every maximal run of set bits in [0, n) of a row.
  template <class F>
  static void for_each_run(const std::uint64_t* row, index_t n, F&& f) {
    index_t kb = 0;
    while (kb < n) {
      kb = next(row, kb, n, false);
      if (kb >= n) return;
      const index_t end = next(row, kb, n, true);
      f(kb, end);
      kb = end;
    }
  }

 private:
  // The first bit at or after `from` that is set (or clear, when `clear`),
  // or n when none is before n.
  static index_t next(const std::uint64_t* row, index_t from, index_t n, bool clear) {
    const index_t words = (n + 63) / 64;
    index_t w = from >> 6;
    const std::uint64_t flip = clear ? ~std::uint64_t{0} : 0;
    std::uint64_t x = (row[w] ^ flip) & (~std::uint64_t{0} << (from & 63));
    while (x == 0) {
      if (++w >= words) return n;
      x = row[w] ^ flip;
    }
    return std::min(n, w * 64 + std::countr_zero(x));
  }

  index_t heads_, nbq_, nbk_, words_;
  std::vector<std::uint64_t> bits_;  // (heads, nbq, words)
};

// The tile size nearest below `preferred` (the core's own) that lines up
// with blocks of `block`: a multiple of the block when the block is smaller,
// else the largest divisor of the block; if that divisor is below
// preferred / 2 (e.g. a prime block), `preferred` itself: tiles that straddle
// blocks are masked where their rows disagree, which costs less than tiles a
// few rows or keys long.
inline index_t block_aligned(index_t preferred, index_t block) {
  if (block <= preferred) return preferred / block * block;
  for (index_t d = preferred; d >= 1; --d)
    if (block % d == 0) return 2 * d >= preferred ? d : preferred;
  return preferred;
}

// The mask of a block layout (attn::mask, with key_runs, remove_pairs and
// tile_shape for the core).
class block_sparse_mask {
 public:
  block_sparse_mask(block_bits bits, index_t block_q, index_t block_k, bool causal, index_t nq,
                    index_t nk, tile_shape tiles)
      : bits_(std::move(bits)), bq_(block_q), bk_(block_k), nk_(nk), offset_(nk - nq),
        causal_(causal), tiles_(tiles) {}

  attn::tile_shape tile_shape() const { return tiles_; }

  // A superset of the allowed keys: all of them, cut by causal. The key
  // runs below name the blocks the query tile visits.
  key_range keys(const query_block& qb) const { return {0, key_end(qb)}; }

  // The selected key blocks of the union over the tile's rows and heads,
  // merged into runs of adjacent blocks; blocks no row selects are never
  // visited.
  void key_runs(const query_block& qb, std::vector<key_range>& runs) const {
    const index_t end = key_end(qb);
    if (end <= 0) return;
    const index_t blocks = std::min(bits_.key_blocks(), (end + bk_ - 1) / bk_);
    const rows_of_tile r = rows_of(qb);
    const std::uint64_t* row = bits_.row(r.h0, r.qk0);
    if (r.h1 - r.h0 > 1 || r.qk1 - r.qk0 > 1) {  // OR the rows together
      thread_local std::vector<std::uint64_t> either;
      const index_t words = bits_.words();
      either.assign(static_cast<std::size_t>(words), 0);
      for (index_t h = r.h0; h < r.h1; ++h)
        for (index_t qk = r.qk0; qk < r.qk1; ++qk) {
          const std::uint64_t* x = bits_.row(h, qk);
          for (index_t w = 0; w < words; ++w) either[static_cast<std::size_t>(w)] |= x[w];
        }
      row = either.data();
    }
    block_bits::for_each_run(row, blocks, [&](index_t a, index_t b) {
      runs.push_back({a * bk_, std::min({b * bk_, nk_, end})});
    });
  }

  // Keys [j0, j1): empty when no row of the tile selects a block it touches
  // (below the causal bound); full when every (head, position) of the tile
  // selects every block it touches and causal allows the whole tile.
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const index_t end = std::min(j1, key_end(qb));
    if (end <= j0) return tile_kind::empty;
    const bool causal_full = !causal_ || j1 - 1 <= qb.i_begin + offset_;
    const index_t kb0 = j0 / bk_, kb1 = (j1 - 1) / bk_, kb_end = (end - 1) / bk_;
    const rows_of_tile r = rows_of(qb);
    bool any = false, all = causal_full;
    for (index_t h = r.h0; h < r.h1; ++h)
      for (index_t qk = r.qk0; qk < r.qk1; ++qk) {
        const std::uint64_t* row = bits_.row(h, qk);
        any = any || block_bits::any(row, kb0, kb_end);
        all = all && block_bits::all(row, kb0, kb1);
        if (any && !all) return tile_kind::partial;
      }
    return !any ? tile_kind::empty : all ? tile_kind::full : tile_kind::partial;
  }

  // Removes the disallowed pairs of a partial tile: S^T rows are keys
  // j0 .. j0 + keys - 1, columns (i - i_begin) * heads + (h - h_begin). Per
  // key block the removed columns form a few runs (whole query blocks, or
  // single heads where the heads of a GQA group disagree), filled with -inf
  // on each key row of the block; causal then fills each key row's prefix of
  // positions that come before it.
  void remove_pairs(const query_block& qb, index_t heads, index_t j0, index_t keys, float* st,
                    index_t ldq) const {
    constexpr float removed = -std::numeric_limits<float>::infinity();
    const index_t positions = qb.i_end - qb.i_begin;
    const rows_of_tile r = rows_of(qb);
    thread_local std::vector<key_range> cut;  // removed column runs [begin, end)
    auto remove = [&](index_t a, index_t b) {
      if (!cut.empty() && cut.back().end == a)
        cut.back().end = b;
      else
        cut.push_back({a, b});
    };
    for (index_t j = j0; j < j0 + keys;) {
      const index_t kb = j / bk_, block_end = std::min(j0 + keys, (kb + 1) * bk_);
      cut.clear();
      for (index_t qk = r.qk0; qk < r.qk1; ++qk) {
        const index_t p0 = std::max(qb.i_begin, qk * bq_) - qb.i_begin;
        const index_t p1 = std::min(qb.i_end, (qk + 1) * bq_) - qb.i_begin;
        index_t selected = 0;
        for (index_t h = r.h0; h < r.h1; ++h) selected += bits_.test(h, qk, kb);
        if (selected == r.h1 - r.h0) continue;  // every head keeps these positions
        if (selected == 0) {
          remove(p0 * heads, p1 * heads);
          continue;
        }
        for (index_t p = p0; p < p1; ++p)  // heads of one group disagree
          for (index_t hh = 0; hh < heads; ++hh)
            if (!bits_.test(qb.h_begin + hh, qk, kb)) remove(p * heads + hh, p * heads + hh + 1);
      }
      for (; j < block_end; ++j) {
        float* row = st + (j - j0) * ldq;
        for (const key_range c : cut) std::fill(row + c.begin, row + c.end, removed);
        if (causal_) {  // positions i < j - offset come before key j
          const index_t before = std::clamp(j - offset_ - qb.i_begin, index_t{0}, positions);
          std::fill(row, row + before * heads, removed);
        }
      }
    }
  }

  bool allowed(index_t, index_t h, index_t i, index_t j) const {
    if (causal_ && j > i + offset_) return false;
    return bits_.test(bits_.heads() == 1 ? 0 : h, i / bq_, j / bk_);
  }

 private:
  // The layout rows of a query tile: layout heads [h0, h1), query blocks
  // [qk0, qk1).
  struct rows_of_tile {
    index_t h0, h1, qk0, qk1;
  };
  rows_of_tile rows_of(const query_block& qb) const {
    const bool shared = bits_.heads() == 1;
    return {shared ? 0 : qb.h_begin, shared ? 1 : qb.h_end, qb.i_begin / bq_,
            (qb.i_end - 1) / bq_ + 1};
  }
  // One past the last key any row of the tile may see.
  index_t key_end(const query_block& qb) const {
    return causal_ ? std::clamp<index_t>(qb.i_end + offset_, 0, nk_) : nk_;
  }

  block_bits bits_;
  index_t bq_, bk_, nk_, offset_;
  bool causal_;
  attn::tile_shape tiles_;
};

static_assert(mask<block_sparse_mask>, "block_sparse_mask must model attn::mask");

// The body of block_sparse_attention for every storage type.
template <class Backend, class Q, class K, class V, class O, class Exec>
void block_sparse(view4<const Q> q, view4<const K> k, view4<const V> v, view4<O> out, view3<float> lse,
                  const block_layout& layout, const block_sparse_options& opt, const Exec& exec) {
  softmax_options shape_opt;
  shape_opt.scale = opt.scale;
  const auto p = make_softmax_problem(q, k, v, out, lse, shape_opt);
  require(opt.block_q >= 1, "block_q", "a block size >= 1", opt.block_q);
  require(opt.block_k >= 1, "block_k", "a block size >= 1", opt.block_k);
  const index_t nbq = ceil_div(p.nq(), opt.block_q),
                nbk = ceil_div(p.nk(), opt.block_k);
  block_bits bits = block_bits::read(layout, p.hq(), nbq, nbk);
  // Query tiles of whole query blocks (or whole divisors of one), KV tiles
  // of whole key blocks, near the core's own sizes.
  const tile_shape tiles{
      block_aligned(work_split<Backend>::default_positions(p.group()), opt.block_q),
      block_aligned(Backend::kv_tile, opt.block_k)};
  const block_sparse_mask mask(std::move(bits), opt.block_q, opt.block_k, opt.causal, p.nq(), p.nk(), tiles);
  run_softmax<Backend>(p, mask, no_modifier{}, exec);
}

}  // namespace detail

// Block-sparse attention (DESIGN §2): softmax attention over the pairs the
// block layout selects (and causal allows), on the one tiled core.
//   q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv) -> out (B, Nq, Hq, Dv),
//   lse (B, Nq, Hq) or empty; layout (Hq|1, ceil(Nq / block_q), ceil(Nk / block_k)),
//   the same for every batch entry.
// Any strides; Hq % Hkv == 0 (GQA); Dk != Dv. A row with no allowed key gets
// out 0 and lse -inf. Extra memory: one bit per block, O(Hq x nbq x nbk).
template <simd_backend Backend = default_backend, executor Exec = serial>
void block_sparse_attention(view4<const float> q, view4<const float> k, view4<const float> v,
                            view4<float> out, view3<float> lse, const block_layout& layout,
                            const block_sparse_options& opt, const Exec& exec = {}) {
  detail::block_sparse<Backend>(q, k, v, out, lse, layout, opt, exec);
}

// The same with tensors stored in 16 bits (README, "Reduced precision"):
// q, k, v and out each float, attn::float16 or attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void block_sparse_attention(strided_view<Q, 4> q, strided_view<K, 4> k, strided_view<V, 4> v,
                            strided_view<O, 4> out, view3<float> lse, const block_layout& layout,
                            const block_sparse_options& opt, const Exec& exec = {}) {
  using detail::as_input;
  detail::block_sparse<Backend>(as_input(q), as_input(k), as_input(v), out, lse, layout, opt, exec);
}

}  // namespace attn
