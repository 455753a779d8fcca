// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>

#include "attn/core/element.hpp"
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
// instantiations of the same template. K and V may be stored in 16 bits
// (T = float16, bfloat16): a vector load widens them (B::load), so decode
// reads a 16-bit cache in place; the broadcast kernel widens element by
// element, so the core packs 16-bit keys for it (workspace::pack_k).
namespace attn::detail {

template <class B, int Keys, int QueryVecs, class T>
inline void score_block(const T* k, index_t k_stride, index_t dk,      // k: (Keys, dk)
                        const float* qt, index_t ldq,                   // qt: (dk, QueryVecs*W)
                        float* st, index_t lds) {                       // st: (Keys, QueryVecs*W)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[Keys][QueryVecs];
  for (int r = 0; r < Keys; ++r)
    for (int c = 0; c < QueryVecs; ++c) acc[r][c] = B::zero();
  const T* krow[Keys];
  for (int r = 0; r < Keys; ++r) krow[r] = k + r * k_stride;
  for (index_t d = 0; d < dk; ++d) {
    vec q[QueryVecs];
    for (int c = 0; c < QueryVecs; ++c) q[c] = B::load(qt + d * ldq + c * W);
    for (int r = 0; r < Keys; ++r) {
      const vec kb = B::broadcast(to_float(krow[r][d]));
      for (int c = 0; c < QueryVecs; ++c) acc[r][c] = B::fma(kb, q[c], acc[r][c]);
    }
  }
  for (int r = 0; r < Keys; ++r)
    for (int c = 0; c < QueryVecs; ++c) B::store(st + r * lds + c * W, acc[r][c]);
}

// P element (row r, key j) at p[j * key_stride + r * row_stride]: S^T
// tiles (key_stride = ldp, row_stride = 1) and the segment kernel's
// per-query score rows (1, ldp) alike.
template <class B, int Rows, int ColVecs, class T>
inline void value_block(const float* p, index_t key_stride, index_t row_stride,  // p: (keys, Rows), strided
                        const T* v, index_t v_stride,                            // v: (keys, ColVecs*W)
                        index_t keys,                                            //
                        float* o, index_t ldo) {                                 // o: (Rows, ColVecs*W)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  // Returning here rather than running the loop zero times lets GCC 12 keep
  // the accumulators in registers; otherwise it copies them through the
  // stack on entry and exit (~50 moves per call at 4 x 4 on AVX-512), which
  // calls over a few keys feel (2-D neighborhood, dilation 2: 65 -> 55 ms).
  if (keys <= 0) return;
  vec acc[Rows][ColVecs];
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < ColVecs; ++c) acc[r][c] = B::load(o + r * ldo + c * W);
  // Two keys per trip: half the loop overhead, the same order of FMAs into
  // each accumulator (decode, AVX2: 6% fewer instructions; fp32 K/V, 1
  // thread, 32768 keys: 21.5 -> 17.3 ms from std::vector inputs, within
  // noise from Google Benchmark's aligned ones).
#pragma GCC unroll 2
  for (index_t j = 0; j < keys; ++j) {
    vec vv[ColVecs];
    for (int c = 0; c < ColVecs; ++c) vv[c] = B::load(v + j * v_stride + c * W);
    for (int r = 0; r < Rows; ++r) {
      const vec pb = B::broadcast(p[j * key_stride + r * row_stride]);
      for (int c = 0; c < ColVecs; ++c) acc[r][c] = B::fma(pb, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < ColVecs; ++c) B::store(o + r * ldo + c * W, acc[r][c]);
}

// Stores the Rows x Keys dot products of a decode block into S^T (keys,
// lds): st[c][r] = (the lanes of acc[r][c] summed) * key_scale[c] *
// row_scale[r].
template <class B, int Rows, int Keys>
inline void store_dot_sums(const typename B::vec (&acc)[Rows][Keys], float* st, index_t lds,
                           const float (&key_scale)[Keys], const float (&row_scale)[Rows]) {
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
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
      for (int r = 0; r < Rows; ++r) st[c * lds + r] = sums[c * Rows + r] * key_scale[c] * row_scale[r];
  } else {
    for (int r = 0; r < Rows; ++r)
      for (int c = 0; c < Keys; ++c) st[c * lds + r] = B::reduce_add(acc[r][c]) * key_scale[c] * row_scale[r];
  }
}

// Backends with integer pair products (xsimd on AVX2; backend/xsimd.hpp says
// why not AVX-512).
template <class B>
concept pair_products = requires(const std::int8_t* k, const std::int16_t* q, typename B::pairs x) {
  { B::zero_pairs() } -> std::same_as<typename B::pairs>;
  { B::load_pairs(k) } -> std::same_as<typename B::pairs>;
  { B::load_low_pairs(k) } -> std::same_as<typename B::pairs>;
  { B::load_pairs(q) } -> std::same_as<typename B::pairs>;
  { B::dot_pairs(x, x, x) } -> std::same_as<typename B::pairs>;
  { B::sums_to_float(x) } -> std::same_as<typename B::vec>;
};

// Query rows rounded to int16 for the integer score kernel: row r is
// values[r * stride, r * stride + stride) times scales[r], zero past Dk.
struct int16_queries {
  const std::int16_t* values;
  index_t stride;
  const float* scales;
};

// Rounds `rows` query rows q (rows, dk) to int16 (out: (rows, stride),
// stride >= dk, zero padded) with one scale per row, max |q| / 32767; the
// rounding (half a step, 2^-16 of the row's largest value) stays inside
// fp32's error contract. The integer kernel sums a row's products with an
// int8 key (|k| <= 128) in `lanes` int32 lanes, stride / lanes channels
// each, exactly while stride / lanes <= 512 (128 * 512 * 32767 < 2^31).
// False, and nothing usable, past that, or when a row is not finite or so
// small that its scale would lose precision (max |q| < 2^-100): the float
// kernel scores those tiles.
inline bool round_queries(const float* q, index_t rows, index_t dk, std::int16_t* out, index_t stride,
                          index_t lanes, float* scales) {
  constexpr float limit = 32767.0f;
  if (stride > 512 * lanes) return false;
  for (index_t r = 0; r < rows; ++r) {
    const float* row = q + r * dk;
    float max = 0.0f;
    for (index_t d = 0; d < dk; ++d) {
      if (!std::isfinite(row[d])) return false;
      max = std::max(max, std::abs(row[d]));
    }
    if (max > 0.0f && max < 0x1p-100f) return false;
    std::int16_t* values = out + r * stride;
    std::fill(values + dk, values + stride, std::int16_t{0});
    const float inv = max > 0.0f ? limit / max : 0.0f;  // a zero row: zeros, scale 0
    for (index_t d = 0; d < dk; ++d)
      values[d] = static_cast<std::int16_t>(std::clamp(std::nearbyint(row[d] * inv), -limit, limit));
    scales[r] = max / limit;
  }
  return true;
}

// Decode-shaped tiles (a handful of query rows) waste most lanes of the
// broadcast kernel above, so they take dot products along Dk instead:
//   S^T[j][r] = sum over d of K[j][d] Q[r][d], vectors over d, reduced at the end,
// times key_scale[j * scale_stride] for int8 K (attn::quantized; unused
// otherwise), applied as the sums are stored.
template <class B, int Rows, int Keys, class T>
inline void score_dot_block(const T* k, index_t k_stride, index_t dk,      // k: (Keys, dk)
                            const float* q, index_t ldr,                   // q: (Rows, dk)
                            float* st, index_t lds,                        // st: (Keys, lds)
                            const float* key_scale = nullptr, index_t scale_stride = 0) {
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
  float scale[Keys];  // the keys' int8 scales; 1 (folded away) for other storage
  for (int c = 0; c < Keys; ++c) {
    if constexpr (quantized_element<T>)
      scale[c] = key_scale[c * scale_stride];
    else
      scale[c] = 1.0f;
  }
  float unit[Rows];
  for (int r = 0; r < Rows; ++r) unit[r] = 1.0f;
  store_dot_sums<B>(acc, st, lds, scale, unit);
}

// int8 keys against queries rounded to int16 (round_queries), on backends
// with integer pair products (B::dot_pairs): the same S^T block as above,
// the sums exact in int32 lanes (2W channels a step; a last step of W
// channels reads only W int8 values, the queries' padding is 0), then
// scaled by the key's and the query row's scales.
template <class B, int Rows, int Keys>
inline void score_dot_block(const std::int8_t* k, index_t k_stride, index_t dk,  // k: (Keys, dk)
                            int16_queries q,                                     // (Rows, q.stride)
                            float* st, index_t lds,                              // st: (Keys, lds)
                            const float* key_scale, index_t scale_stride) {
  using pairs = typename B::pairs;
  constexpr index_t W = static_cast<index_t>(B::width);
  pairs acc[Rows][Keys];
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < Keys; ++c) acc[r][c] = B::zero_pairs();
  auto step = [&](index_t d, auto load_keys) {
    pairs kv[Keys];
    for (int c = 0; c < Keys; ++c) kv[c] = load_keys(k + c * k_stride + d);
    for (int r = 0; r < Rows; ++r) {
      const pairs qv = B::load_pairs(q.values + r * q.stride + d);
      for (int c = 0; c < Keys; ++c) acc[r][c] = B::dot_pairs(kv[c], qv, acc[r][c]);
    }
  };
  index_t d = 0;
  for (; d + 2 * W <= dk; d += 2 * W) step(d, [](const std::int8_t* p) { return B::load_pairs(p); });
  if (d < dk) step(d, [](const std::int8_t* p) { return B::load_low_pairs(p); });
  typename B::vec sums[Rows][Keys];
  for (int r = 0; r < Rows; ++r)
    for (int c = 0; c < Keys; ++c) sums[r][c] = B::sums_to_float(acc[r][c]);
  float scale[Keys], row_scale[Rows];
  for (int c = 0; c < Keys; ++c) scale[c] = key_scale[c * scale_stride];
  for (int r = 0; r < Rows; ++r) row_scale[r] = q.scales[r];
  store_dot_sums<B>(sums, st, lds, scale, row_scale);
}

