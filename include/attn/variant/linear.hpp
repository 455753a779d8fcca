// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/micro_kernels.hpp"
#include "attn/core/scratch.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/mask/feature_maps.hpp"

// Linear attention (DESIGN §2), Lightning Attention-2's chunked form on the
// core's micro-kernels:
//
//   o_i = sum_j w_ij (phi(q_i) . phi(k_j)) v_j  [ / (sum_j w_ij phi(q_i) . phi(k_j) + eps) ]
//   w_ij = lambda_h^(i + off - j) for j <= i + off (causal), 1 otherwise.
//
// Per (batch, query head), keys are walked in chunks of C. With the state
//   S_c = sum_{j < c0} lambda^(c0 - 1 - j) phi(k_j) v_j^T      (Df, Dv)
// carried in fp32, a chunk [c0, c0 + n) gives its queries
//   O = diag(lambda^(p - c0 + 1)) phi(Q) S_c                    inter: value_tile
//     + (phi(Q) phi(K)^T  .* D) V,  D[p][j] = lambda^(p - j) [j <= p]   intra
// and moves the state on:  S_{c+1} = lambda^n S_c + (lambda^(n-1-a) phi(K))^T V.
// Every power is lambda^e with 0 <= e <= C, taken as exp2(e log2 lambda): no
// negative exponent is ever formed, so nothing overflows, and a product that
// underflows is one that is below fp32's range in the exact result too.
// All four products are the core's score_tile / value_tile.
namespace attn {

struct linear_options {
  bool causal = false;
  bool normalize = false;
  float eps = 1e-6f;                  // added to the normaliser
  float scale = 1.0f;                 // scores are scale * phi(q) . phi(k)
  std::span<const float> decay;       // (Hq) lambda_h in (0, 1], causal only; empty: none
  feature_kind feature = feature_kind::identity;  // the map of the overloads without one
  index_t chunk = 0;                  // keys per chunk; 0: chosen from the cache size
};

// The recurrent state of causal linear attention after N tokens, per
// (batch, query head):
//   S = sum_{j < N} lambda^(N - 1 - j) phi(k_j) v_j^T   (features, Dv), fp32
//   z = sum_{j < N} lambda^(N - 1 - j) phi(k_j)         (features), normalised only
// A prefill given a default-constructed state fills it; given a filled one it
// continues from it; linear_step adds one token.
class linear_state {
 public:
  linear_state() = default;
  linear_state(index_t batch, index_t heads, index_t features, index_t dv, bool normalized)
      : batch_(batch), heads_(heads), features_(features), dv_(dv), normalized_(normalized),
        s_(static_cast<std::size_t>(batch * heads * features * dv)),
        z_(normalized ? static_cast<std::size_t>(batch * heads * features) : 0) {
    detail::require(batch >= 1 && heads >= 1 && features >= 1 && dv >= 1, "linear_state",
                    "batch, heads, features, Dv >= 1",
                    detail::dims({{"B", batch}, {"H", heads}, {"F", features}, {"Dv", dv}}));
  }

  bool empty() const { return batch_ == 0; }
  index_t batch() const { return batch_; }
  index_t heads() const { return heads_; }
  index_t features() const { return features_; }
  index_t dv() const { return dv_; }
  bool normalized() const { return normalized_; }
  index_t tokens() const { return tokens_; }  // tokens seen so far

  float* s(index_t b, index_t h) { return s_.data() + (b * heads_ + h) * features_ * dv_; }
  const float* s(index_t b, index_t h) const {
    return s_.data() + (b * heads_ + h) * features_ * dv_;
  }
  float* z(index_t b, index_t h) { return normalized_ ? z_.data() + (b * heads_ + h) * features_ : nullptr; }
  const float* z(index_t b, index_t h) const {
    return normalized_ ? z_.data() + (b * heads_ + h) * features_ : nullptr;
  }
  void clear() {
    std::fill(s_.begin(), s_.end(), 0.0f);
    std::fill(z_.begin(), z_.end(), 0.0f);
    tokens_ = 0;
  }
  void advance(index_t tokens) { tokens_ += tokens; }

 private:
  index_t batch_ = 0, heads_ = 0, features_ = 0, dv_ = 0;
  bool normalized_ = false;
  index_t tokens_ = 0;
  std::vector<float> s_, z_;
};

namespace detail {

// A validated linear problem.
struct linear_problem : attention_views {
  index_t features;      // Df = phi.features(Dk)
  linear_options opt;

