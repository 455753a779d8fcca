// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/element.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/kv_cache.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/quantized.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/mask/masks.hpp"
#include "attn/mask/score_mods.hpp"

namespace attn {

// Options of softmax attention (DESIGN §1-2). The mask and score-modifier
// fields are the built-ins; a user-written mask or modifier goes through the
// attention() overload that takes them, with these fields left unset.
struct softmax_options {
  std::optional<float> scale;    // default 1 / sqrt(Dk)
  bool causal = false;           // key j allowed iff j <= i + (Nk - Nq)
  const float* sinks = nullptr;  // (Hq) per-head sink logits (gpt-oss), or null
  // Sliding window {left, right} (-1: unbounded), bottom-right aligned like
  // causal; with causal, right is at most 0. window{-1, 0} is causal.
  std::optional<std::array<index_t, 2>> window;
  index_t sink_tokens = 0;       // StreamingLLM: keys j < n stay visible (needs a window)
  // Document ids (Nk), one per key, each document contiguous (varlen
  // packing): pairs only within a document; combines with causal/window.
  std::span<const std::int32_t> document_ids;
  // Prefix-LM: keys [0, prefix) visible to every query, the rest causal.
  std::optional<index_t> prefix_lm;
  // Score modifiers, applied in this order: s <- softcap * tanh(s / softcap),
  // s -= slope_h |i + off - j| (ALiBi: standard slopes, or alibi_slopes (Hq)),
  // s += bias[b][h][i][j] with bias (B|1, Hq|1, Nq, Nk), any strides.
  std::optional<float> softcap;
  bool alibi = false;
  const float* alibi_slopes = nullptr;
  view4<const float> bias;
  // Serving (ragged batches, KV caches): keys each sequence holds (B), each
  // at most Nk (the capacity); empty: all Nk. Masks align bottom-right at
  // each sequence's own length. Required with a paged cache.
  std::span<const std::int32_t> kv_lengths;
  // KV splits per work item (flash-decoding's num_splits); 0: from the shape.
  index_t num_splits = 0;

