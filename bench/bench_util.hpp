// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "attn/backend/registry.hpp"
#include "attn/core/tensor.hpp"
#include "flops.hpp"

namespace attn::bench {

// Query/key/value/output storage for a contiguous BSHD problem.
struct problem {
  index_t batch, nq, nk, hq, hkv, dk, dv;
  std::vector<float> q, k, v, out, lse;

  problem(index_t b, index_t nq_, index_t nk_, index_t hq_, index_t hkv_, index_t dk_, index_t dv_)
      : batch(b), nq(nq_), nk(nk_), hq(hq_), hkv(hkv_), dk(dk_), dv(dv_),
        q(static_cast<std::size_t>(b * nq_ * hq_ * dk_)),
        k(static_cast<std::size_t>(b * nk_ * hkv_ * dk_)),
        v(static_cast<std::size_t>(b * nk_ * hkv_ * dv_)),
        out(static_cast<std::size_t>(b * nq_ * hq_ * dv_)),
        lse(static_cast<std::size_t>(b * nq_ * hq_)) {
    std::mt19937 gen(42);
    std::normal_distribution<float> normal;
    for (auto* t : {&q, &k, &v})
      for (float& x : *t) x = normal(gen);
  }
  view4<const float> qv() const { return bshd<const float>(q.data(), batch, nq, hq, dk); }
  view4<const float> kv() const { return bshd<const float>(k.data(), batch, nk, hkv, dk); }
  view4<const float> vv() const { return bshd<const float>(v.data(), batch, nk, hkv, dv); }
  view4<float> outv() { return bshd(out.data(), batch, nq, hq, dv); }
  view3<float> lsev() { return bsh(lse.data(), batch, nq, hq); }

  double flops(bool causal) const { return attention_flops(batch, nq, nk, hq, dk, dv, causal); }
  double kv_bytes() const { return static_cast<double>(k.size() + v.size()) * sizeof(float); }
};

inline void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
inline void set_bytes(benchmark::State& state, double bytes) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Calls f.template operator()<Backend>(name) for every SIMD backend of this
// build but scalar and SSE: the native one and, on an AVX-512 machine, its
// AVX2 code path too. Returns true, for a registration at static
// initialisation: `const bool registered = for_each_wide_backend(...)`.
template <class F>
bool for_each_wide_backend(F&& f) {
  [&]<class... B>(backend::list<B...>) {
    (
        [&] {
          if constexpr (B::width >= 8) f.template operator()<B>(std::string(B::name));
        }(),
        ...);
  }(backend::all{});
  return true;
}

}  // namespace attn::bench