  float decay(index_t h) const { return opt.decay.empty() ? 1.0f : opt.decay[static_cast<std::size_t>(h)]; }
};

inline void check_linear_options(const linear_options& opt, index_t hq) {
  require(std::isfinite(opt.scale), "scale", "a finite value", opt.scale);
  require(std::isfinite(opt.eps) && opt.eps >= 0, "eps", "a finite value >= 0", opt.eps);
  require(opt.chunk >= 0, "chunk", "a key count >= 0 (0: chosen from the cache size)", opt.chunk);
  if (opt.decay.empty()) return;
  require(static_cast<index_t>(opt.decay.size()) == hq, "decay",
          "one value per query head (Hq = " + std::to_string(hq) + ")", opt.decay.size());
  require(opt.causal, "decay", "causal attention (a decay weighs keys by their distance back)",
          "causal = false");
  for (std::size_t h = 0; h < opt.decay.size(); ++h)
    require(opt.decay[h] > 0.0f && opt.decay[h] <= 1.0f, "decay",
            "lambda_h in (0, 1] for every head", "decay[" + std::to_string(h) + "] = " +
                                                       std::to_string(opt.decay[h]));
}

inline linear_problem make_linear_problem(view4<const float> q, view4<const float> k,
                                          view4<const float> v, view4<float> out, index_t features,
                                          const linear_options& opt) {
  const attention_views views = checked_views(q, k, v, out);
  require(features >= 1, "feature map", "at least one feature per row", features);
  check_linear_options(opt, views.hq());
  return {views, features, opt};
}

// Keys per chunk: the largest power of two up to max_chunk whose tiles
// (packed phi(Q)^T, phi(K) twice, V, the output rows and the score tile; the
// states of the item's heads take the rest of the L2) fit the budget. The
// intra-chunk work per token grows with C while the state products do not,
// so C stops at max_chunk even when the cache would hold more: the
// linear_chunk sweep of bench/linear_bench.cpp (N = 16K, 2 threads) runs
// fastest at C = 32 for d = 64 and d = 128 (C = 64: 7% and 3% fewer
// tokens/s, C = 16: 6% fewer); d = 256 gets 16.
inline constexpr std::size_t linear_l2_budget = 128 * 1024;  // bytes: a quarter of Zen 3's L2
inline constexpr index_t linear_max_chunk = 32;
inline constexpr index_t linear_min_chunk = 8;

inline std::size_t linear_chunk_bytes(index_t chunk, index_t features, index_t dv) {
  const auto c = static_cast<std::size_t>(chunk), f = static_cast<std::size_t>(features),
             d = static_cast<std::size_t>(dv);
  return sizeof(float) * (f * c + 2 * c * f + 2 * c * d + c * c);
}

inline index_t linear_chunk_for(index_t features, index_t dv) {
  index_t c = linear_max_chunk;
  while (c > linear_min_chunk && linear_chunk_bytes(c, features, dv) > linear_l2_budget) c /= 2;
  return c;
}
inline index_t linear_chunk(const linear_problem& p) {
  return p.opt.chunk > 0 ? p.opt.chunk : linear_chunk_for(p.features, p.dv());
}

// lambda^e for e = 0..n as exp2(e log2 lambda): never a negative exponent.
inline void decay_powers(float lambda, index_t n, float* pw) {
  const float log2_lambda = std::log2(lambda);
  for (index_t e = 0; e <= n; ++e) pw[e] = std::exp2(static_cast<float>(e) * log2_lambda);
}

// How the (batch, query head) pairs are cut into work items. An item walks
// the chunks of a run of heads in lock step, so each chunk reads the rows of
// all its heads together: in BSHD a token's heads are one contiguous row,
// while one head's rows are short and a page apart (per-head items ran 1.3x
// slower at N = 16K, H = 8). Items stay at least as many as the threads.
struct linear_split {
  index_t heads;  // query heads per item
  index_t items;  // batch * ceil(Hq / heads)
  linear_split(const linear_problem& p, std::size_t threads) {
    static constexpr index_t max_heads = 4;  // their states stay in L2
    const index_t per_batch = std::max<index_t>(ceil_div(static_cast<index_t>(threads), p.batch()),
                                                ceil_div(p.hq(), max_heads));
    heads = ceil_div(p.hq(), std::min(per_batch, p.hq()));
    items = p.batch() * ceil_div(p.hq(), heads);
  }
};

// One work item of a linear problem: query heads [h0, h0 + heads) of batch b,
// with their states and the shared tiles carved from the thread's scratch
// (all O(heads x (Df + chunk) x Dv), none O(N)).
template <class B, class Phi>
class linear_item {
  static constexpr index_t W = static_cast<index_t>(B::width);

