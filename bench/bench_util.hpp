// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "attn/backend/registry.hpp"
#include "attn/core/tensor.hpp"
#include "flops.hpp"

namespace attn::bench {

// Storage aligned to 64 bytes (a cache line, one AVX-512 vector), as a
// serving system's page-aligned KV cache is: std::vector's default 16 bytes
// makes every 512-bit load straddle two lines (decode in cache: -25%).
template <class T>
struct cache_aligned {
  using value_type = T;
  static constexpr std::align_val_t alignment{64};
  cache_aligned() = default;
  template <class U>
  cache_aligned(const cache_aligned<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), alignment)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, alignment); }
  template <class U>
  bool operator==(const cache_aligned<U>&) const noexcept {
    return true;
  }
};
using float_buffer = std::vector<float, cache_aligned<float>>;

// Query/key/value/output storage for a contiguous BSHD problem.
struct problem {
  index_t batch, nq, nk, hq, hkv, dk, dv;
  float_buffer q, k, v, out, lse;

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

// The body of a paired benchmark (UseManualTime): `reference` and
// `measured` run in turn in every iteration, each timed, and the iteration
// time is measured's. Returns the reference's summed time over measured's:
// a ratio of the two taken in the same moments of a shared machine, where
// two separate benchmarks' medians may come from a faster and a slower
// minute.
template <class Reference, class Measured>
double paired_ratio(benchmark::State& state, Reference&& reference, Measured&& measured) {
  using clock = std::chrono::steady_clock;
  double reference_seconds = 0, measured_seconds = 0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    reference();
    const auto t1 = clock::now();
    measured();
    const auto t2 = clock::now();
    const double seconds = std::chrono::duration<double>(t2 - t1).count();
    reference_seconds += std::chrono::duration<double>(t1 - t0).count();
    measured_seconds += seconds;
    state.SetIterationTime(seconds);
  }
  return measured_seconds > 0 ? reference_seconds / measured_seconds : 0.0;
}

// The thread counts a benchmark runs at: 1 and 2 (the 2-core machine of
// BENCHMARKS.md), or the comma-separated list in ATTN_BENCH_THREADS, e.g.
// ATTN_BENCH_THREADS=1,2,4,8,16 for a scaling run on a bigger machine.
inline std::vector<int> thread_counts() {
  std::vector<int> counts;
  if (const char* list = std::getenv("ATTN_BENCH_THREADS")) {
    for (const char* p = list; *p != '\0';) {
      char* end = nullptr;
      const long n = std::strtol(p, &end, 10);
      if (end == p) break;
      if (n > 0) counts.push_back(static_cast<int>(n));
      p = *end == ',' ? end + 1 : end;
    }
  }
  if (counts.empty()) counts = {1, 2};
  return counts;
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
