// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// MoBA at N = 32768, B = 1, H = 8, d = 128, blocks of 512, top-k 4, 2 threads:
// end to end (gate + attention), the gate alone, and dense causal attention
// of the same shape in the same binary (target: MoBA >= 5x faster). Each run
// takes seconds, so one iteration per repetition:
//   attn_bench --benchmark_filter=moba --benchmark_repetitions=3
// The speed-of-light ratio (DESIGN §4) reads off one run:
//   sol = (t_dense / t_moba) / (causal pairs / MoBA pairs).
#include <algorithm>

#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "bench_util.hpp"

namespace moba_bench {

using attn::index_t;
using attn::bench::problem;

constexpr index_t heads = 8;
constexpr index_t block = 512;
constexpr index_t topk = 4;
constexpr int threads = 2;

attn::moba_options moba_opt() {
  attn::moba_options opt;
  opt.block_k = block;
  opt.topk = topk;
  return opt;
}

// Pairs MoBA computes per head: each query's own block up to itself, plus
// topk - 1 past blocks (or all of them near the start); past blocks are
// always full, only the last block of the keys may be short.
double moba_pairs(index_t nq, index_t nk) {
  double pairs = 0;
  for (index_t i = 0; i < nq; ++i) {
    const index_t pos = i + nk - nq;
    if (pos < 0) continue;
    const index_t own = pos / block;
    pairs += static_cast<double>(pos - own * block + 1 + block * std::min(topk - 1, own));
  }
  return pairs;
}

// Gate dot products per head: every query against each past block's mean.
double gate_dots(index_t nq, index_t nk) {
  double dots = 0;
  for (index_t i = 0; i < nq; ++i) dots += static_cast<double>(std::max<index_t>(0, i + nk - nq) / block);
  return dots;
}

// Gate + attention. Args: N, d.
void moba_attention(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1);
  problem p(1, n, n, heads, heads, d, d);
  for (auto _ : state) {
    attn::moba_attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), moba_opt(), attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  const double pairs = moba_pairs(n, n);
  attn::bench::set_flops(state, pairs * 2.0 * static_cast<double>(2 * d * heads));
  state.counters["pairs"] = pairs;
}

// The gate alone (block means, scores, top-k). Args: N, d.
void moba_gate(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1);
  problem p(1, n, n, heads, heads, d, d);
  for (auto _ : state) {
    const attn::moba_selection sel = attn::moba_gate(p.qv(), p.kv(), moba_opt(), attn::openmp{threads});
    benchmark::DoNotOptimize(sel.blocks.data());
  }
  attn::bench::set_flops(state, gate_dots(n, n) * 2.0 * static_cast<double>(d * heads));
}

// Dense causal attention of the same shape. Args: N, d.
void moba_dense_causal(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1);
  problem p(1, n, n, heads, heads, d, d);
  attn::softmax_options opt;
  opt.causal = true;
  for (auto _ : state) {
    attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), opt, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(true));
  state.counters["pairs"] = attn::bench::allowed_pairs(n, n, true);
}

void moba_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d"})->Args({32768, 128})->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(moba_attention)->Apply(moba_args);
BENCHMARK(moba_gate)->Apply(moba_args);
BENCHMARK(moba_dense_causal)->Apply(moba_args);

}  // namespace moba_bench