 public:
  linear_item(const linear_problem& p, const Phi& phi, index_t chunk, index_t b, index_t h0,
              index_t heads)
      : p_(p), phi_(phi), b_(b), h0_(h0), heads_(heads), chunk_(chunk), df_(p.features),
        dvp_(round_up(p.dv(), W)), ldq_(round_up(chunk, B::score_query_vecs * W)) {
    const index_t row = std::max(p.dk(), df_);
    per_head_ = padded((df_ + chunk_) * dvp_) + padded(df_) + padded(chunk_ + 1);
    scratch_carver carve(thread_scratch().floats(
        heads_ * per_head_ + padded((df_ + chunk_) * ldq_) + 2 * padded(chunk_ * df_) +
        padded(chunk_ * dvp_) + padded(ldq_) + 2 * padded(row)));
    heads_base_ = carve.take(heads_ * per_head_);
    qt_ = carve.take((df_ + chunk_) * ldq_);  // (Df, ldq) phi(Q)^T, then
    st_ = qt_ + df_ * ldq_;                   // (chunk, ldq) scores P^T
    kf_ = carve.take(chunk_ * df_);
    kd_ = carve.take(chunk_ * df_);
    ob_ = carve.take(chunk_ * dvp_);
    den_ = carve.take(ldq_);
    row_in_ = carve.take(row);
    row_out_ = carve.take(row);
    for (index_t j = 0; j < heads_; ++j) {
      std::fill(s(j), s(j) + df_ * dvp_, 0.0f);
      std::fill(z(j), z(j) + df_, 0.0f);
      decay_powers(p_.decay(h0_ + j), chunk_, pw(j));
    }
  }

  void load_state(const linear_state& state) {
    for (index_t j = 0; j < heads_; ++j) {
      const float* src = state.s(b_, h0_ + j);
      for (index_t f = 0; f < df_; ++f) std::copy(src + f * p_.dv(), src + (f + 1) * p_.dv(), s(j) + f * dvp_);
      if (const float* zs = state.z(b_, h0_ + j)) std::copy(zs, zs + df_, z(j));
    }
  }
  void store_state(linear_state& state) const {
    for (index_t j = 0; j < heads_; ++j) {
      float* dst = state.s(b_, h0_ + j);
      for (index_t f = 0; f < df_; ++f) std::copy(s(j) + f * dvp_, s(j) + f * dvp_ + p_.dv(), dst + f * p_.dv());
      if (float* zs = state.z(b_, h0_ + j)) std::copy(z(j), z(j) + df_, zs);
    }
  }

  // Causal: chunk by chunk, each head's queries read its state before the
  // state moves on.
  void run_causal() {
    const index_t nk = p_.nk(), off = nk - p_.nq();
    for (index_t k0 = 0; k0 < nk; k0 += chunk_) {
      const index_t n = std::min(chunk_, nk - k0);
      prefetch_chunk(k0 + chunk_, off);
      const index_t p0 = std::max(k0, off);  // first query position in the chunk
      for (index_t j = 0; j < heads_; ++j) {
        pack_keys(j, k0, n);
        if (p0 < k0 + n) {
          const index_t r0 = p0 - k0;
          pack_queries(j, p0 - off, k0 + n - off, r0);
          attend_chunk(j, r0, n);
          write_rows(j, r0, n, k0 - off);
        }
        update_state(j, n);
      }
    }
    // Queries before the first key (Nq > Nk) see nothing: out = 0.
    for (index_t j = 0; j < heads_; ++j)
      for (index_t i = 0; i < std::min(p_.nq(), -off); ++i) write_zero(j, i);
  }

