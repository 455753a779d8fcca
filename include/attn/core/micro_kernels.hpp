// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <utility>

#include "attn/core/tensor.hpp"

// The two register-blocked micro-kernels of the core, written once over the
// backend policy B:
//
//   scores:  S^T (keys x queries) = K (keys x Dk) . Q^T (Dk x queries)
//            K rows are read in place and broadcast element by element; Q^T
//            is packed once per work item, so keys never need packing.
//   values:  O (queries x Dv) += P (queries x keys) . V (keys x Dv)
//            P is read from the S^T tile (broadcast), V rows in place.
//
// Both keep an R x C block of accumulators in registers across the
// reduction; R and C come from the backend's blocking, tails are smaller
// instantiations of the same template.
namespace attn::detail {

template <class B, int Keys, int QueryVecs>
inline void score_block(const float* k, index_t k_stride, index_t dk,  // k: (Keys, dk)
                        const float* qt, index_t ldq,                   // qt: (dk, QueryVecs*W)
                        float* st, index_t lds) {                       // st: (Keys, QueryVecs*W)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[Keys][QueryVecs];
  for (int r = 0; r < Keys; ++r)
    for (int c = 0; c < QueryVecs; ++c) acc[r][c] = B::zero();
  const float* krow[Keys];
  for (int r = 0; r < Keys; ++r) krow[r] = k + r * k_stride;
  for (index_t d = 0; d < dk; ++d) {
    vec q[QueryVecs];
    for (int c = 0; c < QueryVecs; ++c) q[c] = B::load(qt + d * ldq + c * W);
    for (int r = 0; r < Keys; ++r) {
      const vec kb = B::broadcast(krow[r][d]);
      for (int c = 0; c < QueryVecs; ++c) acc[r][c] = B::fma(kb, q[c], acc[r][c]);
    }
  }
  for (int r = 0; r < Keys; ++r)
    for (int c = 0; c < QueryVecs; ++c) B::store(st + r * lds + c * W, acc[r][c]);
}

template <class B, int Rows, int ColVecs>
inline void value_block(const float* pt, index_t ldp,       // pt: (keys, Rows) of S^T
                        const float* v, index_t v_stride,   // v: (keys, ColVecs*W)
                        index_t keys,                       //
                        float* o, index_t ldo) {            // o: (Rows, ColVecs*W)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[Rows][ColVecs];
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < ColVecs; ++c) acc[r][c] = B::load(o + r * ldo + c * W);
  for (index_t j = 0; j < keys; ++j) {
    vec vv[ColVecs];
    for (int c = 0; c < ColVecs; ++c) vv[c] = B::load(v + j * v_stride + c * W);
    for (int r = 0; r < Rows; ++r) {
      const vec p = B::broadcast(pt[j * ldp + r]);
      for (int c = 0; c < ColVecs; ++c) acc[r][c] = B::fma(p, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < ColVecs; ++c) B::store(o + r * ldo + c * W, acc[r][c]);
}

// Decode-shaped tiles (a handful of query rows) waste most lanes of the
// broadcast kernel above, so they take dot products along Dk instead:
//   S^T[j][r] = sum over d of K[j][d] Q[r][d], vectors over d, reduced at the end.
template <class B, int Rows, int Keys>
inline void score_dot_block(const float* k, index_t k_stride, index_t dk,  // k: (Keys, dk)
                            const float* q, index_t ldr,                   // q: (Rows, dk)
                            float* st, index_t lds) {                      // st: (Keys, lds)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[Rows][Keys];
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < Keys; ++c) acc[r][c] = B::zero();
  for (index_t d = 0; d < dk; d += W) {
    vec kv[Keys];
    for (int c = 0; c < Keys; ++c) kv[c] = B::load(k + c * k_stride + d);
    for (int r = 0; r < Rows; ++r) {
      const vec qv = B::load(q + r * ldr + d);
      for (int c = 0; c < Keys; ++c) acc[r][c] = B::fma(kv[c], qv, acc[r][c]);
    }
  }
  if constexpr (requires(const vec* rows) { B::reduce_add_lanes(rows); }) {
    // Reduced W accumulators at a time, lane i = c * Rows + r: S^T rows of
    // the block come out contiguous.
    constexpr int count = Rows * Keys;
    constexpr int groups = (count + W - 1) / W;
    alignas(64) float sums[groups * W];
    for (int gi = 0; gi < groups; ++gi) {
      vec rows[W];
      for (int i = 0; i < W; ++i) {
        const int f = gi * static_cast<int>(W) + i;
        rows[i] = f < count ? acc[f % Rows][f / Rows] : B::zero();
      }
      B::store(sums + gi * W, B::reduce_add_lanes(rows));
    }
    for (int c = 0; c < Keys; ++c)
      for (int r = 0; r < Rows; ++r) st[c * lds + r] = sums[c * Rows + r];
  } else {
    for (int r = 0; r < Rows; ++r)
      for (int c = 0; c < Keys; ++c) st[c * lds + r] = B::reduce_add(acc[r][c]);
  }
}

// A blocked loop over [0, count): f(start, std::integral_constant<int, n>)
// for blocks of n = Max, then once for the tail, whose smaller n runs a
// smaller instantiation of the same kernel.
template <int Max, class F>
inline void for_each_block(index_t count, F&& f) {
  index_t start = 0;
  for (; start + Max <= count; start += Max) f(start, std::integral_constant<int, Max>{});
  const auto tail = static_cast<int>(count - start);
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((tail == I + 1 ? (f(start, std::integral_constant<int, I + 1>{}), 0) : 0), ...);
  }(std::make_integer_sequence<int, Max - 1>{});
}