  bool has_mask() const { return causal || window || !document_ids.empty() || prefix_lm; }
  // The ALiBi slopes of Hq heads these options ask for (empty: no ALiBi).
  std::vector<float> alibi_slopes_for(index_t hq) const {
    if (alibi_slopes) return {alibi_slopes, alibi_slopes + hq};
    return alibi ? attn::alibi_slopes(hq) : std::vector<float>{};
  }
  bool has_modifier() const { return softcap || alibi || alibi_slopes || !bias.empty(); }
};

// The window mask the options describe (causal folded in: right <= 0); with
// neither, every key (window{-1, -1}).
inline window_mask window_mask_of(const softmax_options& opt, index_t offset) {
  auto [left, right] = opt.window.value_or(std::array<index_t, 2>{-1, -1});
  if (opt.causal) right = right < 0 ? 0 : std::min<index_t>(right, 0);
  return {offset, left, right, opt.sink_tokens};
}

namespace detail {

// Checks the options against checked views (lse already checked) and
// builds the problem; throws attn::error.
template <class Q, class K, class V, class O>
typed_softmax_problem<Q, K, V, O> make_softmax_problem(const typed_views<Q, K, V, O>& views, view3<float> lse,
                                                       const softmax_options& opt) {
  const index_t b = views.batch(), nq = views.nq(), hq = views.hq(), dk = views.dk();
  const index_t nk = views.nk();
  const view4<O>& out = views.out;
  if (views.ragged())
    require(opt.document_ids.empty(), "document_ids",
            "no document ids in a ragged batch (each sequence is its own document)", "document ids");
  if (views.sequences.q_starts)
    require(opt.bias.empty(), "bias", "no bias tensor with packed (varlen) queries", "a bias");
  require(opt.num_splits >= 0, "num_splits", "a count >= 0 (0: from the shape)", opt.num_splits);
  if (opt.window) {
    const auto [left, right] = *opt.window;
    require(left >= -1 && right >= -1, "window", "{left, right} with each >= -1 (-1: unbounded)",
            "{" + std::to_string(left) + ", " + std::to_string(right) + "}");
  }
  require(opt.sink_tokens >= 0, "sink_tokens", "a count >= 0", opt.sink_tokens);
  require(opt.sink_tokens == 0 || opt.window.has_value(), "sink_tokens",
          "a window to extend (sink tokens are kept beside a sliding window)", "no window");
  if (!opt.document_ids.empty())
    require(static_cast<index_t>(opt.document_ids.size()) == nk && nq <= nk, "document_ids",
            "one id per key (Nk = " + std::to_string(nk) + ") and Nq <= Nk",
            std::to_string(opt.document_ids.size()) + " ids, Nq = " + std::to_string(nq));
  if (opt.prefix_lm) {
    require(*opt.prefix_lm >= 0, "prefix_lm", "a prefix length >= 0", *opt.prefix_lm);
    require(!opt.window && opt.document_ids.empty(), "prefix_lm",
            "no window or document ids beside it (compose prefix_lm_mask with & instead)",
            opt.window ? "a window" : "document ids");
  }
  if (opt.softcap)
    require(std::isfinite(*opt.softcap) && *opt.softcap > 0, "softcap", "a finite value > 0", *opt.softcap);
  if (!opt.bias.empty()) {
    const view4<const float>& bias = opt.bias;
    require_view(bias, "bias",
                 "(B|1, Hq|1, Nq, Nk) = (" + std::to_string(b) + "|1, " + std::to_string(hq) +
                     "|1, " + std::to_string(nq) + ", " + std::to_string(nk) + ")",
                 (bias.extent[0] == b || bias.extent[0] == 1) &&
                     (bias.extent[1] == hq || bias.extent[1] == 1) && bias.extent[2] == nq &&
                     bias.extent[3] == nk);
    require_disjoint(out, "out", bias, "bias");
    if (!lse.empty()) require_disjoint(lse, "lse", bias, "bias");
  }
  const float scale = opt.scale.value_or(1.0f / std::sqrt(static_cast<float>(dk)));
  require(std::isfinite(scale), "scale", "a finite value", scale);
  typed_softmax_problem<Q, K, V, O> p{views, lse, scale, opt.sinks};
  p.num_splits = opt.num_splits;
  return p;
}

// A mask argument carries the mask, modifier and key counts itself: of the
// options only scale, sinks and num_splits may be set beside it.
inline void check_options_beside_mask(const softmax_options& opt) {
  require(!opt.has_mask() && !opt.has_modifier(), "softmax_options",
          "no mask or score-modifier fields beside a mask argument (compose them into it)",
          "mask or modifier fields set");
  require(opt.kv_lengths.empty(), "kv_lengths",
          "no key counts beside a mask argument (compose attn::kv_length_mask into it)", "kv_lengths set");
}

// The key counts of opt.kv_lengths on a contiguous cache of Nk keys.
inline void check_kv_lengths(std::span<const std::int32_t> lengths, index_t batch, index_t nk) {
  require(static_cast<index_t>(lengths.size()) == batch, "kv_lengths",
          [&] { return concat("one key count per sequence (B = ", batch, ")"); },
          [&] { return concat(lengths.size(), " counts"); });
  for (index_t s = 0; s < batch; ++s)
    require(lengths[s] >= 0 && lengths[s] <= nk, "kv_lengths",
            [&] { return concat("each sequence's key count in [0, Nk = ", nk, "]"); },
            [&] { return concat("kv_lengths[", s, "] = ", lengths[s]); });
}

// The contiguous problem: q, k, v, out, lse and the options.
template <class Q, class K, class V, class O>
typed_softmax_problem<Q, K, V, O> make_softmax_problem(view4<const Q> q, view4<const K> k, view4<const V> v,
                                                       view4<O> out, view3<float> lse, const softmax_options& opt) {
  typed_views<Q, K, V, O> views = checked_views(q, k, v, out);
  check_lse(lse, {views.batch(), views.nq(), views.hq()}, "Hq", {{out, "out"}, {q, "q"}, {k, "k"}, {v, "v"}});
  if (!opt.kv_lengths.empty()) {
    check_kv_lengths(opt.kv_lengths, views.batch(), views.nk());
    views.sequences.k_lengths = opt.kv_lengths.data();
  }
  return make_softmax_problem(views, lse, opt);
}

// The built-in score modifiers the options ask for, each applied when set.
struct option_modifiers {
  std::optional<float> cap;
  std::vector<float> slopes;  // (Hq) or empty
  view4<const float> bias;