  // Non-causal: the state of every key, then every query reads it.
  void run_full() {
    const index_t nk = p_.nk(), nq = p_.nq();
    for (index_t k0 = 0; k0 < nk; k0 += chunk_) {
      const index_t n = std::min(chunk_, nk - k0);
      prefetch_chunk(k0 + chunk_, nk);
      for (index_t j = 0; j < heads_; ++j) {
        pack_keys(j, k0, n);
        update_state(j, n);
      }
    }
    for (index_t i0 = 0; i0 < nq; i0 += chunk_) {
      const index_t n = std::min(chunk_, nq - i0);
      for (index_t j = 0; j < heads_; ++j) {
        pack_queries(j, i0, i0 + n, 0);
        read_state(j, n);
        write_rows(j, 0, n, i0);
      }
    }
  }

 private:
  static index_t padded(index_t n) { return static_cast<index_t>(scratch_carver::round_up(n)); }

  // Per head j: the state S (Df, Dvp) with the chunk's V rows (chunk, Dvp)
  // right below it, so one value_tile over Df + n "keys" adds the state's
  // and the chunk's parts: [phi(Q)^T; P^T]^T [S; V]; then z (Df) and the
  // decay's powers lambda^0..lambda^chunk.
  float* s(index_t j) const { return heads_base_ + j * per_head_; }
  float* vb(index_t j) const { return s(j) + df_ * dvp_; }
  float* z(index_t j) const { return s(j) + padded((df_ + chunk_) * dvp_); }
  float* pw(index_t j) const { return z(j) + padded(df_); }
  index_t kv_head(index_t j) const { return (h0_ + j) / p_.group(); }
  bool decays(index_t j) const { return p_.decay(h0_ + j) != 1.0f; }

  // One input row, through a contiguous copy when its inner stride is not 1.
  const float* contiguous(const float* x, index_t stride, index_t d) const {
    if (stride == 1) return x;
    for (index_t e = 0; e < d; ++e) row_in_[e] = x[e * stride];
    return row_in_;
  }

  // Asks for the next chunk's K, V and Q rows of the item's heads while this
  // chunk computes; each row is used once. Queries before `off` do not exist.
  void prefetch_chunk(index_t k0, index_t off) const {
    const index_t n = std::min(chunk_, p_.nk() - k0);
    if (n <= 0) return;
    const index_t i0 = std::max<index_t>(k0 - off, 0), i1 = k0 + n - off;
    for (index_t j = 0; j < heads_; ++j) {
      if (j == 0 || kv_head(j) != kv_head(j - 1)) {
        if (p_.k.stride[3] == 1) prefetch_rows(p_.k.row(b_, k0, kv_head(j)), p_.k.stride[1], n, p_.dk());
        if (p_.v.stride[3] == 1) prefetch_rows(p_.v.row(b_, k0, kv_head(j)), p_.v.stride[1], n, p_.dv());
      }
      if (p_.q.stride[3] == 1 && i0 < i1)
        prefetch_rows(p_.q.row(b_, i0, h0_ + j), p_.q.stride[1], i1 - i0, p_.dk());
    }
  }

  // kf: phi(k_j) rows (n, Df); vb(j): v rows padded with zeros (n, Dvp).
  // Heads of one kv head reuse kf and copy the V rows of the previous head.
  void pack_keys(index_t j, index_t k0, index_t n) {
    const index_t dk = p_.dk(), dv = p_.dv(), kvh = kv_head(j);
    if (j > 0 && kv_head(j - 1) == kvh) {
      std::copy(vb(j - 1), vb(j - 1) + n * dvp_, vb(j));
      return;
    }
    for (index_t a = 0; a < n; ++a) {
      const float* k = p_.k.row(b_, k0 + a, kvh);
      phi_.template apply<B>(contiguous(k, p_.k.stride[3], dk), dk, kf_ + a * df_);
      const float* v = p_.v.row(b_, k0 + a, kvh);
      float* vrow = vb(j) + a * dvp_;
      if (p_.v.stride[3] == 1)
        std::copy(v, v + dv, vrow);
      else
        for (index_t e = 0; e < dv; ++e) vrow[e] = v[e * p_.v.stride[3]];
      std::fill(vrow + dv, vrow + dvp_, 0.0f);
    }
    finite_ = tile_is_finite<B>(vb(j), dvp_, n, dvp_);
  }

