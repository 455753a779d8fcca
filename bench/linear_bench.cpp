// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Linear attention (#6): chunked causal prefill in tokens/s and GFLOP/s for
// N from 1K to 64K, beside dense causal softmax on the same shapes (where the
// crossover sits) and the machine's FMA peak measured in the same binary;
// the chunk-size sweep behind attn::detail::linear_chunk; decode steps.
#include <algorithm>
#include <cmath>
#include <vector>

#include <benchmark/benchmark.h>
#include <xsimd/xsimd.hpp>

#include "attn/attn.hpp"
#include "bench_util.hpp"

namespace linear_bench {

using attn::index_t;
using attn::bench::problem;

constexpr index_t heads = 8;

// RetNet's per-head decays, 1 - 2^(-5 - h).
std::vector<float> retnet_decay(index_t h) {
  std::vector<float> d(static_cast<std::size_t>(h));
  for (index_t i = 0; i < h; ++i) d[static_cast<std::size_t>(i)] = 1.0f - std::exp2(-5.0f - float(i));
  return d;
}

void set_tokens(benchmark::State& state, double tokens) {
  state.counters["tok/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
}

// Causal linear attention (identity map, unnormalised: Lightning Attention's
// form), B = 1, H = 8. Args: N, d, decay, threads, chunk (0: the library's).
void linear_causal(benchmark::State& state) {
  const auto n = state.range(0), d = state.range(1);
  const bool decay = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  problem p(1, n, n, heads, heads, d, d);
  const std::vector<float> lambda = retnet_decay(heads);
  attn::linear_options opt;
  opt.causal = true;
  opt.chunk = state.range(4);
  if (decay) opt.decay = lambda;
  for (auto _ : state) {
    attn::linear_attention(p.qv(), p.kv(), p.vv(), p.outv(), opt, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  const index_t chunk = opt.chunk > 0 ? opt.chunk : attn::detail::linear_chunk_for(d, d);
  attn::bench::set_flops(state, attn::bench::linear_flops(1, n, n, heads, d, d, true, chunk));
  set_tokens(state, double(n));
}

void linear_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d", "decay", "threads", "chunk"});
  for (int n : {256, 512, 1024, 2048, 4096, 16384, 32768, 65536})
    for (int d : {64, 128})
      for (int decay : {0, 1}) b->Args({n, d, decay, 2, 0});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(linear_causal)->Apply(linear_args);

// The chunk sweep: N = 16384, d = 64 and 128, 2 threads.
void chunk_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d", "decay", "threads", "chunk"});
  for (int d : {64, 128})
    for (int c : {16, 32, 64, 128, 256}) b->Args({16384, d, 0, 2, c});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(linear_causal)->Name("linear_chunk")->Apply(chunk_args);

// Dense causal softmax attention on the same shapes (64K once per
// repetition: it takes seconds).
void dense_causal(benchmark::State& state) {
  const auto n = state.range(0), d = state.range(1);
  const int threads = static_cast<int>(state.range(3));
  problem p(1, n, n, heads, heads, d, d);
  attn::softmax_options opt;
  opt.causal = true;
  for (auto _ : state) {
    attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), {}, opt, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(true));
  set_tokens(state, double(n));
}
void dense_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d", "decay", "threads", "chunk"});
  for (int n : {256, 512, 1024, 2048, 4096, 16384})
    for (int d : {64, 128}) b->Args({n, d, 0, 2, 0});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(dense_causal)->Apply(dense_args);
BENCHMARK(dense_causal)
    ->ArgNames({"N", "d", "decay", "threads", "chunk"})
    ->Args({65536, 64, 0, 2, 0})
    ->Args({65536, 128, 0, 2, 0})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The FMA peak of this build's widest vectors: 12 independent accumulator
// chains per thread (more than FMA latency x ports), on `threads` threads.
void fma_peak(benchmark::State& state) {
  using vec = xsimd::batch<float>;
  constexpr int chains = 12;
  constexpr long steps = 1 << 20;
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      vec acc[chains];
      for (int c = 0; c < chains; ++c) acc[c] = vec(float(c));
      const vec a(0.999999f), b(1e-7f);
      for (long s = 0; s < steps; ++s)
        for (int c = 0; c < chains; ++c) acc[c] = xsimd::fma(acc[c], a, b);
      vec total = acc[0];
      for (int c = 1; c < chains; ++c) total += acc[c];
      float out = xsimd::hadd(total);
      benchmark::DoNotOptimize(out);
    }
  }
  attn::bench::set_flops(state, 2.0 * double(vec::size) * chains * double(steps) * threads);
}
BENCHMARK(fma_peak)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Decode: one linear_step of B = 1, H = 8 from the state (tokens/s; the
// state is read and written once, H x d x d floats). Args: d, threads.
void linear_decode(benchmark::State& state) {
  const auto d = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  problem p(1, 1, 1, heads, heads, d, d);
  attn::linear_options opt;
  opt.causal = true;
  attn::linear_state s(1, heads, d, d, false);
  const auto q = attn::view3<const float>{p.q.data(), {1, heads, d}, {heads * d, d, 1}};
  const auto k = attn::view3<const float>{p.k.data(), {1, heads, d}, {heads * d, d, 1}};
  const auto v = attn::view3<const float>{p.v.data(), {1, heads, d}, {heads * d, d, 1}};
  const auto o = attn::view3<float>{p.out.data(), {1, heads, d}, {heads * d, d, 1}};
  for (auto _ : state) {
    attn::linear_step(s, q, k, v, o, opt, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  set_tokens(state, 1.0);
  attn::bench::set_bytes(state, 2.0 * double(heads * d * d) * sizeof(float));
}
BENCHMARK(linear_decode)->ArgNames({"d", "threads"})->Args({64, 1})->Args({128, 1})->Args({128, 2})
    ->UseRealTime();

}  // namespace linear_bench