// Calls f(std::integral_constant<int, n>) for a runtime n in [1, Max]
// (nothing for other n): a kernel instantiated per block size.
template <int Max, class F>
inline void with_count(int n, F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((n == I + 1 ? (f(std::integral_constant<int, I + 1>{}), 0) : 0), ...);
  }(std::make_integer_sequence<int, Max>{});
}

// A blocked loop over [0, count): f(start, std::integral_constant<int, n>)
// for blocks of n = Max, then once for the tail, whose smaller n runs a
// smaller instantiation of the same kernel.
template <int Max, class F>
inline void for_each_block(index_t count, F&& f) {
  index_t start = 0;
  for (; start + Max <= count; start += Max) f(start, std::integral_constant<int, Max>{});
  with_count<Max - 1>(static_cast<int>(count - start), [&](auto n) { f(start, n); });
}

// for_each_block with blocks of equal size (within one) instead of a short
// tail: count = 13, Max = 12 runs 7 and 6, keeping every block's
// accumulator chains independent enough to hide the FMA latency.
template <int Max, class F>
inline void for_each_even_block(index_t count, F&& f) {
  if (count <= 0) return;
  const index_t blocks = (count + Max - 1) / Max, base = count / blocks, longer = count % blocks;
  index_t start = 0;
  for (index_t b = 0; b < blocks; ++b) {
    const auto n = static_cast<int>(base + (b < longer ? 1 : 0));
    with_count<Max>(n, [&](auto size) { f(start, size); });
    start += n;
  }
}

