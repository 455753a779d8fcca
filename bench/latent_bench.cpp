// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Latent attention (DeepSeek MLA, absorbed) decode: B in {1, 8}, H in {16,
// 128}, Nk in {4K, 32K, 64K}, Dc = 512, Dr = 64, one query per sequence.
// Beside it in the same binary: the read roofline over the same cache bytes,
// the naive Eigen form (S = Q C^T, softmax, O = P C[:, :Dc]), the same
// problem as GQA attention over the up-projected K (192) and V (128) of every
// head (the bytes MLA saves), and fma_peak (bench/linear_bench.cpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "bench_util.hpp"

namespace latent_bench {

using attn::index_t;

constexpr index_t latent_dim = 512, rope_dim = 64, row = latent_dim + rope_dim;
constexpr index_t nope_dim = 128, value_dim = 128;  // the up-projected head (DeepSeek-V3)
const float model_scale = 1.0f / std::sqrt(float(nope_dim + rope_dim));

// A decode step's q (B, 1, H, 576), cache (B, Nk, 1, 576) and out (B, 1, H, 512).
struct latent_problem {
  index_t batch, heads, nk;
  std::vector<float> q, cache, out, lse;
  latent_problem(index_t b, index_t h, index_t n)
      : batch(b), heads(h), nk(n), q(std::size_t(b * h * row)), cache(std::size_t(b * n * row)),
        out(std::size_t(b * h * latent_dim)), lse(std::size_t(b * h)) {
    std::mt19937 gen(7);
    std::normal_distribution<float> normal;
    for (float& x : q) x = normal(gen);
    for (float& x : cache) x = normal(gen);
  }
  attn::view4<const float> qv() const { return attn::bshd<const float>(q.data(), batch, 1, heads, row); }
  attn::view4<const float> cachev() const { return attn::bshd<const float>(cache.data(), batch, nk, 1, row); }
  attn::view4<float> outv() { return attn::bshd(out.data(), batch, 1, heads, latent_dim); }
  double flops() const { return attn::bench::attention_flops(batch, 1, nk, heads, row, latent_dim, false); }
  double cache_bytes() const { return double(cache.size()) * sizeof(float); }
  void report(benchmark::State& state) const {
    attn::bench::set_flops(state, flops());
    attn::bench::set_bytes(state, cache_bytes());
  }
};

// Args: B, H, Nk, threads.
template <class Backend>
void latent_decode(benchmark::State& state) {
  latent_problem p(state.range(0), state.range(1), state.range(2));
  attn::latent_options opt;
  opt.scale = model_scale;
  opt.dc = latent_dim;
  const attn::openmp exec{static_cast<int>(state.range(3))};
  for (auto _ : state) {
    attn::latent_attention<Backend>(p.qv(), p.cachev(), p.outv(), attn::bsh(p.lse.data(), p.batch, 1, p.heads),
                                    opt, exec);
    benchmark::DoNotOptimize(p.out.data());
  }
  p.report(state);
}

// The same step over a paged cache of 64-token pages in shuffled order.
template <class Backend>
void latent_decode_paged(benchmark::State& state) {
  latent_problem p(state.range(0), state.range(1), state.range(2));
  constexpr index_t page = 64;
  const index_t per_seq = p.nk / page, pages = p.batch * per_seq;
  std::vector<std::int32_t> table(static_cast<std::size_t>(pages));
  for (index_t i = 0; i < pages; ++i) table[std::size_t(i)] = std::int32_t(i);
  std::shuffle(table.begin(), table.end(), std::mt19937(3));
  std::vector<std::int32_t> lengths(std::size_t(p.batch), std::int32_t(p.nk));
  const attn::paged_cache cache{attn::bshd<const float>(p.cache.data(), pages, page, 1, row),
                                {table.data(), {p.batch, per_seq}, {per_seq, 1}}};
  attn::latent_options opt;
  opt.scale = model_scale;
  opt.dc = latent_dim;
  opt.lengths = lengths;
  const attn::openmp exec{static_cast<int>(state.range(3))};
  for (auto _ : state) {
    attn::latent_attention<Backend>(p.qv(), cache, p.outv(), {}, opt, exec);
    benchmark::DoNotOptimize(p.out.data());
  }
  p.report(state);
}

// S = scale Q C^T, row softmax, O = P C[:, :Dc] per sequence, Eigen's GEMMs.
void latent_naive_eigen(benchmark::State& state) {
  latent_problem p(state.range(0), state.range(1), state.range(2));
  Eigen::setNbThreads(static_cast<int>(state.range(3)));
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  matrix scores(p.heads, p.nk);
  for (auto _ : state) {
    for (index_t b = 0; b < p.batch; ++b) {
      const Eigen::Map<const matrix> q(p.q.data() + b * p.heads * row, p.heads, row);
      const Eigen::Map<const matrix> c(p.cache.data() + b * p.nk * row, p.nk, row);
      Eigen::Map<matrix> o(p.out.data() + b * p.heads * latent_dim, p.heads, latent_dim);
      scores.noalias() = model_scale * q * c.transpose();
      for (index_t h = 0; h < p.heads; ++h) {
        auto s = scores.row(h).array();
        s = (s - s.maxCoeff()).exp();
        s /= s.sum();
      }
      o.noalias() = scores * c.leftCols(latent_dim);
    }
    benchmark::DoNotOptimize(p.out.data());
  }
  p.report(state);
}

// One pass over the same cache bytes, split across the threads.
void latent_read_roofline(benchmark::State& state) {
  latent_problem p(state.range(0), 1, state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const auto n = static_cast<Eigen::Index>(p.cache.size());
  for (auto _ : state) {
    float total = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : total)
    for (int c = 0; c < 64; ++c) {
      const Eigen::Index begin = n * c / 64, end = n * (c + 1) / 64;
      total += Eigen::Map<const Eigen::VectorXf>(p.cache.data() + begin, end - begin).sum();
    }
    benchmark::DoNotOptimize(total);
  }
  attn::bench::set_bytes(state, p.cache_bytes());
}

// The same step without absorption: GQA attention of H heads over the
// up-projected K (B, Nk, H, 192) and V (B, Nk, H, 128), which a
// non-absorbed MLA (or MHA of the same model) keeps. GB/s of its K/V bytes.
void latent_as_upprojected(benchmark::State& state) {
  const index_t b = state.range(0), h = state.range(1), n = state.range(2);
  attn::bench::problem p(b, 1, n, h, h, nope_dim + rope_dim, value_dim);
  attn::softmax_options opt;
  opt.scale = model_scale;
  const attn::openmp exec{static_cast<int>(state.range(3))};
  for (auto _ : state) {
    attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), opt, exec);
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(false));
  attn::bench::set_bytes(state, p.kv_bytes());
}