  // qt: scale * phi(q_i)^T of head j for queries [i0, i1) in columns
  // [c0, c0 + i1 - i0), zero elsewhere (Df, ldq).
  void pack_queries(index_t j, index_t i0, index_t i1, index_t c0) {
    const index_t dk = p_.dk(), c1 = c0 + i1 - i0;
    for (index_t f = 0; f < df_; ++f) {
      std::fill(qt_ + f * ldq_, qt_ + f * ldq_ + c0, 0.0f);
      std::fill(qt_ + f * ldq_ + c1, qt_ + (f + 1) * ldq_, 0.0f);
    }
    for (index_t i = i0; i < i1; ++i) {
      const float* q = p_.q.row(b_, i, h0_ + j);
      phi_.template apply<B>(contiguous(q, p_.q.stride[3], dk), dk, row_out_);
      const index_t c = c0 + i - i0;
      for (index_t f = 0; f < df_; ++f) qt_[f * ldq_ + c] = p_.opt.scale * row_out_[f];
    }
  }

  // ob rows [0, n) = phi(Q) S [/ den = phi(Q) . z]: the non-causal read-out.
  void read_state(index_t j, index_t n) {
    std::fill(ob_, ob_ + n * dvp_, 0.0f);
    value_tile<B>(qt_, ldq_, n, s(j), dvp_, df_, dvp_, ob_, dvp_);
    if (p_.opt.normalize) {
      std::fill(den_, den_ + ldq_, 0.0f);
      for (index_t f = 0; f < df_; ++f) axpy(z(j)[f], qt_ + f * ldq_, den_, ldq_);
    }
  }

  // ob rows [r0, n) of a causal chunk: the state's part, phi(Q) S weighted
  // lambda^(r + 1) (the state is one step behind the chunk's first key), plus
  // the chunk's own, (phi(Q) phi(K)^T .* D) V with D[r][a] = lambda^(r - a)
  // for a <= r; den likewise with z and the row sums of the scores.
  void attend_chunk(index_t j, index_t r0, index_t n) {
    const float* pwj = pw(j);
    // st (n keys, ldq queries); a block of queries takes no key after its last.
    score_tile<B>(kf_, df_, df_, qt_, ldq_, st_,
                  [n](index_t c, index_t width) { return std::min(n, c + width); });
    for (index_t a = 0; a < n; ++a) {
      float* sa = st_ + a * ldq_;
      std::fill(sa, sa + std::min(a, ldq_), 0.0f);  // keys after the query
      if (decays(j)) mul_rows(sa + a, pwj, n - a);
    }
    if (decays(j))  // the scores are taken: weigh phi(Q) for the state
      for (index_t f = 0; f < df_; ++f) mul_rows(qt_ + f * ldq_ + r0, pwj + r0 + 1, n - r0);
    if (p_.opt.normalize) {
      std::fill(den_, den_ + ldq_, 0.0f);
      for (index_t f = 0; f < df_; ++f) axpy(z(j)[f], qt_ + f * ldq_, den_, ldq_);
      for (index_t a = 0; a < n; ++a) add_row(st_ + a * ldq_, den_, ldq_);
    }
    std::fill(ob_ + r0 * dvp_, ob_ + n * dvp_, 0.0f);
    if (finite_) {
      // A block of rows stops at its last row's key (the rest of P is 0).
      for (index_t r = r0; r < n; r += B::pv_rows) {
        const index_t rows = std::min<index_t>(B::pv_rows, n - r);
        value_tile<B>(qt_ + r, ldq_, rows, s(j), dvp_, df_ + r + rows, dvp_, ob_ + r * dvp_, dvp_);
      }
    } else {
      // A NaN or inf value must reach only the rows at or after its key:
      // each row sums over its own keys (0 * NaN would reach the others).
      for (index_t r = r0; r < n; ++r)
        value_tile<B>(qt_ + r, ldq_, 1, s(j), dvp_, df_ + r + 1, dvp_, ob_ + r * dvp_, dvp_);
    }
  }

