// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Masks and score modifiers at N = 16384, H = 8, 2 threads, each beside dense
// causal attention of the same shape in the same run, so the speed-of-light
// ratio (DESIGN §4) reads off one run:
//   sol = (t_causal / t_masked) / (causal pairs / masked pairs).
#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "bench_util.hpp"

namespace mask_bench {

using attn::index_t;
using attn::bench::problem;

constexpr index_t heads = 8;
constexpr int threads = 2;

template <class Options>
void run_masked(benchmark::State& state, problem& p, const Options& opt) {
  for (auto _ : state) {
    attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), opt, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, attn::bench::attention_flops(1, p.nq, p.nk, heads, p.dk, p.dv, opt));
  state.counters["pairs"] = attn::bench::allowed_pairs(p.nq, p.nk, opt);
}

// Sliding window {W - 1, 0}; W = 0 is dense causal. Args: N, d, W.
void window_attn(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1), w = state.range(2);
  problem p(1, n, n, heads, heads, d, d);
  attn::softmax_options opt;
  opt.causal = true;
  if (w > 0) opt.window = std::array<index_t, 2>{w - 1, 0};
  run_masked(state, p, opt);
}
BENCHMARK(window_attn)
    ->ArgNames({"N", "d", "W"})
    ->ArgsProduct({{16384}, {64, 128}, {0, 128, 512, 1024, 2048}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// 8 documents of random lengths summing to N (seeded: the same every run).
std::vector<index_t> document_lengths(index_t n) {
  std::mt19937 gen(2026);
  std::uniform_int_distribution<index_t> cut(1, n - 1);
  std::vector<index_t> edges{0, n};
  while (edges.size() < 9) {
    const index_t c = cut(gen);
    if (std::find(edges.begin(), edges.end(), c) == edges.end()) edges.push_back(c);
  }
  std::sort(edges.begin(), edges.end());
  std::vector<index_t> lengths;
  for (std::size_t i = 1; i < edges.size(); ++i) lengths.push_back(edges[i] - edges[i - 1]);
  return lengths;
}

// Packed documents with causal inside each, in one call. Args: N, d.
void document_attn(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1);
  problem p(1, n, n, heads, heads, d, d);
  std::vector<std::int32_t> ids;
  std::int32_t id = 0;
  for (index_t len : document_lengths(n)) ids.insert(ids.end(), static_cast<std::size_t>(len), id++);
  attn::softmax_options opt;
  opt.causal = true;
  opt.document_ids = ids;
  run_masked(state, p, opt);
}

// The same documents as separate causal calls on views of the same buffers:
// the time document_attn should match (target: within 1.2x). Args: N, d.
void document_separate_calls(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1);
  problem p(1, n, n, heads, heads, d, d);
  const std::vector<index_t> lengths = document_lengths(n);
  attn::softmax_options opt;
  opt.causal = true;
  double pairs = 0;
  for (index_t len : lengths) pairs += attn::bench::allowed_pairs(len, len, true);
  for (auto _ : state) {
    index_t start = 0;
    for (index_t len : lengths) {
      auto rows = [&](auto view) {
        view.data += start * view.stride[1];
        view.extent[1] = len;
        return view;
      };
      attn::attention(rows(p.qv()), rows(p.kv()), rows(p.vv()), rows(p.outv()), {}, opt,
                      attn::openmp{threads});
      start += len;
    }
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, pairs * 2.0 * static_cast<double>(2 * d * heads));
  state.counters["pairs"] = pairs;
}
BENCHMARK(document_attn)->ArgNames({"N", "d"})->Args({16384, 64})->Args({16384, 128})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(document_separate_calls)->ArgNames({"N", "d"})->Args({16384, 64})->Args({16384, 128})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// Causal attention with score modifiers, against plain causal (mode 0) in
// the same run (target: softcap + ALiBi within 15%). Args: N, d, mode:
// 0 plain, 1 softcap, 2 ALiBi, 3 softcap + ALiBi.
void modifier_attn(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1), mode = state.range(2);
  problem p(1, n, n, heads, heads, d, d);
  attn::softmax_options opt;
  opt.causal = true;
  if (mode & 1) opt.softcap = 30.0f;
  if (mode & 2) opt.alibi = true;
  run_masked(state, p, opt);
}
BENCHMARK(modifier_attn)
    ->ArgNames({"N", "d", "mode"})
    ->ArgsProduct({{4096}, {128}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The same mask and modifier written by a user (a predicate with a tile
// classifier, a score function) against the built-ins in one run: a causal
// window of W = 2048 with ALiBi. Args: N, d, user (0 built-in, 1 user-written).
void user_mask_attn(benchmark::State& state) {
  const index_t n = state.range(0), d = state.range(1), w = 2048;
  problem p(1, n, n, heads, heads, d, d);
  attn::softmax_options opt;
  opt.causal = true;
  opt.window = std::array<index_t, 2>{w - 1, 0};
  opt.alibi = true;
  if (state.range(2) == 0) {
    run_masked(state, p, opt);
    return;
  }
  const std::vector<float> slopes = attn::alibi_slopes(heads);
  auto allowed = [=](index_t, index_t, index_t i, index_t j) { return j <= i && i - j < w; };
  auto classify = [=](const attn::query_block& qb, index_t j0, index_t j1) {
    if (j0 > qb.i_end - 1 || j1 - 1 <= qb.i_begin - w) return attn::tile_kind::empty;
    const bool full = j1 - 1 <= qb.i_begin && j0 > qb.i_end - 1 - w;
    return full ? attn::tile_kind::full : attn::tile_kind::partial;
  };
  auto alibi = [slope = slopes.data()](float s, index_t, index_t h, index_t i, index_t j) {
    return s - slope[h] * static_cast<float>(i - j);
  };
  for (auto _ : state) {
    attn::attention(p.qv(), p.kv(), p.vv(), p.outv(), p.lsev(), attn::mask_from(allowed, classify),
                    attn::score_mod_from(alibi), {}, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, attn::bench::attention_flops(1, n, n, heads, d, d, opt));
}
BENCHMARK(user_mask_attn)
    ->ArgNames({"N", "d", "user"})
    ->ArgsProduct({{16384}, {128}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace mask_bench
