// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Neighborhood attention (issue #4 shapes), H = 8, d = 64, 2 threads, each
// beside dense attention over the same tokens in the same run:
//   speed of light = (t_dense / t_neighborhood) / (dense pairs / allowed pairs).
#include <array>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "bench_util.hpp"
#include "flops.hpp"

namespace neighborhood_bench {

using attn::index_t;
using attn::neighborhood_dim;

constexpr index_t heads = 8, dim = 64;
constexpr int threads = 2;

template <std::size_t R>
void run(benchmark::State& state, const std::array<index_t, R>& length,
         const std::array<neighborhood_dim, R>& dims) {
  constexpr std::size_t N = R + 3;
  index_t tokens = 1;
  for (index_t l : length) tokens *= l;
  attn::bench::problem p(1, tokens, tokens, heads, heads, dim, dim);
  auto grid = [&](float* data) {
    attn::strided_view<float, N> v{data, {}, {}};
    v.extent[0] = 1;
    for (std::size_t d = 0; d < R; ++d) v.extent[d + 1] = length[d];
    v.extent[N - 2] = heads;
    v.extent[N - 1] = dim;
    index_t pitch = 1;
    for (std::size_t d = N; d-- > 0;) {
      v.stride[d] = pitch;
      pitch *= v.extent[d];
    }
    return v;
  };
  const bool dense = state.range(0) != 0;
  attn::neighborhood_options<R> opt;
  opt.dims = dims;
  for (auto _ : state) {
    if (dense)
      attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), {}, {}, attn::openmp{threads});
    else
      attn::neighborhood_attention(attn::strided_view<const float, N>(grid(p.q.data())),
                                   attn::strided_view<const float, N>(grid(p.k.data())),
                                   attn::strided_view<const float, N>(grid(p.v.data())), grid(p.out.data()),
                                   {}, opt, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  const double pairs = dense ? static_cast<double>(tokens) * static_cast<double>(tokens)
                             : attn::bench::allowed_pairs<R>(length, dims);
  attn::bench::set_flops(state, pairs * 2.0 * 2 * dim * heads);
  state.counters["pairs"] = pairs;
}

// Args: dense (1) or neighborhood (0).
void na1d_32768_k2049(benchmark::State& s) { run<1>(s, {32768}, {neighborhood_dim{2049}}); }
void na2d_96_k7(benchmark::State& s) { run<2>(s, {96, 96}, {neighborhood_dim{7}, neighborhood_dim{7}}); }
void na2d_96_k13(benchmark::State& s) { run<2>(s, {96, 96}, {neighborhood_dim{13}, neighborhood_dim{13}}); }
void na2d_96_k31(benchmark::State& s) { run<2>(s, {96, 96}, {neighborhood_dim{31}, neighborhood_dim{31}}); }
void na2d_128_k13_d2(benchmark::State& s) {
  run<2>(s, {128, 128}, {neighborhood_dim{13, 2}, neighborhood_dim{13, 2}});
}
void na3d_16x32x32_k377(benchmark::State& s) {
  run<3>(s, {16, 32, 32}, {neighborhood_dim{3}, neighborhood_dim{7}, neighborhood_dim{7}});
}
#define ATTN_NA_BENCH(f) BENCHMARK(f)->ArgName("dense")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()
ATTN_NA_BENCH(na1d_32768_k2049);
ATTN_NA_BENCH(na2d_96_k7);
ATTN_NA_BENCH(na2d_96_k13);
ATTN_NA_BENCH(na2d_96_k31);
ATTN_NA_BENCH(na2d_128_k13_d2);
ATTN_NA_BENCH(na3d_16x32x32_k377);

}  // namespace neighborhood_bench