  // S = lambda^n S + (lambda^(n-1-a) phi(k_a))^T V,  z = lambda^n z + sum_a lambda^(n-1-a) phi(k_a).
  void update_state(index_t j, index_t n) {
    const float* kd = kf_;
    if (decays(j)) {
      const float* pwj = pw(j);
      scale_row<B>(s(j), df_ * dvp_, pwj[n]);
      scale_row<B>(z(j), df_, pwj[n]);
      for (index_t a = 0; a < n; ++a) {
        const float w = pwj[n - 1 - a];
        for (index_t f = 0; f < df_; ++f) kd_[a * df_ + f] = w * kf_[a * df_ + f];
      }
      kd = kd_;
    }
    value_tile<B>(kd, df_, df_, vb(j), dvp_, n, dvp_, s(j), dvp_);
    if (p_.opt.normalize)
      for (index_t a = 0; a < n; ++a) add_row(kd + a * df_, z(j), df_);
  }

  // out rows of head j: ob rows [r0, n) are queries [i0 + r0, i0 + n), normalised.
  void write_rows(index_t j, index_t r0, index_t n, index_t i0) const {
    const index_t dv = p_.dv();
    for (index_t r = r0; r < n; ++r) {
      float* o = p_.out.row(b_, i0 + r, h0_ + j);
      const float* src = ob_ + r * dvp_;
      const float inv = p_.opt.normalize ? 1.0f / (den_[r] + p_.opt.eps) : 1.0f;
      for (index_t e = 0; e < dv; ++e) o[e * p_.out.stride[3]] = src[e] * inv;
    }
  }
  void write_zero(index_t j, index_t i) const {
    float* o = p_.out.row(b_, i, h0_ + j);
    for (index_t e = 0; e < p_.dv(); ++e) o[e * p_.out.stride[3]] = 0.0f;
  }

  // y += a x, y += x, x *= y over n floats.
  static void axpy(float a, const float* x, float* y, index_t n) {
    const auto av = B::broadcast(a);
    index_t e = 0;
    for (; e + W <= n; e += W) B::store(y + e, B::fma(av, B::load(x + e), B::load(y + e)));
    for (; e < n; ++e) y[e] += a * x[e];
  }
  static void add_row(const float* x, float* y, index_t n) {
    index_t e = 0;
    for (; e + W <= n; e += W) B::store(y + e, B::add(B::load(x + e), B::load(y + e)));
    for (; e < n; ++e) y[e] += x[e];
  }
  static void mul_rows(float* x, const float* y, index_t n) {
    index_t e = 0;
    for (; e + W <= n; e += W) B::store(x + e, B::mul(B::load(x + e), B::load(y + e)));
    for (; e < n; ++e) x[e] *= y[e];
  }

