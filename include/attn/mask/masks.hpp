// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "attn/core/error.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/tensor.hpp"

// The built-in masks (DESIGN §2). Each answers the schedule's three
// questions (keys, classify, allowed); causal, window, prefix-LM and
// documents are band masks, so their partial tiles are masked a key row at a
// time. They compose with & and | (core/schedule.hpp).
//
// Offsets: built-ins are bottom-right aligned like causal: query i sits at
// key position i + offset with offset = Nk - Nq (attn::offset_of(q, k)).
namespace attn {

inline constexpr index_t unbounded_position = std::numeric_limits<index_t>::max() / 4;

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
    return {j - offset, unbounded_position};
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

  static constexpr index_t unbounded = unbounded_position;
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

// Prefix-LM (T5, PaliGemma): keys [0, prefix) are visible to every query
// (bidirectional prefix), the rest causally: j < prefix or j <= i + offset.
struct prefix_lm_mask {
  index_t offset;  // Nk - Nq
  index_t prefix;  // keys in the bidirectional prefix

  key_range keys(const query_block& qb) const {
    const index_t causal_end = std::clamp<index_t>(qb.i_end + offset, 0, qb.nk);
    return {0, std::max(causal_end, std::min(prefix, qb.nk))};
  }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    if (j1 <= prefix || j1 - 1 <= qb.i_begin + offset) return tile_kind::full;
    if (j0 >= prefix && j0 > qb.i_end - 1 + offset) return tile_kind::empty;
    return tile_kind::partial;
  }
  constexpr bool allowed(index_t, index_t, index_t i, index_t j) const {
    return j < prefix || j <= i + offset;
  }
  constexpr position_range positions(index_t j) const {
    return {j < prefix ? -unbounded_position : j - offset, unbounded_position};
  }
};

// Document ids (varlen packing, FlexAttention's document mask): key j is
// allowed for query i iff ids[i + offset] == ids[j]; queries take the ids of
// the last Nq keys. Each document's tokens must be contiguous, so a document
// is a run [starts[r], starts[r + 1]) and tiles are classified from the runs
// in O(log runs); combine with causal_mask or window_mask by &.
class document_mask {
 public:
  // ids: (Nk) document id of every key; offset = Nk - Nq >= 0.
  document_mask(std::span<const std::int32_t> ids, index_t offset) : offset_(offset) {
    const index_t nk = static_cast<index_t>(ids.size());
    detail::require(offset >= 0 && offset <= nk, "document_ids",
                    "Nq <= Nk (queries take the ids of the last Nq keys)",
                    "Nq = " + std::to_string(nk - offset) + ", Nk = " + std::to_string(nk));
    std::vector<std::pair<std::int32_t, index_t>> runs;  // (id, start) of each run
    for (index_t j = 0; j < nk; ++j)
      if (j == 0 || ids[j] != ids[j - 1]) {
        starts_.push_back(j);
        runs.emplace_back(ids[j], j);
      }
    starts_.push_back(nk);
    std::sort(runs.begin(), runs.end());
    for (std::size_t r = 1; r < runs.size(); ++r)
      detail::require(runs[r].first != runs[r - 1].first, "document_ids",
                      "each document's tokens contiguous (varlen packing)",
                      "id " + std::to_string(runs[r].first) + " at keys " +
                          std::to_string(runs[r - 1].second) + " and " +
                          std::to_string(runs[r].second) + " with other ids between");
  }