// Offset micro-kernels (neighborhood attention, variant/neighborhood.hpp):
// a vector holds W queries that are consecutive along a grid row, and keys
// and values are packed transposed (per grid row, one padded row of floats
// per channel, `pitch` apart), so "the key at offset e" of every lane is W
// consecutive floats of a channel row. Only pairs inside the lanes' windows
// are computed; no lane waits on a union of windows.
//
// Q query vectors whose windows share a grid row (neighbours along the
// second-to-last dimension) share its key and value loads: the loads are
// unaligned by construction (one per offset), so sharing them is what
// keeps the FMA units fed.
//
//   scores: st[q][e][i] = sum over d of qt[q][d][i] kt[d][e + i], e < Offsets
template <class B, int Q, int Offsets>
inline void offset_score_block(const float* const* qt, index_t dk,  // qt[q]: (dk, W)
                               const float* kt, index_t pitch,      // kt: (dk, pitch) at offset 0, lane 0
                               float* const* st) {                  // st[q]: (Offsets, W)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[Q][Offsets];
  for (int q = 0; q < Q; ++q)
    for (int e = 0; e < Offsets; ++e) acc[q][e] = B::zero();
  for (index_t d = 0; d < dk; ++d) {
    vec qv[Q];
    for (int q = 0; q < Q; ++q) qv[q] = B::load(qt[q] + d * W);
    const float* k = kt + d * pitch;
    for (int e = 0; e < Offsets; ++e) {
      const vec kv = B::load(k + e);
      for (int q = 0; q < Q; ++q) acc[q][e] = B::fma(qv[q], kv, acc[q][e]);
    }
  }
  for (int q = 0; q < Q; ++q)
    for (int e = 0; e < Offsets; ++e) B::store(st[q] + e * W, acc[q][e]);
}