  template <class B>
  void apply(const score_tile_ref& t) const {
    if (cap && !slopes.empty())  // one pass over the tile for both
      map_scores<B>(t, softcap{*cap}.lanes<B>(t), alibi{slopes.data()}.lanes<B>(t));
    else if (cap)
      softcap{*cap}.apply<B>(t);
    else if (!slopes.empty())
      alibi{slopes.data()}.apply<B>(t);
    if (!bias.empty()) score_bias{bias}.apply<B>(t);
  }
};

// The one place where runtime options become mask and modifier types:
// f(masks, modifier) runs with the types the options ask for. The built-in
// masks are built per sequence, aligned at its own offset (Nk - Nq, or its
// key and query counts in a ragged batch); documents span the whole batch.
template <class P, class F>
void with_option_types(const P& p, const softmax_options& opt, F&& f) {
  auto with_mask = [&](const auto& modifier) {
    auto aligned = [&](auto mask_at) {  // mask_at(offset) -> a sequence's mask
      f(per_sequence{[&p, mask_at](index_t b) { return mask_at(p.nk_of(b) - p.nq_of(b)); }}, modifier);
    };
    const index_t offset = p.nk() - p.nq();
    if (!opt.document_ids.empty())
      f(document_mask(opt.document_ids, offset) & window_mask_of(opt, offset), modifier);
    else if (opt.prefix_lm)
      aligned([prefix = *opt.prefix_lm](index_t off) { return prefix_lm_mask{off, prefix}; });
    else if (opt.window)
      aligned([&opt](index_t off) { return window_mask_of(opt, off); });
    else if (opt.causal)
      aligned([](index_t off) { return causal_mask{off}; });
    else
      f(no_mask{}, modifier);  // each sequence's keys end at its own count (query_block::nk)
  };
  if (!opt.has_modifier()) return with_mask(no_modifier{});
  with_mask(option_modifiers{opt.softcap, opt.alibi_slopes_for(p.hq()), opt.bias});
}

// Runs the problem with the masks and modifiers the options ask for.
template <class Backend, class P, class Exec>
void run_options(const P& p, const softmax_options& opt, const Exec& exec) {
  with_option_types(p, opt, [&](const auto& masks, const auto& modifier) {
    run_softmax<Backend>(p, masks, modifier, exec);
  });
}

// The bodies of attention(q, k, v, out, ...) without and with a mask
// argument, for every storage type (the public overloads forward here).
template <class Backend, class Q, class K, class V, class O, class Exec>
void dense_attention(view4<const Q> q, view4<const K> k, view4<const V> v, view4<O> out, view3<float> lse,
                     const softmax_options& opt, const Exec& exec) {
  run_options<Backend>(make_softmax_problem(q, k, v, out, lse, opt), opt, exec);
}
template <class Backend, class P, class Mask, class Modifier, class Exec>
void run_masked(const P& p, const Mask& mask, const Modifier& modifier, const Exec& exec) {
  check_mask(mask, problem_shape{p.batch(), p.hq(), p.nq(), p.nk()});
  run_softmax<Backend>(p, mask, modifier, exec);
}
template <class Backend, class Q, class K, class V, class O, class Mask, class Modifier, class Exec>
void masked_attention(view4<const Q> q, view4<const K> k, view4<const V> v, view4<O> out, view3<float> lse,
                      const Mask& mask, const Modifier& modifier, const softmax_options& opt, const Exec& exec) {
  check_options_beside_mask(opt);
  run_masked<Backend>(make_softmax_problem(q, k, v, out, lse, opt), mask, modifier, exec);
}

// The problem of an int8 k and v: their values as the K and V views, the
// scales beside them (checked against the values' rows, disjoint from out
// and lse).
template <class P>
void attach_scales(P& p, const view3<const float>& k_scales, const view3<const float>& v_scales,
                   index_t scale_rows, index_t capacity, const char* rows_name, const char* capacity_name,
                   const char* k_name = "k_scales", const char* v_name = "v_scales") {
  p.k_scales = checked_scales(k_scales, k_name, scale_rows, capacity, p.hkv(), rows_name, capacity_name, "Hkv");
  p.v_scales = checked_scales(v_scales, v_name, scale_rows, capacity, p.hkv(), rows_name, capacity_name, "Hkv");
  for (const auto& [scales, name] : {std::pair{k_scales, k_name}, std::pair{v_scales, v_name}}) {
    require_disjoint(p.out, "out", scales, name);
    if (!p.lse.empty()) require_disjoint(p.lse, "lse", scales, name);
  }
}
template <class Q, class O>
typed_softmax_problem<Q, std::int8_t, std::int8_t, O> make_quantized_problem(
    view4<const Q> q, const quantized& k, const quantized& v, view4<O> out, view3<float> lse,
    const softmax_options& opt) {
  auto p = make_softmax_problem(q, k.values, v.values, out, lse, opt);
  attach_scales(p, k.scales, v.scales, p.batch(), p.nk(), "B", "Nk");
  return p;
}

// A paged cache checked for `batch` sequences of queries with hq heads of
// dk channels: k and v are the pools' logical (B, capacity, Hkv, D) views,
// rows found through the block table; key counts from `lengths` (required).
template <class K, class V>
struct paged_views {
  view4<const K> k;
  view4<const V> v;
  kv_pages pages;
};
template <class K, class V>
paged_views<K, V> checked_paged_cache(const typed_paged_kv<K, V>& cache, index_t batch, index_t hq, index_t dk,
                                      std::span<const std::int32_t> lengths) {
  const view4<const K>& kp = cache.k_pages;
  const view4<const V>& vp = cache.v_pages;
  require_view(
      kp, "k_pages",
      [&] { return dims({{"P", -1}, {"page_size", -1}, {"Hkv", -1}, {"Dk", dk}}) + " with page_size, Hkv >= 1"; },
      kp.extent[1] >= 1 && kp.extent[2] >= 1 && kp.extent[3] == dk);
  const index_t pool = kp.extent[0], page_size = kp.extent[1], hkv = kp.extent[2];
  require(hq % hkv == 0, "k_pages", [&] { return concat("a kv head count dividing Hq = ", hq, " (GQA)"); },
          [&] { return concat("Hkv = ", hkv); });
  require_view(
      vp, "v_pages",
      [&] { return dims({{"P", pool}, {"page_size", page_size}, {"Hkv", hkv}, {"Dv", -1}}) + " with Dv >= 1"; },
      vp.extent[0] == pool && vp.extent[1] == page_size && vp.extent[2] == hkv && vp.extent[3] >= 1);
  const index_t capacity = check_block_table(cache.block_table, batch, pool, page_size, lengths, "kv_lengths");
  return {logical_cache(kp, batch, capacity), logical_cache(vp, batch, capacity),
          kv_pages{cache.block_table.data, cache.block_table.stride[0], page_size}};
}

// The problem of a paged cache: q (B, Nq, Hq, Dk) and out, lse as for a
// contiguous cache of the same keys.
template <class Q, class K, class V, class O>
typed_softmax_problem<Q, K, V, O> make_paged_problem(view4<const Q> q, const typed_paged_kv<K, V>& cache,
                                                     view4<O> out, view3<float> lse, const softmax_options& opt) {
  const index_t b = q.extent[0], nq = q.extent[1], hq = q.extent[2];
  require_view(q, "q", "(B, Nq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && q.extent[3] >= 1);
  const paged_views<K, V> kv = checked_paged_cache(cache, b, hq, q.extent[3], opt.kv_lengths);
  const index_t dv = kv.v.extent[3];
  check_written(
      out, "out", [&] { return dims({{"B", b}, {"Nq", nq}, {"Hq", hq}, {"Dv", dv}}); },
      out.extent == std::array<index_t, 4>{b, nq, hq, dv},
      {{q, "q"}, {cache.k_pages, "k_pages"}, {cache.v_pages, "v_pages"}});
  check_lse(lse, {b, nq, hq}, "Hq", {{out, "out"}, {q, "q"}, {cache.k_pages, "k_pages"}, {cache.v_pages, "v_pages"}});
  typed_views<Q, K, V, O> views{q, kv.k, kv.v, out, kv.pages};
  views.sequences.k_lengths = opt.kv_lengths.data();
  return make_softmax_problem(views, lse, opt);
}

// The int8 pools of a paged cache, and the scales attached to the problem
// made over them (make(pools)) as the logical (B, capacity, Hkv) views the
// block table indexes.
template <class Make>
auto make_quantized_paged(const quantized_paged_kv& cache, Make&& make) {
  auto p = make(typed_paged_kv<std::int8_t>{cache.k_pages, cache.v_pages, cache.block_table});
  attach_scales(p, cache.k_scales, cache.v_scales, cache.k_pages.extent[0], cache.k_pages.extent[1], "P",
                "page_size");
  for (view3<const float>* scales : {&p.k_scales, &p.v_scales})
    *scales = {scales->data, {p.batch(), p.nk(), p.hkv()}, scales->stride};
  return p;
}
template <class Q, class O>
typed_softmax_problem<Q, std::int8_t, std::int8_t, O> make_quantized_paged_problem(
    view4<const Q> q, const quantized_paged_kv& cache, view4<O> out, view3<float> lse, const softmax_options& opt) {
  return make_quantized_paged(cache, [&](const auto& pools) { return make_paged_problem(q, pools, out, lse, opt); });
}

}  // namespace detail

// Softmax attention (DESIGN §1): out = softmax(scale * q k^T [+ mask]) v,
// lse = log-sum-exp of each row (natural log) when `lse` is given.
//   q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv) -> out (B, Nq, Hq, Dv)
// Any strides; Hq % Hkv == 0 (GQA/MQA); Nq != Nk aligns masks bottom-right.
// Backend: a SIMD policy (attn::backend::scalar, attn::backend::native, or
// attn::backend::xsimd_backend<Arch>); Exec: attn::serial, attn::openmp{n},
// or attn::parallel_for_executor{n, run}.
template <simd_backend Backend = default_backend, executor Exec = serial>
void attention(view4<const float> q, view4<const float> k, view4<const float> v, view4<float> out,
               view3<float> lse = {}, const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::dense_attention<Backend>(q, k, v, out, lse, opt, exec);
}

// The same with tensors stored in 16 bits (README, "Reduced precision"):
// q, k, v and out each float, attn::float16 or attn::bfloat16, e.g. fp32 q
// and out over an fp16 k and v. Computed in fp32: 16-bit tiles are widened
// as they are loaded, out is rounded once per element.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void attention(strided_view<Q, 4> q, strided_view<K, 4> k, strided_view<V, 4> v, strided_view<O, 4> out,
               view3<float> lse = {}, const softmax_options& opt = {}, const Exec& exec = {}) {
  using detail::as_input;
  detail::dense_attention<Backend>(as_input(q), as_input(k), as_input(v), out, lse, opt, exec);
}

// The same over an int8 K/V cache (attn::quantized: int8 values with a
// scale per token and head, or per token; attn::quantize builds it), q and
// out each float, attn::float16 or attn::bfloat16 (README, "Reduced
// precision").
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void attention(strided_view<Q, 4> q, const quantized& k, const quantized& v, strided_view<O, 4> out,
               view3<float> lse = {}, const softmax_options& opt = {}, const Exec& exec = {}) {
  const auto p = detail::make_quantized_problem(detail::as_input(q), k, v, out, lse, opt);
  detail::run_options<Backend>(p, opt, exec);
}

// Softmax attention with a mask and a score modifier of the caller's
// (FlexAttention's model, fused): any attn::mask, e.g. built-ins composed
// with & and |, attn::mask_from(predicate[, classifier]), or
// attn::blocked(block_mask, mask); any attn::score_modifier, e.g.
// attn::chain(attn::softcap{30}, attn::score_mod_from(fn)). Of the options
// only scale and sinks apply; the mask and modifier fields must be unset.
template <simd_backend Backend = default_backend, mask Mask, score_modifier Modifier = no_modifier,
          executor Exec = serial>
void attention(view4<const float> q, view4<const float> k, view4<const float> v, view4<float> out,
               view3<float> lse, const Mask& mask, const Modifier& modifier = {},
               const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::masked_attention<Backend>(q, k, v, out, lse, mask, modifier, opt, exec);
}

// The same with tensors stored in 16 bits (as the overload above).
template <simd_backend Backend = default_backend, mask Mask, score_modifier Modifier = no_modifier,
          executor Exec = serial, class Q, class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void attention(strided_view<Q, 4> q, strided_view<K, 4> k, strided_view<V, 4> v, strided_view<O, 4> out,
               view3<float> lse, const Mask& mask, const Modifier& modifier = {},
               const softmax_options& opt = {}, const Exec& exec = {}) {
  using detail::as_input;
  detail::masked_attention<Backend>(as_input(q), as_input(k), as_input(v), out, lse, mask, modifier, opt, exec);
}

// The same over an int8 K/V cache (as the options form above).
template <simd_backend Backend = default_backend, mask Mask, score_modifier Modifier = no_modifier,
          executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void attention(strided_view<Q, 4> q, const quantized& k, const quantized& v, strided_view<O, 4> out,
               view3<float> lse, const Mask& mask, const Modifier& modifier = {},
               const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::check_options_beside_mask(opt);
  detail::run_masked<Backend>(detail::make_quantized_problem(detail::as_input(q), k, v, out, lse, opt), mask,
                              modifier, exec);
}

// Softmax attention over a paged K/V cache (vLLM's layout, decode and
// chunked prefill): q (B, Nq, Hq, Dk), cache.k_pages (P, page_size, Hkv, Dk),
// cache.v_pages (P, page_size, Hkv, Dv), cache.block_table (B, max_pages)
// -> out (B, Nq, Hq, Dv). opt.kv_lengths (required) gives each sequence's
// keys; masks align bottom-right at each sequence's length, so with Nq = 1
// the query is the sequence's last token. The same computation as a
// contiguous cache holding the same keys; pages are read in place.
template <simd_backend Backend = default_backend, executor Exec = serial>
void attention(view4<const float> q, const paged_kv& cache, view4<float> out, view3<float> lse = {},
               const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::run_options<Backend>(detail::make_paged_problem(q, cache, out, lse, opt), opt, exec);
}

// The same with 16-bit storage: k and v pages (typed_paged_kv<K, V>), q and
// out each float, attn::float16 or attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void attention(strided_view<Q, 4> q, const typed_paged_kv<K, V>& cache, strided_view<O, 4> out,
               view3<float> lse = {}, const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::run_options<Backend>(detail::make_paged_problem(detail::as_input(q), cache, out, lse, opt), opt, exec);
}