  key_range keys(const query_block& qb) const {
    return {starts_[run(qb.i_begin + offset_)], starts_[run(qb.i_end - 1 + offset_) + 1]};
  }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const index_t q0 = run(qb.i_begin + offset_), q1 = run(qb.i_end - 1 + offset_);
    const index_t k0 = run(j0), k1 = run(j1 - 1);
    if (k1 < q0 || k0 > q1) return tile_kind::empty;
    return q0 == q1 && k0 == k1 && q0 == k0 ? tile_kind::full : tile_kind::partial;
  }
  bool allowed(index_t, index_t, index_t i, index_t j) const { return run(i + offset_) == run(j); }
  position_range positions(index_t j) const {
    const index_t r = run(j);
    return {starts_[r] - offset_, starts_[r + 1] - offset_};
  }
  index_t documents() const { return static_cast<index_t>(starts_.size()) - 1; }
  void check(const problem_shape& s) const {
    const index_t nk = starts_.back();
    detail::require(s.nk == nk && s.nk - s.nq == offset_, "document_ids",
                    "one id per key of this problem: Nk = " + std::to_string(s.nk) +
                        ", offset Nk - Nq = " + std::to_string(s.nk - s.nq),
                    std::to_string(nk) + " ids, offset " + std::to_string(offset_));
  }

 private:
  // The run holding key position x.
  index_t run(index_t x) const {
    return static_cast<index_t>(std::upper_bound(starts_.begin(), starts_.end() - 1, x) -
                                starts_.begin()) - 1;
  }
  index_t offset_;
  std::vector<index_t> starts_;  // (runs + 1): first key of each run, then Nk
};

// A user predicate (b, h, i, j) -> bool as a mask. Without a classifier every
// tile is partial (correct, no skipping); with one, classify(qb, j0, j1) ->
// tile_kind lets the schedule skip empty tiles and run full ones unmasked.
// The classifier must be conservative: `full` only if every pair is allowed,
// `empty` only if none is.
template <class Predicate>
struct predicate_mask {
  Predicate allowed_fn;

  key_range keys(const query_block& qb) const { return {0, qb.nk}; }
  tile_kind classify(const query_block&, index_t, index_t) const { return tile_kind::partial; }
  bool allowed(index_t b, index_t h, index_t i, index_t j) const { return allowed_fn(b, h, i, j); }
};

template <class Predicate, class Classifier>
struct classified_mask {
  Predicate allowed_fn;
  Classifier classify_fn;

  key_range keys(const query_block& qb) const { return {0, qb.nk}; }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    return classify_fn(qb, j0, j1);
  }
  bool allowed(index_t b, index_t h, index_t i, index_t j) const { return allowed_fn(b, h, i, j); }
};

template <class Predicate>
  requires std::predicate<const Predicate&, index_t, index_t, index_t, index_t>
predicate_mask<Predicate> mask_from(Predicate allowed) {
  return {std::move(allowed)};
}
template <class Predicate, class Classifier>
  requires std::predicate<const Predicate&, index_t, index_t, index_t, index_t> &&
           std::is_invocable_r_v<tile_kind, const Classifier&, const query_block&, index_t, index_t>
classified_mask<Predicate, Classifier> mask_from(Predicate allowed, Classifier classify) {
  return {std::move(allowed), std::move(classify)};
}

// Tile kinds precomputed at a fixed block granularity (FlexAttention's
// create_block_mask, without an Nq x Nk pass): kinds[b][h][qi][kj] for query
// positions [qi * block_q, ...) and keys [kj * block_k, ...); a batch or head
// extent of 1 is shared. Built once from any mask's classifier (or filled by
// hand with set()) and reused across calls; at a call, pair it with the
// element mask partial tiles need: `blocked(kinds, mask)`.
class block_mask {
 public:
  block_mask(index_t batch, index_t heads, index_t nq, index_t nk, index_t block_q, index_t block_k)
      : batch_(batch), heads_(heads), nq_(nq), nk_(nk), block_q_(block_q), block_k_(block_k) {
    detail::require(batch >= 1 && heads >= 1 && nq >= 0 && nk >= 0, "block_mask",
                    "batch, heads >= 1 and nq, nk >= 0",
                    "(" + std::to_string(batch) + ", " + std::to_string(heads) + ", " +
                        std::to_string(nq) + ", " + std::to_string(nk) + ")");
    detail::require(block_q >= 1 && block_k >= 1, "block_mask", "block sizes >= 1",
                    "{" + std::to_string(block_q) + ", " + std::to_string(block_k) + "}");
    q_blocks_ = (nq + block_q - 1) / block_q;
    k_blocks_ = (nk + block_k - 1) / block_k;
    kinds_.assign(static_cast<std::size_t>(batch * heads * q_blocks_ * k_blocks_), tile_kind::empty);
  }

