// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Block-sparse attention (issue #5 shapes): B = 1, H = 8, d = 64, 2 threads,
// square blocks of 64 and 128, random per-head layouts (fixed seed) with 10,
// 25 and 50 % of the blocks selected, each beside dense attention of the same
// shape in the same run (density 100: attn::attention, no layout), so
//   speed of light = (t_dense / t_sparse) / (dense pairs / allowed pairs)
// reads off one run. GFLOP/s counts allowed pairs x 2 x (Dk + Dv) per head.
//
// N = 65536 runs one iteration per repetition (dense attention there takes
// about a minute on two cores); filter it out with
// --benchmark_filter='block_sparse.*/N:16384' for a quick run.
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "bench_util.hpp"

namespace block_sparse_bench {

using attn::index_t;

constexpr index_t heads = 8, dim = 64;
constexpr int threads = 2;

// A per-head layout (H, nbq, nbk) with each block selected with probability
// percent / 100 (std::mt19937, seed fixed per shape).
std::vector<std::uint8_t> random_layout(index_t nbq, index_t nbk, index_t percent) {
  std::mt19937 gen(static_cast<std::uint32_t>(2026 + nbq * 7 + percent));
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<std::uint8_t> layout(static_cast<std::size_t>(heads * nbq * nbk));
  for (std::uint8_t& x : layout) x = pick(gen) < percent ? 1 : 0;
  return layout;
}

// Allowed pairs over all heads: every selected block's rows x keys.
double allowed_pairs(const std::vector<std::uint8_t>& layout, index_t n, index_t block) {
  const index_t nb = (n + block - 1) / block;
  double pairs = 0;
  for (index_t h = 0; h < heads; ++h)
    for (index_t qk = 0; qk < nb; ++qk)
      for (index_t kb = 0; kb < nb; ++kb)
        if (layout[static_cast<std::size_t>((h * nb + qk) * nb + kb)])
          pairs += static_cast<double>(std::min(block, n - qk * block)) *
                   static_cast<double>(std::min(block, n - kb * block));
  return pairs;
}

// Args: N, block (bq = bk), percent of blocks selected (100: dense attention).
void block_sparse(benchmark::State& state) {
  const index_t n = state.range(0), block = state.range(1), percent = state.range(2);
  attn::bench::problem p(1, n, n, heads, heads, dim, dim);
  const index_t nb = (n + block - 1) / block;
  const std::vector<std::uint8_t> layout =
      percent < 100 ? random_layout(nb, nb, percent) : std::vector<std::uint8_t>{};
  const attn::block_layout blocks =
      attn::block_layout::dense({layout.data(), {heads, nb, nb}, {nb * nb, nb, 1}});
  attn::block_sparse_options opt;
  opt.block_q = opt.block_k = block;
  for (auto _ : state) {
    if (percent < 100)
      attn::block_sparse_attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), blocks, opt,
                                   attn::openmp{threads});
    else
      attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), {}, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  const double pairs = percent < 100 ? allowed_pairs(layout, n, block)
                                     : static_cast<double>(n) * static_cast<double>(n) * heads;
  attn::bench::set_flops(state, pairs * 2.0 * static_cast<double>(p.dk + p.dv));
  state.counters["pairs"] = pairs / heads;  // per head
}
BENCHMARK(block_sparse)
    ->ArgNames({"N", "block", "pct"})
    ->ArgsProduct({{16384}, {64, 128}, {10, 25, 50}})
    ->Args({16384, 64, 100})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(block_sparse)
    ->ArgNames({"N", "block", "pct"})
    ->ArgsProduct({{65536}, {64, 128}, {10, 25, 50}})
    ->Args({65536, 64, 100})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace block_sparse_bench
