// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cmath>
#include <optional>
#include <string>

#include "attn/backend/registry.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"

namespace attn {

// Options of softmax attention (DESIGN §1).
struct softmax_options {
  std::optional<float> scale;    // default 1 / sqrt(Dk)
  bool causal = false;           // key j allowed iff j <= i + (Nk - Nq)
  const float* sinks = nullptr;  // (Hq) per-head sink logits (gpt-oss), or null
  // Sliding window {left, right} (-1: unbounded), bottom-right aligned like
  // causal; with causal, right is at most 0. window{-1, 0} is causal.
  std::optional<std::array<index_t, 2>> window;
  index_t sink_tokens = 0;       // StreamingLLM: keys j < n stay visible (needs a window)
};

// The window mask the options describe (causal folded in: right <= 0).
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
  const index_t b = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  require_view(q, "q", "(B, Nq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  const index_t nk = k.extent[1], hkv = k.extent[2];
  require_view(k, "k", dims({{"B", b}, {"Nk", -1}, {"Hkv", -1}, {"Dk", dk}}) + " with Hkv >= 1",
               k.extent[0] == b && hkv >= 1 && k.extent[3] == dk);
  require(hq % hkv == 0, "k", "a kv head count dividing Hq = " + std::to_string(hq) + " (GQA)",
          "Hkv = " + std::to_string(hkv));
  const index_t dv = v.extent[3];
  require_view(v, "v", dims({{"B", b}, {"Nk", nk}, {"Hkv", hkv}, {"Dv", -1}}) + " with Dv >= 1",
               v.extent[0] == b && v.extent[1] == nk && v.extent[2] == hkv && dv >= 1);
  require_view(out, "out", dims({{"B", b}, {"Nq", nq}, {"Hq", hq}, {"Dv", dv}}),
               out.extent == std::array<index_t, 4>{b, nq, hq, dv});
  require_distinct(out, "out");
  require_disjoint(out, "out", q, "q");
  require_disjoint(out, "out", k, "k");
  require_disjoint(out, "out", v, "v");
  if (!lse.empty()) {
    require_view(lse, "lse", dims({{"B", b}, {"Nq", nq}, {"Hq", hq}}),
                 lse.extent == std::array<index_t, 3>{b, nq, hq});
    require_distinct(lse, "lse");
    require_disjoint(lse, "lse", out, "out");
    require_disjoint(lse, "lse", q, "q");
    require_disjoint(lse, "lse", k, "k");
    require_disjoint(lse, "lse", v, "v");
  }
  if (opt.window) {
    const auto [left, right] = *opt.window;
    require(left >= -1 && right >= -1, "window", "{left, right} with each >= -1 (-1: unbounded)",
            "{" + std::to_string(left) + ", " + std::to_string(right) + "}");
  }
  require(opt.sink_tokens >= 0, "sink_tokens", "a count >= 0", opt.sink_tokens);
  require(opt.sink_tokens == 0 || opt.window.has_value(), "sink_tokens",
          "a window to extend (sink tokens are kept beside a sliding window)", "no window");
  const float scale = opt.scale.value_or(1.0f / std::sqrt(static_cast<float>(dk)));
  require(std::isfinite(scale), "scale", "a finite value", scale);
  return {q, k, v, out, lse, scale, opt.sinks};
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
  // The one place where runtime options become mask types.
  if (opt.window)
    detail::run_softmax<Backend>(p, window_mask_of(opt, p.nk() - p.nq()), exec);
  else if (opt.causal)
    detail::run_softmax<Backend>(p, causal_mask{p.nk() - p.nq()}, exec);
  else
    detail::run_softmax<Backend>(p, no_mask{}, exec);
}

}  // namespace attn