// A run of consecutive offsets in one grid row: its first float in channel
// 0's row (lane 0), its length, and per query vector that shares it the
// S^T row it starts at.
struct offset_run {
  static constexpr int max_queries = 4;
  index_t start, count;
  index_t row[max_queries];
};

//   values: ot[q][c][i] (+)= sum over runs and e of pt[q][run.row[q] + e][i] vt[c][run.start + e + i]
// for c < Channels; adds to ot when `accumulate`, else overwrites it.
template <class B, int Q, int Channels>
inline void offset_value_block(const float* const* pt, const offset_run* runs, index_t run_count,
                               const float* vt, index_t pitch,  // vt: (Channels, pitch)
                               float* const* ot, bool accumulate) {  // ot[q]: (Channels, W)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[Q][Channels];
  for (int q = 0; q < Q; ++q)
    for (int c = 0; c < Channels; ++c) acc[q][c] = accumulate ? B::load(ot[q] + c * W) : B::zero();
  for (index_t r = 0; r < run_count; ++r) {
    const float* v = vt + runs[r].start;
    const float* p[Q];
    for (int q = 0; q < Q; ++q) p[q] = pt[q] + runs[r].row[q] * W;
    for (index_t e = 0; e < runs[r].count; ++e) {
      vec pv[Q];
      for (int q = 0; q < Q; ++q) pv[q] = B::load(p[q] + e * W);
      for (int c = 0; c < Channels; ++c) {
        const vec vv = B::load(v + c * pitch + e);
        for (int q = 0; q < Q; ++q) acc[q][c] = B::fma(pv[q], vv, acc[q][c]);
      }
    }
  }
  for (int q = 0; q < Q; ++q)
    for (int c = 0; c < Channels; ++c) B::store(ot[q] + c * W, acc[q][c]);
}