  // Classifies every block with m (O(blocks) calls, no pair evaluated).
  template <mask M>
  static block_mask build(const M& m, index_t batch, index_t heads, index_t nq, index_t nk,
                          index_t block_q, index_t block_k) {
    block_mask bm(batch, heads, nq, nk, block_q, block_k);
    for (index_t b = 0; b < batch; ++b)
      for (index_t h = 0; h < heads; ++h)
        for (index_t qi = 0; qi < bm.q_blocks_; ++qi) {
          const query_block qb{b, qi * block_q, std::min(nq, (qi + 1) * block_q), h, h + 1, nq, nk};
          const key_range range = m.keys(qb);
          for (index_t kj = 0; kj < bm.k_blocks_; ++kj) {
            const index_t j0 = kj * block_k, j1 = std::min(nk, j0 + block_k);
            const index_t c0 = std::max(j0, range.begin), c1 = std::min(j1, range.end);
            tile_kind kind = c1 <= c0 ? tile_kind::empty : m.classify(qb, c0, c1);
            if (kind == tile_kind::full && (c0 != j0 || c1 != j1)) kind = tile_kind::partial;
            bm.set(b, h, qi, kj, kind);
          }
        }
    return bm;
  }

  void set(index_t b, index_t h, index_t qi, index_t kj, tile_kind kind) { kinds_[index(b, h, qi, kj)] = kind; }
  tile_kind at(index_t b, index_t h, index_t qi, index_t kj) const { return kinds_[index(b, h, qi, kj)]; }
  index_t q_blocks() const { return q_blocks_; }
  index_t k_blocks() const { return k_blocks_; }

  // The kind of a tile: full or empty if every block it touches (over its
  // heads and positions) is, partial otherwise.
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const index_t b = batch_ == 1 ? 0 : qb.b;
    const index_t h0 = heads_ == 1 ? 0 : qb.h_begin, h1 = heads_ == 1 ? 1 : qb.h_end;
    bool any_full = false, any_other = false;
    for (index_t h = h0; h < h1; ++h)
      for (index_t qi = qb.i_begin / block_q_; qi <= (qb.i_end - 1) / block_q_; ++qi)
        for (index_t kj = j0 / block_k_; kj <= (j1 - 1) / block_k_; ++kj) {
          const tile_kind kind = at(b, h, qi, kj);
          if (kind == tile_kind::partial) return kind;
          (kind == tile_kind::full ? any_full : any_other) = true;
          if (any_full && any_other) return tile_kind::partial;
        }
    return any_full ? tile_kind::full : tile_kind::empty;
  }

  // Throws unless the blocks were built for a problem of this shape.
  void check(const problem_shape& s) const {
    detail::require(s.nq == nq_ && s.nk == nk_ && (batch_ == 1 || batch_ == s.batch) &&
                        (heads_ == 1 || heads_ == s.hq),
                    "block_mask",
                    "blocks built for this problem: B|1 = " + std::to_string(s.batch) +
                        ", Hq|1 = " + std::to_string(s.hq) + ", Nq = " + std::to_string(s.nq) +
                        ", Nk = " + std::to_string(s.nk),
                    "B = " + std::to_string(batch_) + ", H = " + std::to_string(heads_) +
                        ", Nq = " + std::to_string(nq_) + ", Nk = " + std::to_string(nk_));
  }

 private:
  std::size_t index(index_t b, index_t h, index_t qi, index_t kj) const {
    return static_cast<std::size_t>(((b * heads_ + h) * q_blocks_ + qi) * k_blocks_ + kj);
  }
  index_t batch_, heads_, nq_, nk_, block_q_, block_k_, q_blocks_ = 0, k_blocks_ = 0;
  std::vector<tile_kind> kinds_;
};