// S^T tile: st (keys, ldq) = K tile (keys, dk) . Q^T (dk, ldq).
// ldq is a multiple of W (the packed query tile); a tile narrower than the
// blocking (decode: one GQA group) runs a narrower instantiation.
// keys_of(c, width) bounds the keys of the column block [c, c + width): a
// causal tile skips the keys after its block's last query (those rows of the
// block are left unwritten).
template <class B, class KeysOf>
inline void score_tile(const float* k, index_t k_stride, index_t dk, const float* qt, index_t ldq,
                       float* st, KeysOf keys_of) {
  constexpr index_t W = static_cast<index_t>(B::width);
  for_each_block<B::score_query_vecs>(ldq / W, [&](index_t cv, auto vecs) {
    const index_t c = cv * W;
    for_each_block<B::score_keys>(keys_of(c, decltype(vecs)::value * W), [&](index_t j, auto n) {
      score_block<B, decltype(n)::value, decltype(vecs)::value>(
          k + j * k_stride, k_stride, dk, qt + c, ldq, st + j * ldq + c, ldq);
    });
  });
}
template <class B>
inline void score_tile(const float* k, index_t k_stride, index_t keys, index_t dk,
                       const float* qt, index_t ldq, float* st) {
  score_tile<B>(k, k_stride, dk, qt, ldq, st, [keys](index_t, index_t) { return keys; });
}

// S^T tile of a decode-shaped tile: st (keys, lds) = K (keys, dk) . Q^T with
// Q packed by rows (rows, dk); dk is a multiple of W.
template <class B>
inline void score_dot_tile(const float* k, index_t k_stride, index_t keys, index_t dk,
                           const float* q, index_t rows, float* st, index_t lds) {
  for_each_block<B::dot_rows>(rows, [&](index_t r, auto rows_n) {
    for_each_block<B::dot_keys>(keys, [&](index_t j, auto n) {
      score_dot_block<B, decltype(rows_n)::value, decltype(n)::value>(
          k + j * k_stride, k_stride, dk, q + r * dk, dk, st + j * lds + r, lds);
    });
  });
}

// O (rows, ldo) += P (rows, keys) . V (keys, dv) with P read from S^T.
// dv is a multiple of W (the caller pads V rows otherwise).
template <class B>
inline void value_tile(const float* pt, index_t ldp, index_t rows, const float* v,
                       index_t v_stride, index_t keys, index_t dv, float* o, index_t ldo) {
  constexpr index_t W = static_cast<index_t>(B::width);
  for_each_block<B::pv_rows>(rows, [&](index_t r, auto rows_n) {
    for_each_block<B::pv_col_vecs>(dv / W, [&](index_t cv, auto vecs) {
      const index_t c = cv * W;
      value_block<B, decltype(rows_n)::value, decltype(vecs)::value>(
          pt + r, ldp, v + c, v_stride, keys, o + r * ldo + c, ldo);
    });
  });
}

}  // namespace attn::detail