// Segment micro-kernels (neighborhood attention, variant/neighborhood.hpp):
// T queries consecutive along a grid row share the keys of their windows'
// union in each window row, a run of NV * W keys that whole vectors hold
// (keys packed transposed as for the offset kernels, so one channel of the
// run is NV * W consecutive floats); the queries are broadcast, a GEMM-shaped
// block with no unaligned load per offset. G window rows at a time keep
// G * T * NV accumulators in flight.
//
//   scores: s[t][g * NV * W + j] = sum over d of q[t][d] kt[g][d * pitch + j], j < NV * W
template <class B, int G, int T, int NV>
inline void segment_score_block(const float* q, index_t dk,              // q: (T, dk)
                                const float* const* kt, index_t pitch,   // kt[g]: (dk, pitch)
                                float* s, index_t lds) {                 // s: (T, lds)
  using vec = typename B::vec;
  constexpr index_t W = static_cast<index_t>(B::width);
  vec acc[G][T][NV];
  for (int g = 0; g < G; ++g)
    for (int t = 0; t < T; ++t)
      for (int v = 0; v < NV; ++v) acc[g][t][v] = B::zero();
#pragma GCC unroll 2
  for (index_t d = 0; d < dk; ++d) {
    vec kv[G][NV];
    for (int g = 0; g < G; ++g)
      for (int v = 0; v < NV; ++v) kv[g][v] = B::load(kt[g] + d * pitch + v * W);
    for (int t = 0; t < T; ++t) {
      const vec qb = B::broadcast(q[t * dk + d]);
      for (int g = 0; g < G; ++g)
        for (int v = 0; v < NV; ++v) acc[g][t][v] = B::fma(qb, kv[g][v], acc[g][t][v]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int t = 0; t < T; ++t)
      for (int v = 0; v < NV; ++v) B::store(s + t * lds + (g * NV + v) * W, acc[g][t][v]);
}

//   values: value_block over one window row's scores, p[t * ldp + j]
//   (key_stride 1, row_stride ldp); the caller walks the rows.

// S^T tile: st (keys, ldq) = K tile (keys, dk) . Q^T (dk, ldq).
// ldq is a multiple of W (the packed query tile); a tile narrower than the
// blocking (decode: one GQA group) runs a narrower instantiation.
// keys_of(c, width) bounds the keys of the column block [c, c + width): a
// causal tile skips the keys after its block's last query (those rows of the
// block are left unwritten).
template <class B, class T, class KeysOf>
inline void score_tile(const T* k, index_t k_stride, index_t dk, const float* qt, index_t ldq,
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
template <class B, class T>
inline void score_tile(const T* k, index_t k_stride, index_t keys, index_t dk,
                       const float* qt, index_t ldq, float* st) {
  score_tile<B>(k, k_stride, dk, qt, ldq, st, [keys](index_t, index_t) { return keys; });
}

// S^T tile of a decode-shaped tile: st (keys, lds) = K (keys, dk) . Q^T with
// Q packed by rows (rows, dk); dk is a multiple of W.
template <class B, class T>
inline void score_dot_tile(const T* k, index_t k_stride, index_t keys, index_t dk,
                           const float* q, index_t rows, float* st, index_t lds,
                           const float* key_scale = nullptr, index_t scale_stride = 0) {
  for_each_block<B::dot_rows>(rows, [&](index_t r, auto rows_n) {
    for_each_block<B::dot_keys>(keys, [&](index_t j, auto n) {
      score_dot_block<B, decltype(rows_n)::value, decltype(n)::value>(
          k + j * k_stride, k_stride, dk, q + r * dk, dk, st + j * lds + r, lds,
          quantized_element<T> ? key_scale + j * scale_stride : nullptr, scale_stride);
    });
  });
}

// The same over queries rounded to int16 (B::dot_pairs backends, int8 K).
template <class B>
inline void score_dot_tile(const std::int8_t* k, index_t k_stride, index_t keys, index_t dk, int16_queries q,
                           index_t rows, float* st, index_t lds, const float* key_scale, index_t scale_stride) {
  for_each_block<B::dot_rows>(rows, [&](index_t r, auto rows_n) {
    const int16_queries block{q.values + r * q.stride, q.stride, q.scales + r};
    for_each_block<B::dot_keys>(keys, [&](index_t j, auto n) {
      score_dot_block<B, decltype(rows_n)::value, decltype(n)::value>(
          k + j * k_stride, k_stride, dk, block, st + j * lds + r, lds, key_scale + j * scale_stride, scale_stride);
    });
  });
}

// O (rows, ldo) += P (rows, keys) . V (keys, dv) with P read from S^T.
// dv is a multiple of W (the caller pads V rows otherwise).
// A decode-shaped tile (at most dot_rows rows) has registers to spare for
// wider blocks (pv_few_rows_col_vecs), split evenly over dv: fewer
// broadcasts of P per value vector.
template <class B, class T>
inline void value_tile(const float* pt, index_t ldp, index_t rows, const T* v,
                       index_t v_stride, index_t keys, index_t dv, float* o, index_t ldo) {
  constexpr index_t W = static_cast<index_t>(B::width);
  auto columns = [&](index_t r, auto rows_n) {
    return [&, r](index_t cv, auto vecs) {
      const index_t c = cv * W;
      value_block<B, decltype(rows_n)::value, decltype(vecs)::value>(
          pt + r, ldp, 1, v + c, v_stride, keys, o + r * ldo + c, ldo);
    };
  };
  if (rows <= B::dot_rows) {
    with_count<B::dot_rows>(static_cast<int>(rows), [&](auto rows_n) {
      for_each_even_block<B::pv_few_rows_col_vecs>(dv / W, columns(0, rows_n));
    });
    return;
  }
  for_each_block<B::pv_rows>(rows, [&](index_t r, auto rows_n) {
    for_each_block<B::pv_col_vecs>(dv / W, columns(r, rows_n));
  });
}

}  // namespace attn::detail
