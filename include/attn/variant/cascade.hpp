// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/kv_cache.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/quantized.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/mask/masks.hpp"
#include "attn/variant/dense.hpp"

// Cascade attention (shared prefix; FlashInfer's cascade inference). B
// sequences share their first Np keys (a system prompt, few-shot examples)
// and each continues with its own suffix; sequence b's keys are
//   prefix_k[0, Np) followed by its suffix keys [0, len_b).
// Two passes on the core loop and one merge (DESIGN §2):
//   1. every query of every sequence against the prefix, as ONE sequence of
//      B x Nq queries, so the prefix K/V is read once per query tile rather
//      than once per sequence;
//   2. each sequence against its own suffix (contiguous or paged, ragged
//      lengths), each row merged with its prefix result as it is stored.
// The result equals softmax attention over the concatenated keys. Each
// tensor may be stored in 16 bits (README, "Reduced precision"); a 16-bit
// out keeps the prefix pass's rows in an fp32 scratch of out's size between
// the passes, so it is rounded once.
namespace attn {

namespace detail {

// A (B, Nq, H, D) view as the one sequence (1, B x Nq, H, D) of its rows;
// needs rows in token-major order (batch stride = Nq x row stride).
template <class T, std::size_t N>
strided_view<T, N> fold_batch(const strided_view<T, N>& x, const char* name) {
  const index_t b = x.extent[0], n = x.extent[1];
  require(b <= 1 || x.stride[0] == n * x.stride[1], name,
          "token-major rows, batch stride = Nq x row stride (" + std::to_string(n * x.stride[1]) +
              "), so that all sequences' queries form the shared prefix's one pass",
          "batch stride " + std::to_string(x.stride[0]));
  strided_view<T, N> folded = x;
  folded.extent[0] = 1;
  folded.extent[1] = b * n;
  folded.stride[0] = 0;
  return folded;
}

// Runs the cascade once the suffix problem `suffix` (checked, lse present)
// is built: the prefix pass, then the suffix pass merged in. The prefix pass
// writes into out when out is fp32; a 16-bit out would round the prefix
// result before the merge, so it goes to an fp32 scratch of out's size
// instead and the suffix pass merges from there (one rounding, at the end).
// attach_prefix(problem) completes the prefix pass's problem before it runs
// (an int8 prefix's scales).
struct attach_nothing {
  template <class P>
  void operator()(P&) const {}
};
template <class Backend, class P, class PK, class PV, class Exec, class Attach = attach_nothing>
void run_cascade(P suffix, view4<const PK> prefix_k, view4<const PV> prefix_v, const softmax_options& opt,
                 const Exec& exec, Attach attach_prefix = {}) {
  const index_t hkv = suffix.hkv(), dk = suffix.dk(), dv = suffix.dv();
  require_view(prefix_k, "prefix_k", dims({{"1", 1}, {"Np", -1}, {"Hkv", hkv}, {"Dk", dk}}),
               prefix_k.extent[0] == 1 && prefix_k.extent[2] == hkv && prefix_k.extent[3] == dk);
  require_view(prefix_v, "prefix_v", dims({{"1", 1}, {"Np", prefix_k.extent[1]}, {"Hkv", hkv}, {"Dv", dv}}),
               prefix_v.extent[0] == 1 && prefix_v.extent[1] == prefix_k.extent[1] && prefix_v.extent[2] == hkv &&
                   prefix_v.extent[3] == dv);
  require_disjoint(suffix.out, "out", prefix_k, "prefix_k");
  require_disjoint(suffix.out, "out", prefix_v, "prefix_v");
  require_disjoint(suffix.lse, "lse", prefix_k, "prefix_k");
  require_disjoint(suffix.lse, "lse", prefix_v, "prefix_v");
  require(!opt.window && opt.document_ids.empty() && !opt.prefix_lm && !opt.alibi && !opt.alibi_slopes &&
              opt.bias.empty(),
          "softmax_options", "only scale, causal, sinks, softcap, kv_lengths and num_splits in a cascade",
          "a window, documents, prefix-LM, ALiBi or bias");
  if (opt.causal)  // the queries are each sequence's last tokens: past the prefix
    for (index_t b = 0; b < suffix.batch(); ++b)
      require(suffix.nk_of(b) >= suffix.nq(), opt.kv_lengths.empty() ? "k" : "kv_lengths",
              "causal: every suffix at least Nq = " + std::to_string(suffix.nq()) +
                  " keys long (the queries are its last tokens)",
              "sequence " + std::to_string(b) + " with " + std::to_string(suffix.nk_of(b)) + " keys");
  // 1. The prefix pass: all B x Nq queries as one sequence, every prefix key
  // visible, no sinks (merged once, in the suffix pass).
  softmax_options prefix_opt;
  prefix_opt.scale = suffix.scale;
  prefix_opt.softcap = opt.softcap;
  prefix_opt.num_splits = opt.num_splits;
  using Q = typename P::q_type;
  using O = typename P::out_type;
  const view4<const Q> q = fold_batch(suffix.q, "q");
  const view3<float> lse = fold_batch(suffix.lse, "lse");
  const view4<O> out = fold_batch(suffix.out, "out");
  const auto prefix_pass = [&]<class R>(view4<R> rows) {
    auto prefix = make_softmax_problem(typed_views<Q, PK, PV, R>{q, prefix_k, prefix_v, rows}, lse, prefix_opt);
    attach_prefix(prefix);
    run_options<Backend>(prefix, prefix_opt, exec);
  };
  std::vector<float> earlier;  // a 16-bit out's prefix result, (1, B x Nq, Hq, Dv)
  if constexpr (std::is_same_v<O, float>) {
    prefix_pass(out);
  } else {
    earlier.resize(static_cast<std::size_t>(out.extent[1] * out.extent[2] * dv));
    prefix_pass(bshd(earlier.data(), 1, out.extent[1], out.extent[2], dv));
    suffix.earlier = bshd<const float>(earlier.data(), suffix.batch(), suffix.nq(), suffix.hq(), dv);
  }
  // 2. The suffix pass, merged into the prefix's rows (sinks once, here).
  suffix.merge_into_out = true;
  run_options<Backend>(suffix, opt, exec);
}

// The int8 prefix's scales, (1, Np, Hkv) or (1, Np, 1) each, attached to
// the prefix pass's problem.
inline auto prefix_scales(const quantized& prefix_k, const quantized& prefix_v) {
  return [&](auto& prefix) {
    attach_scales(prefix, prefix_k.scales, prefix_v.scales, 1, prefix_k.values.extent[1], "1", "Np",
                  "prefix_k.scales", "prefix_v.scales");
  };
}

// lse for the cascade's merge: the caller's, or a scratch (B, Nq, H).
template <class Q>
view3<float> cascade_lse(view3<float> lse, const strided_view<Q, 4>& q, std::vector<float>& scratch) {
  if (!lse.empty() || q.extent[0] < 0 || q.extent[1] < 0 || q.extent[2] < 0) return lse;  // bad q: checked next
  scratch.resize(static_cast<std::size_t>(q.extent[0] * q.extent[1] * q.extent[2]));
  return bsh(scratch.data(), q.extent[0], q.extent[1], q.extent[2]);
}

}  // namespace detail

// Cascade attention over a shared prefix and contiguous suffixes:
//   q (B, Nq, Hq, Dk) token-major (batch stride = Nq x row stride, as BSHD),
//   prefix_k (1, Np, Hkv, Dk), prefix_v (1, Np, Hkv, Dv) shared by all,
//   k (B, Ns, Hkv, Dk), v (B, Ns, Hkv, Dv) each sequence's own keys (the
//   first opt.kv_lengths[b] of them when given) -> out (B, Nq, Hq, Dv)
//   (token-major too), lse (B, Nq, Hq) when given.
// Options: scale, causal (bottom-right in the sequence: the queries are its
// last tokens, so every prefix key is visible), sinks, softcap, kv_lengths,
// num_splits; other mask and modifier fields are an error.
template <simd_backend Backend = default_backend, executor Exec = serial>
void cascade_attention(view4<const float> q, view4<const float> prefix_k, view4<const float> prefix_v,
                       view4<const float> k, view4<const float> v, view4<float> out, view3<float> lse = {},
                       const softmax_options& opt = {}, const Exec& exec = {}) {
  std::vector<float> scratch;
  const view3<float> l = detail::cascade_lse(lse, q, scratch);
  detail::run_cascade<Backend>(detail::make_softmax_problem(q, k, v, out, l, opt), prefix_k, prefix_v, opt, exec);
}

// The same with each sequence's suffix in a paged cache (opt.kv_lengths
// required), as attention(q, paged_kv, ...).
template <simd_backend Backend = default_backend, executor Exec = serial>
void cascade_attention(view4<const float> q, view4<const float> prefix_k, view4<const float> prefix_v,
                       const paged_kv& suffix, view4<float> out, view3<float> lse = {},
                       const softmax_options& opt = {}, const Exec& exec = {}) {
  std::vector<float> scratch;
  const view3<float> l = detail::cascade_lse(lse, q, scratch);
  detail::run_cascade<Backend>(detail::make_paged_problem(q, suffix, out, l, opt), prefix_k, prefix_v, opt, exec);
}

// The same with tensors stored in 16 bits (README, "Reduced precision"): q,
// k, v and out each float, attn::float16 or attn::bfloat16, the prefix
// stored as the suffix (prefix_k as k, prefix_v as v). A 16-bit out is
// rounded once, after the merge: the prefix pass keeps its rows in an fp32
// scratch of out's size.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class PK, class PV, class K,
          class V, class O>
  requires mixed_storage<Q, K, V, O> && same_storage<PK, K> && same_storage<PV, V>
void cascade_attention(strided_view<Q, 4> q, strided_view<PK, 4> prefix_k, strided_view<PV, 4> prefix_v,
                       strided_view<K, 4> k, strided_view<V, 4> v, strided_view<O, 4> out, view3<float> lse = {},
                       const softmax_options& opt = {}, const Exec& exec = {}) {
  using detail::as_input;
  std::vector<float> scratch;
  const view3<float> l = detail::cascade_lse(lse, q, scratch);
  detail::run_cascade<Backend>(detail::make_softmax_problem(as_input(q), as_input(k), as_input(v), out, l, opt),
                               as_input(prefix_k), as_input(prefix_v), opt, exec);
}
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class PK, class PV, class K,
          class V, class O>
  requires mixed_storage<Q, K, V, O> && same_storage<PK, K> && same_storage<PV, V>
void cascade_attention(strided_view<Q, 4> q, strided_view<PK, 4> prefix_k, strided_view<PV, 4> prefix_v,
                       const typed_paged_kv<K, V>& suffix, strided_view<O, 4> out, view3<float> lse = {},
                       const softmax_options& opt = {}, const Exec& exec = {}) {
  using detail::as_input;
  std::vector<float> scratch;
  const view3<float> l = detail::cascade_lse(lse, q, scratch);
  detail::run_cascade<Backend>(detail::make_paged_problem(as_input(q), suffix, out, l, opt), as_input(prefix_k),
                               as_input(prefix_v), opt, exec);
}

// The same over int8 K/V (attn::quantized; README, "Reduced precision"):
// prefix_k, prefix_v of one batch entry (1, Np, Hkv, D) with scales (1, Np,
// Hkv) or (1, Np, 1), the suffixes contiguous (attn::quantized) or paged
// (attn::quantized_paged_kv, opt.kv_lengths required); q and out each
// float, attn::float16 or attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void cascade_attention(strided_view<Q, 4> q, const quantized& prefix_k, const quantized& prefix_v,
                       const quantized& k, const quantized& v, strided_view<O, 4> out, view3<float> lse = {},
                       const softmax_options& opt = {}, const Exec& exec = {}) {
  std::vector<float> scratch;
  const view3<float> l = detail::cascade_lse(lse, q, scratch);
  detail::run_cascade<Backend>(detail::make_quantized_problem(detail::as_input(q), k, v, out, l, opt),
                               prefix_k.values, prefix_v.values, opt, exec,
                               detail::prefix_scales(prefix_k, prefix_v));
}
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class O>
  requires storage_element<std::remove_const_t<Q>> && storage_element<O>
void cascade_attention(strided_view<Q, 4> q, const quantized& prefix_k, const quantized& prefix_v,
                       const quantized_paged_kv& suffix, strided_view<O, 4> out, view3<float> lse = {},
                       const softmax_options& opt = {}, const Exec& exec = {}) {
  std::vector<float> scratch;
  const view3<float> l = detail::cascade_lse(lse, q, scratch);
  detail::run_cascade<Backend>(detail::make_quantized_paged_problem(detail::as_input(q), suffix, out, l, opt),
                               prefix_k.values, prefix_v.values, opt, exec,
                               detail::prefix_scales(prefix_k, prefix_v));
}

}  // namespace attn