void decode_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "H", "Nk", "threads"});
  for (int batch : {1, 8})
    for (int heads : {16, 128})
      for (int nk : {4096, 32768, 65536})
        for (int threads : {1, 2})
          if (batch == 1 || threads == 2) b->Args({batch, heads, nk, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
void roofline_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "H", "Nk", "threads"});
  for (int batch : {1, 8})
    for (int nk : {4096, 32768, 65536})
      for (int threads : {1, 2})
        if (batch == 1 || threads == 2) b->Args({batch, 1, nk, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
// Up-projected K/V take H x 320 floats per token (5.4 GB at H = 128, Nk =
// 32K): B = 1, and H = 128 up to 32K keys.
void upprojected_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "H", "Nk", "threads"});
  for (int nk : {4096, 32768, 65536}) b->Args({1, 16, nk, 2});
  for (int nk : {4096, 32768}) b->Args({1, 128, nk, 2});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

const bool registered = attn::bench::for_each_wide_backend([]<class Backend>(const std::string& name) {
  benchmark::RegisterBenchmark(("latent_decode<" + name + ">").c_str(), latent_decode<Backend>)
      ->Apply(decode_args);
  benchmark::RegisterBenchmark(("latent_decode_paged<" + name + ">").c_str(), latent_decode_paged<Backend>)
      ->Apply(decode_args);
});
BENCHMARK(latent_naive_eigen)->Apply(decode_args);
BENCHMARK(latent_read_roofline)->Apply(roofline_args);
BENCHMARK(latent_as_upprojected)->Apply(upprojected_args);

}  // namespace latent_bench
