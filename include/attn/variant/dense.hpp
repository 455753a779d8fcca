// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/main_loop.hpp"
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

// Checks every argument and builds the problem; throws attn::error.
inline softmax_problem make_softmax_problem(view4<const float> q, view4<const float> k,
                                            view4<const float> v, view4<float> out,
                                            view3<float> lse, const softmax_options& opt) {
  const attention_views views = checked_views(q, k, v, out);
  const index_t b = views.batch(), nq = views.nq(), hq = views.hq(), dk = views.dk();
  const index_t nk = views.nk();
  check_lse(lse, {b, nq, hq}, "Hq", {{out, "out"}, {q, "q"}, {k, "k"}, {v, "v"}});
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
  return {views, lse, scale, opt.sinks};
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
// f(mask, modifier) runs with the types the options ask for.
template <class F>
void with_option_types(const softmax_problem& p, const softmax_options& opt, F&& f) {
  const index_t offset = p.nk() - p.nq();
  auto with_mask = [&](const auto& modifier) {
    if (!opt.document_ids.empty())
      f(document_mask(opt.document_ids, offset) & window_mask_of(opt, offset), modifier);
    else if (opt.prefix_lm)
      f(prefix_lm_mask{offset, *opt.prefix_lm}, modifier);
    else if (opt.window)
      f(window_mask_of(opt, offset), modifier);
    else if (opt.causal)
      f(causal_mask{offset}, modifier);
    else
      f(no_mask{}, modifier);
  };
  if (!opt.has_modifier()) return with_mask(no_modifier{});
  with_mask(option_modifiers{opt.softcap, opt.alibi_slopes_for(p.hq()), opt.bias});
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
  const detail::softmax_problem p = detail::make_softmax_problem(q, k, v, out, lse, opt);
  detail::with_option_types(p, opt, [&](const auto& mask, const auto& modifier) {
    detail::run_softmax<Backend>(p, mask, modifier, exec);
  });
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
  detail::require(!opt.has_mask() && !opt.has_modifier(), "softmax_options",
                  "no mask or score-modifier fields beside a mask argument (compose them into it)",
                  "mask or modifier fields set");
  const detail::softmax_problem p = detail::make_softmax_problem(q, k, v, out, lse, opt);
  check_mask(mask, problem_shape{p.batch(), p.hq(), p.nq(), p.nk()});
  detail::run_softmax<Backend>(p, mask, modifier, exec);
}

}  // namespace attn
