// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "attn/core/element.hpp"

namespace attn::backend {

// The reference backend: one float per "vector", std::exp2 for the
// exponential. Every other backend is tested against this one.
struct scalar {
  using vec = float;
  static constexpr std::size_t width = 1;
  static constexpr const char* name = "scalar";

  // Register blocking of the micro-kernels (see core/micro_kernels.hpp).
  static constexpr int score_keys = 4;        // keys per S^T block
  static constexpr int score_query_vecs = 2;  // query vectors per S^T block
  static constexpr int dot_rows = 4;         // query rows per decode dot block
  static constexpr int dot_keys = 2;         // keys per decode dot block
  static constexpr int pv_rows = 4;           // query rows per P.V block
  static constexpr int pv_col_vecs = 2;       // value vectors per P.V block
  static constexpr int pv_few_rows_col_vecs = 2;  // the same for at most dot_rows rows
  static constexpr int query_tile_rows = 32;  // rows (positions x heads) per work item
  static constexpr int kv_tile = 64;          // keys per KV tile

  static vec zero() { return 0.0f; }
  static vec broadcast(float x) { return x; }
  static vec load(const float* p) { return *p; }
  static vec load(const float16* p) { return to_float(*p); }
  static vec load(const bfloat16* p) { return to_float(*p); }
  static vec load(const std::int8_t* p) { return to_float(*p); }
  static void store(float* p, vec x) { *p = x; }
  static vec add(vec a, vec b) { return a + b; }
  static vec sub(vec a, vec b) { return a - b; }
  static vec mul(vec a, vec b) { return a * b; }
  static vec fma(vec a, vec b, vec c) { return std::fma(a, b, c); }
  static vec max(vec a, vec b) { return std::max(a, b); }
  static vec tanh(vec x) { return std::tanh(x); }
  // Flushes to 0 below -126.5 like the vector backends, so every backend
  // drops the same vanishing scores.
  static vec exp2(vec x) { return x < -126.5f ? 0.0f : std::exp2(x); }
  static float reduce_add(vec x) { return x; }
  static vec reduce_add_lanes(const vec* rows) { return rows[0]; }
  static void transpose(const float* src, std::ptrdiff_t, float* dst, std::ptrdiff_t) { *dst = *src; }
  static float reduce_max(vec x) { return x; }
};

}  // namespace attn::backend
