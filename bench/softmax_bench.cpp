// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Dense softmax attention: prefill and decode, beside the naive Eigen
// attention and an Eigen GEMM of the same FLOP count (the roofline), so that
// every ratio reads off one run.
#include <array>
#include <cmath>
#include <string>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "baselines/naive_eigen.hpp"
#include "bench_util.hpp"

namespace softmax_bench {

using attn::bench::problem;

constexpr attn::index_t prefill_heads = 8;
constexpr attn::index_t decode_q_heads = 32;
constexpr attn::index_t decode_kv_heads = 8;
constexpr attn::index_t decode_dim = 128;

// Args: N, d, causal, threads.
template <class Backend>
void prefill_attn(benchmark::State& state) {
  const auto n = state.range(0), d = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  problem p(1, n, n, prefill_heads, prefill_heads, d, d);
  attn::softmax_options opt;
  opt.causal = causal;
  for (auto _ : state) {
    attn::attention<Backend>(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), opt,
                             attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(causal));
}

void prefill_naive_eigen(benchmark::State& state) {
  const auto n = state.range(0), d = state.range(1);
  const bool causal = state.range(2) != 0;
  Eigen::setNbThreads(static_cast<int>(state.range(3)));
  problem p(1, n, n, prefill_heads, prefill_heads, d, d);
  attn::bench::row_matrix scores;
  attn::softmax_options opt;
  opt.causal = causal;
  for (auto _ : state) {
    attn::bench::naive_eigen_attention(p.qv(), p.kv(), p.vv(), p.outv(), opt, scores);
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(causal));
}

// A square Eigen GEMM doing as many FLOPs as the attention problem.
void prefill_eigen_gemm(benchmark::State& state) {
  const auto n = state.range(0), d = state.range(1);
  const bool causal = state.range(2) != 0;
  Eigen::setNbThreads(static_cast<int>(state.range(3)));
  const double flops = attn::bench::attention_flops(1, n, n, prefill_heads, d, d, causal);
  const auto m = static_cast<Eigen::Index>(std::lround(std::cbrt(flops / 2.0)));
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(m, m), b = Eigen::MatrixXf::Random(m, m);
  Eigen::MatrixXf c(m, m);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  attn::bench::set_flops(state, 2.0 * double(m) * double(m) * double(m));
}

void prefill_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d", "causal", "threads"});
  for (int threads : {1, 2})
    for (int n : {1024, 4096})
      for (int d : {64, 128})
        for (int causal : {0, 1}) b->Args({n, d, causal, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(prefill_naive_eigen)->Apply(prefill_args);
BENCHMARK(prefill_eigen_gemm)->Apply(prefill_args);

// Decode: Nq = 1, Hq = 32, Hkv = 8, d = 128. Args: Nkv, threads.
template <class Backend>
void decode_attn(benchmark::State& state) {
  const auto nkv = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  problem p(1, 1, nkv, decode_q_heads, decode_kv_heads, decode_dim, decode_dim);
  for (auto _ : state) {
    attn::attention<Backend>(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), {},
                             attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(false));
  attn::bench::set_bytes(state, p.kv_bytes());
}

void decode_naive_eigen(benchmark::State& state) {
  const auto nkv = state.range(0);
  Eigen::setNbThreads(static_cast<int>(state.range(1)));
  problem p(1, 1, nkv, decode_q_heads, decode_kv_heads, decode_dim, decode_dim);
  attn::bench::row_matrix scores;
  for (auto _ : state) {
    attn::bench::naive_eigen_attention(p.qv(), p.kv(), p.vv(), p.outv(), {}, scores);
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(false));
  attn::bench::set_bytes(state, p.kv_bytes());
}

// The read roofline of decode: one pass over the same K and V bytes, split
// across the threads, in the same binary as the kernels.
void decode_read_roofline(benchmark::State& state) {
  const auto nkv = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  problem p(1, 1, nkv, decode_q_heads, decode_kv_heads, decode_dim, decode_dim);
  const auto n = static_cast<Eigen::Index>(p.k.size());
  for (auto _ : state) {
    float total = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : total)
    for (int c = 0; c < 64; ++c) {
      const Eigen::Index begin = n * c / 64, end = n * (c + 1) / 64;
      total += Eigen::Map<const Eigen::VectorXf>(p.k.data() + begin, end - begin).sum() +
               Eigen::Map<const Eigen::VectorXf>(p.v.data() + begin, end - begin).sum();
    }
    benchmark::DoNotOptimize(total);
  }
  attn::bench::set_bytes(state, p.kv_bytes());
}

void decode_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"Nkv", "threads"});
  for (int threads : {1, 2})
    for (int nkv : {4096, 32768}) b->Args({nkv, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

const bool registered = attn::bench::for_each_wide_backend([]<class Backend>(const std::string& name) {
  benchmark::RegisterBenchmark(("prefill_attn<" + name + ">").c_str(), prefill_attn<Backend>)
      ->Apply(prefill_args);
  benchmark::RegisterBenchmark(("decode_attn<" + name + ">").c_str(), decode_attn<Backend>)
      ->Apply(decode_args);
});
BENCHMARK(decode_naive_eigen)->Apply(decode_args);
BENCHMARK(decode_read_roofline)->Apply(decode_args);

}  // namespace softmax_bench