// The same over a paged int8 cache (quantized_paged_kv: the pools of int8
// values and their scales, row for row).
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void attention(strided_view<Q, 4> q, const quantized_paged_kv& cache, strided_view<O, 4> out,
               view3<float> lse = {}, const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::run_options<Backend>(detail::make_quantized_paged_problem(detail::as_input(q), cache, out, lse, opt), opt,
                               exec);
}

namespace detail {

// Packed queries, keys and values (varlen): the problem, for every storage
// type.
template <class Q, class K, class V, class O>
typed_softmax_problem<Q, K, V, O> make_varlen_problem(view3<const Q> q, view3<const K> k, view3<const V> v,
                                                      view3<O> out, strided_view<float, 2> lse,
                                                      std::span<const std::int32_t> cu_seqlens_q,
                                                      std::span<const std::int32_t> cu_seqlens_k,
                                                      const softmax_options& opt) {
  const index_t hq = q.extent[1], dk = q.extent[2], tk = k.extent[0], hkv = k.extent[1];
  require_view(q, "q", "(Tq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  require_view(k, "k", dims({{"Tk", -1}, {"Hkv", -1}, {"Dk", dk}}) + " with Hkv >= 1",
               hkv >= 1 && k.extent[2] == dk);
  require(hq % hkv == 0, "k", "a kv head count dividing Hq = " + std::to_string(hq) + " (GQA)",
          "Hkv = " + std::to_string(hkv));
  require_view(v, "v", dims({{"Tk", tk}, {"Hkv", hkv}, {"Dv", -1}}) + " with Dv >= 1",
               v.extent[0] == tk && v.extent[1] == hkv && v.extent[2] >= 1);
  require(opt.kv_lengths.empty(), "kv_lengths", "none with varlen keys (cu_seqlens_k gives them)",
          "kv_lengths set");
  require(cu_seqlens_k.size() == cu_seqlens_q.size(), "cu_seqlens_k",
          "as many offsets as cu_seqlens_q (" + std::to_string(cu_seqlens_q.size()) + ")",
          std::to_string(cu_seqlens_k.size()) + " offsets");
  const index_t longest_k = check_cu_seqlens(cu_seqlens_k, "cu_seqlens_k", tk);
  const index_t batch = static_cast<index_t>(cu_seqlens_k.size()) - 1;
  const auto pq = checked_packed_queries(q, out, lse, cu_seqlens_q, v.extent[2], {{k, "k"}, {v, "v"}});
  typed_views<Q, K, V, O> views{pq.q, packed_batch(k, batch, longest_k), packed_batch(v, batch, longest_k),
                                pq.out};
  views.sequences = {cu_seqlens_q.data(), cu_seqlens_k.data(), nullptr};
  return make_softmax_problem(views, pq.lse, opt);
}

// Packed int8 K and V: the rows of one batch entry, values (1, Tk, Hkv, D)
// and scales (1, Tk, Hkv) or (1, Tk, 1), as the logical (B, longest, Hkv)
// views the sequences' offsets index.
template <class Q, class O>
typed_softmax_problem<Q, std::int8_t, std::int8_t, O> make_quantized_varlen_problem(
    view3<const Q> q, const quantized& k, const quantized& v, view3<O> out, strided_view<float, 2> lse,
    std::span<const std::int32_t> cu_seqlens_q, std::span<const std::int32_t> cu_seqlens_k,
    const softmax_options& opt) {
  auto rows = [](const quantized& x, const char* name) {
    require_view(x.values, name, "(1, Tk, Hkv, D): packed rows, one batch entry", x.values.extent[0] == 1);
    const view4<const std::int8_t>& t = x.values;
    return view3<const std::int8_t>{t.data, {t.extent[1], t.extent[2], t.extent[3]},
                                    {t.stride[1], t.stride[2], t.stride[3]}};
  };
  auto p = make_varlen_problem(q, rows(k, "k"), rows(v, "v"), out, lse, cu_seqlens_q, cu_seqlens_k, opt);
  attach_scales(p, k.scales, v.scales, 1, k.values.extent[1], "B", "Tk");
  for (view3<const float>* scales : {&p.k_scales, &p.v_scales})
    *scales = {scales->data, {p.batch(), p.nk(), p.hkv()}, {0, scales->stride[1], scales->stride[2]}};
  return p;
}

// Packed queries over a paged cache: the problem, for every storage type.
template <class Q, class K, class V, class O>
typed_softmax_problem<Q, K, V, O> make_varlen_paged_problem(view3<const Q> q, const typed_paged_kv<K, V>& cache,
                                                            view3<O> out, strided_view<float, 2> lse,
                                                            std::span<const std::int32_t> cu_seqlens_q,
                                                            const softmax_options& opt) {
  const index_t hq = q.extent[1], dk = q.extent[2];
  require_view(q, "q", "(Tq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  const index_t batch = sequence_count(cu_seqlens_q, "cu_seqlens_q");
  const auto kv = checked_paged_cache(cache, batch, hq, dk, opt.kv_lengths);
  const auto pq = checked_packed_queries(q, out, lse, cu_seqlens_q, kv.v.extent[3],
                                         {{cache.k_pages, "k_pages"}, {cache.v_pages, "v_pages"}});
  typed_views<Q, K, V, O> views{pq.q, kv.k, kv.v, pq.out, kv.pages};
  views.sequences = {cu_seqlens_q.data(), nullptr, opt.kv_lengths.data()};
  return make_softmax_problem(views, pq.lse, opt);
}

}  // namespace detail

// Variable-length batches (FlashAttention's varlen API): sequences packed
// along the rows, q (Tq, Hq, Dk), k (Tk, Hkv, Dk), v (Tk, Hkv, Dv) -> out
// (Tq, Hq, Dv), lse (Tq, Hq) when given; sequence b holds query rows
// [cu_seqlens_q[b], cu_seqlens_q[b + 1]) and key rows [cu_seqlens_k[b],
// cu_seqlens_k[b + 1]) (B + 1 offsets each). Masks align bottom-right per
// sequence (its query i sits at key i + len_k - len_q). kv_lengths,
// document ids and bias do not apply (an error).
template <simd_backend Backend = default_backend, executor Exec = serial>
void varlen_attention(view3<const float> q, view3<const float> k, view3<const float> v, view3<float> out,
                      strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                      std::span<const std::int32_t> cu_seqlens_k, const softmax_options& opt = {},
                      const Exec& exec = {}) {
  detail::run_options<Backend>(detail::make_varlen_problem(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, opt),
                               opt, exec);
}

// The same with tensors stored in 16 bits, each float, attn::float16 or
// attn::bfloat16 (README, "Reduced precision").
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void varlen_attention(strided_view<Q, 3> q, strided_view<K, 3> k, strided_view<V, 3> v, strided_view<O, 3> out,
                      strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                      std::span<const std::int32_t> cu_seqlens_k, const softmax_options& opt = {},
                      const Exec& exec = {}) {
  using detail::as_input;
  detail::run_options<Backend>(detail::make_varlen_problem(as_input(q), as_input(k), as_input(v), out, lse,
                                                           cu_seqlens_q, cu_seqlens_k, opt),
                               opt, exec);
}

// The same over packed int8 K and V (attn::quantized with one batch entry:
// values (1, Tk, Hkv, D), scales (1, Tk, Hkv) or (1, Tk, 1), e.g.
// attn::quantize of the packed rows viewed as (1, Tk, Hkv, D)), q and out
// each float, attn::float16 or attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void varlen_attention(strided_view<Q, 3> q, const quantized& k, const quantized& v, strided_view<O, 3> out,
                      strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                      std::span<const std::int32_t> cu_seqlens_k, const softmax_options& opt = {},
                      const Exec& exec = {}) {
  detail::run_options<Backend>(detail::make_quantized_varlen_problem(detail::as_input(q), k, v, out, lse,
                                                                     cu_seqlens_q, cu_seqlens_k, opt),
                               opt, exec);
}