// A mask whose tiles are classified by a precomputed block_mask and whose
// partial tiles are masked by `elements`. The block mask is held by
// reference: keep it alive for the call.
template <mask M>
struct blocked_mask {
  const block_mask* blocks;
  M elements;

  key_range keys(const query_block& qb) const { return {0, qb.nk}; }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    return blocks->classify(qb, j0, j1);
  }
  bool allowed(index_t b, index_t h, index_t i, index_t j) const { return elements.allowed(b, h, i, j); }
  void check(const problem_shape& s) const {
    blocks->check(s);
    check_mask(elements, s);
  }
  position_range positions(index_t j) const
    requires band_mask<M>
  {
    return elements.positions(j);
  }
};

template <mask M>
blocked_mask<M> blocked(const block_mask& blocks, M elements) {
  return {&blocks, std::move(elements)};
}

// Per-sequence key counts (a KV cache filled to a different length in each
// sequence of a batch: FlashAttention's seqused_k, FlashMLA's cache_seqlens):
// sequence b sees keys [0, lengths[b]); causal, query i sees keys
// j <= i + lengths[b] - Nq (bottom-right aligned per sequence, so a query
// before the sequence's first key sees nothing and gives out 0, lse -inf).
// The lengths are held by pointer: keep them alive for the call.
struct kv_length_mask {
  const std::int32_t* lengths;  // (B), each in [0, Nk]
  index_t nq;
  bool causal = false;

  // One past the last key query i of sequence b sees.
  constexpr index_t end(index_t b, index_t i) const {
    const index_t length = lengths[b];
    return causal ? std::clamp<index_t>(i + length - nq + 1, 0, length) : length;
  }
  key_range keys(const query_block& qb) const { return {0, end(qb.b, qb.i_end - 1)}; }
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    if (j0 >= end(qb.b, qb.i_end - 1)) return tile_kind::empty;
    return j1 <= end(qb.b, qb.i_begin) ? tile_kind::full : tile_kind::partial;
  }
  constexpr bool allowed(index_t b, index_t, index_t i, index_t j) const { return j < end(b, i); }
  // A partial tile (rows ordered position, head): each position's keys from
  // its end on are removed, a key row of `heads` scores at a time.
  void remove_pairs(const query_block& qb, index_t heads, index_t j0, index_t keys, float* st,
                    index_t ldq) const {
    for (index_t i = qb.i_begin; i < qb.i_end; ++i) {
      const index_t first = std::clamp<index_t>(end(qb.b, i) - j0, 0, keys);
      for (index_t j = first; j < keys; ++j)
        std::fill_n(st + j * ldq + (i - qb.i_begin) * heads, heads, -std::numeric_limits<float>::infinity());
    }
  }
  void check(const problem_shape& s) const {
    for (index_t b = 0; b < s.batch; ++b)
      detail::require(lengths[b] >= 0 && lengths[b] <= s.nk, "lengths",
                      [&] { return detail::concat("each sequence's key count in [0, Nk = ", s.nk, "]"); },
                      [&] { return detail::concat("lengths[", b, "] = ", lengths[b]); });
  }
};

// Nk - Nq of a problem: the offset the built-in masks take.
template <class Q, class K>
constexpr index_t offset_of(const Q& q, const K& k) {
  return k.extent[1] - q.extent[1];
}

static_assert(band_mask<causal_mask> && band_mask<window_mask> && band_mask<prefix_lm_mask> &&
                  band_mask<document_mask>,
              "causal, window, prefix-LM and document masks must be band masks");
static_assert(band_mask<mask_and<causal_mask, document_mask>>,
              "the intersection of two band masks must be a band mask");

}  // namespace attn