  const linear_problem& p_;
  const Phi& phi_;
  index_t b_, h0_, heads_;
  index_t chunk_, df_, dvp_, ldq_;
  index_t per_head_ = 0;
  bool finite_ = true;  // the V rows packed last hold no NaN or inf
  float *heads_base_, *qt_, *kf_, *kd_, *ob_, *st_, *den_, *row_in_, *row_out_;
};

template <class B, class Phi, class Exec>
void run_linear(const linear_problem& p, const Phi& phi, const Exec& exec, linear_state* state) {
  if (p.batch() == 0) return;  // nothing to do, and linear_split divides by B
  const index_t chunk = linear_chunk(p);
  const linear_split split(p, exec.concurrency());
  const index_t per_batch = split.items / p.batch();
  exec.parallel_for(static_cast<std::size_t>(split.items), [&](std::size_t item) {
    const auto b = static_cast<index_t>(item) / per_batch;
    const index_t h0 = (static_cast<index_t>(item) % per_batch) * split.heads;
    linear_item<B, Phi> work(p, phi, chunk, b, h0, std::min(split.heads, p.hq() - h0));
    if (!p.opt.causal) return work.run_full();
    if (state) work.load_state(*state);
    work.run_causal();
    if (state) work.store_state(*state);
  });
  if (state) state->advance(p.nk());
}

// The one place where opt.feature becomes a feature-map type.
template <class F>
void with_feature(feature_kind kind, F&& f) {
  switch (kind) {
    case feature_kind::identity: return f(feature::identity{});
    case feature_kind::elu_plus_one: return f(feature::elu_plus_one{});
    case feature_kind::relu: return f(feature::relu{});
  }
  fail("feature: expected identity, elu_plus_one or relu, got an unknown feature_kind");
}

}  // namespace detail

// Linear attention (DESIGN §2) with the feature map phi:
//   q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv) -> out (B, Nq, Hq, Dv)
// Any strides, GQA, Dk != Dv. Causal runs chunked in O(N (C + Df) Dv) per
// head; non-causal forms the state of all keys first. `state` (causal only):
// empty, it receives the final state; filled, the call continues from it
// (its tokens come before this call's keys) and leaves the new one.
template <simd_backend Backend = default_backend, feature_map Phi, executor Exec = serial>
void linear_attention(view4<const float> q, view4<const float> k, view4<const float> v,
                      view4<float> out, const Phi& phi, const linear_options& opt = {},
                      const Exec& exec = {}, linear_state* state = nullptr) {
  const index_t features = q.extent[3] >= 1 ? phi.features(q.extent[3]) : 0;
  const detail::linear_problem p = detail::make_linear_problem(q, k, v, out, features, opt);
  if (state) {
    detail::require(opt.causal, "state", "causal attention (a state carries a causal prefix)",
                    "causal = false");
    if (state->empty()) {
      *state = linear_state(p.batch(), p.hq(), features, p.dv(), opt.normalize);
    } else {
      detail::require(p.nq() <= p.nk(), "q",
                      "Nq <= Nk when continuing a state (a query before this call's keys would "
                      "need an earlier state)",
                      "Nq = " + std::to_string(p.nq()) + ", Nk = " + std::to_string(p.nk()));
      detail::require(state->batch() == p.batch() && state->heads() == p.hq() &&
                          state->features() == features && state->dv() == p.dv() &&
                          state->normalized() == opt.normalize,
                      "state",
                      detail::dims({{"B", p.batch()}, {"Hq", p.hq()}, {"F", features}, {"Dv", p.dv()}}) +
                          (opt.normalize ? " normalised" : " not normalised"),
                      detail::dims({{"B", state->batch()}, {"H", state->heads()},
                                    {"F", state->features()}, {"Dv", state->dv()}}) +
                          (state->normalized() ? " normalised" : " not normalised"));
    }
  }
  detail::run_linear<Backend>(p, phi, exec, state);
}

// The same with the built-in map named by opt.feature.
template <simd_backend Backend = default_backend, executor Exec = serial>
void linear_attention(view4<const float> q, view4<const float> k, view4<const float> v,
                      view4<float> out, const linear_options& opt = {}, const Exec& exec = {},
                      linear_state* state = nullptr) {
  detail::with_feature(opt.feature, [&](const auto& phi) {
    linear_attention<Backend>(q, k, v, out, phi, opt, exec, state);
  });
}

// One decode step from the state (causal by nature; opt.causal is not read):
//   S = lambda S + phi(k_t) v_t^T,  z = lambda z + phi(k_t),
//   o_t = scale phi(q_t) S [ / (scale phi(q_t) . z + eps) ]
// q (B, Hq, Dk), k (B, Hkv, Dk), v (B, Hkv, Dv) -> out (B, Hq, Dv); the state
// must come from a prefill (or a step) with the same map, shapes and options.
template <simd_backend Backend = default_backend, feature_map Phi, executor Exec = serial>
void linear_step(linear_state& state, view3<const float> q, view3<const float> k,
                 view3<const float> v, view3<float> out, const Phi& phi,
                 const linear_options& opt = {}, const Exec& exec = {}) {
  using detail::require;
  using detail::dims;
  require(!state.empty(), "state", "a state from a prefill (or sized by its constructor)", "an empty state");
  const index_t b = state.batch(), hq = state.heads(), dk = q.extent[2];
  detail::require_view(q, "q", dims({{"B", b}, {"Hq", hq}, {"Dk", -1}}) + " with Dk >= 1",
                       q.extent[0] == b && q.extent[1] == hq && dk >= 1);
  const index_t hkv = k.extent[1];
  detail::require_view(k, "k", dims({{"B", b}, {"Hkv", -1}, {"Dk", dk}}) + " with Hkv dividing Hq",
                       k.extent[0] == b && hkv >= 1 && hq % hkv == 0 && k.extent[2] == dk);
  const index_t dv = state.dv();
  detail::require_view(v, "v", dims({{"B", b}, {"Hkv", hkv}, {"Dv", dv}}),
                       v.extent == std::array<index_t, 3>{b, hkv, dv});
  detail::require_view(out, "out", dims({{"B", b}, {"Hq", hq}, {"Dv", dv}}),
                       out.extent == std::array<index_t, 3>{b, hq, dv});
  detail::require_distinct(out, "out");
  detail::require_disjoint(out, "out", q, "q");
  detail::require_disjoint(out, "out", k, "k");
  detail::require_disjoint(out, "out", v, "v");
  const index_t features = phi.features(dk);
  require(features == state.features(), "state", "features = phi.features(Dk) = " + std::to_string(features),
          state.features());
  require(opt.normalize == state.normalized(), "state",
          opt.normalize ? "a normalised state (opt.normalize)" : "a state without normaliser",
          state.normalized() ? "a normalised state" : "one without normaliser");
  linear_options checked = opt;
  checked.causal = true;  // a step is causal: the decay is valid here
  detail::check_linear_options(checked, hq);

  using B = Backend;
  constexpr index_t W = static_cast<index_t>(B::width);
  const index_t group = hq / hkv;
  exec.parallel_for(static_cast<std::size_t>(b * hq), [&](std::size_t item) {
    const auto bi = static_cast<index_t>(item) / hq, h = static_cast<index_t>(item) % hq;
    const index_t kvh = h / group;
    detail::scratch_carver carve(detail::thread_scratch().floats(
        3 * detail::scratch_carver::round_up(static_cast<std::size_t>(std::max(dk, features)))));
    float* in = carve.take(static_cast<std::size_t>(std::max(dk, features)));
    float* fq = carve.take(static_cast<std::size_t>(features));
    float* fk = carve.take(static_cast<std::size_t>(features));
    auto load = [&](const float* x, index_t stride, float* y) {
      for (index_t e = 0; e < dk; ++e) in[e] = x[e * stride];
      phi.template apply<B>(in, dk, y);
    };
    load(q.row(bi, h), q.stride[2], fq);
    for (index_t f = 0; f < features; ++f) fq[f] *= opt.scale;
    load(k.row(bi, kvh), k.stride[2], fk);
    const float lambda = opt.decay.empty() ? 1.0f : opt.decay[static_cast<std::size_t>(h)];
    const float* vrow = v.row(bi, kvh);
    const index_t vs = v.stride[2];
    float* s = state.s(bi, h);
    float* o = out.row(bi, h);
    const index_t os = out.stride[2];
    // o accumulates in registers W columns at a time over the features.
    for (index_t e0 = 0; e0 < dv; e0 += W) {
      const index_t width = std::min(W, dv - e0);
      if (width == W && vs == 1 && os == 1) {
        const auto vv = B::load(vrow + e0);
        const auto lv = B::broadcast(lambda);
        auto acc = B::zero();
        for (index_t f = 0; f < features; ++f) {
          float* srow = s + f * dv + e0;
          const auto updated = B::fma(B::broadcast(fk[f]), vv, B::mul(lv, B::load(srow)));
          B::store(srow, updated);
          acc = B::fma(B::broadcast(fq[f]), updated, acc);
        }
        B::store(o + e0, acc);
      } else {
        for (index_t e = e0; e < e0 + width; ++e) {
          const float ve = vrow[e * vs];
          float acc = 0.0f;
          for (index_t f = 0; f < features; ++f) {
            float& se = s[f * dv + e];
            se = std::fma(fk[f], ve, lambda * se);
            acc = std::fma(fq[f], se, acc);
          }
          o[e * os] = acc;
        }
      }
    }
    if (float* z = state.z(bi, h)) {
      float den = 0.0f;
      for (index_t f = 0; f < features; ++f) {
        z[f] = std::fma(lambda, z[f], fk[f]);
        den = std::fma(fq[f], z[f], den);
      }
      const float inv = 1.0f / (den + opt.eps);
      for (index_t e = 0; e < dv; ++e) o[e * os] *= inv;
    }
  });
  state.advance(1);
}

// The same with the built-in map named by opt.feature.
template <simd_backend Backend = default_backend, executor Exec = serial>
void linear_step(linear_state& state, view3<const float> q, view3<const float> k,
                 view3<const float> v, view3<float> out, const linear_options& opt = {},
                 const Exec& exec = {}) {
  detail::with_feature(opt.feature, [&](const auto& phi) {
    linear_step<Backend>(state, q, k, v, out, phi, opt, exec);
  });
}

}  // namespace attn