// Packed (varlen) queries over a paged K/V cache (chunked prefill of
// several sequences at once, vLLM): q (Tq, Hq, Dk) with cu_seqlens_q (B + 1),
// the cache as in attention(q, paged_kv, ...), opt.kv_lengths (B, required)
// the keys each sequence holds, its new queries the last of them.
template <simd_backend Backend = default_backend, executor Exec = serial>
void varlen_attention(view3<const float> q, const paged_kv& cache, view3<float> out, strided_view<float, 2> lse,
                      std::span<const std::int32_t> cu_seqlens_q, const softmax_options& opt = {},
                      const Exec& exec = {}) {
  detail::run_options<Backend>(detail::make_varlen_paged_problem(q, cache, out, lse, cu_seqlens_q, opt), opt, exec);
}

// The same with q, out and the cache's pages stored in 16 bits.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void varlen_attention(strided_view<Q, 3> q, const typed_paged_kv<K, V>& cache, strided_view<O, 3> out,
                      strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                      const softmax_options& opt = {}, const Exec& exec = {}) {
  detail::run_options<Backend>(
      detail::make_varlen_paged_problem(detail::as_input(q), cache, out, lse, cu_seqlens_q, opt), opt, exec);
}

// The same over a paged int8 cache (quantized_paged_kv, as attention(q,
// quantized_paged_kv, ...)), q and out each float, attn::float16 or
// attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void varlen_attention(strided_view<Q, 3> q, const quantized_paged_kv& cache, strided_view<O, 3> out,
                      strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                      const softmax_options& opt = {}, const Exec& exec = {}) {
  const auto p = detail::make_quantized_paged(cache, [&](const auto& pools) {
    return detail::make_varlen_paged_problem(detail::as_input(q), pools, out, lse, cu_seqlens_q, opt);
  });
  detail::run_options<Backend>(p, opt, exec);
}

}  // namespace attn
