// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Serving decode (issue #8): GQA decode, Nq = 1, Hq = 32, Hkv = 8, d = 128,
// fp32, of one sequence or a ragged batch of 8, over a contiguous KV cache
// with per-sequence lengths (opt.kv_lengths) and over a paged one (64-token
// pages in shuffled order). GB/s count the K/V bytes the call reads (each
// sequence's len_b rows), so the contiguous and paged rows compare directly
// with each other and with the read roofline over the same bytes, beside the
// naive Eigen attention a user would write per sequence and kv head.
// serving_decode_pool: the contiguous case run by attn::thread_pool instead
// of OpenMP. serving_decode_paired: the contiguous case and the read pass in
// turn in every iteration, for the bandwidth targets (read_fraction).
// serving_stream_probe: a read of the cache with FMAs per vector in memory
// order or in the decode walk's, for what the core overlaps.
// Thread counts: 1 and 2, or ATTN_BENCH_THREADS (bench_util.hpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "baselines/naive_eigen.hpp"
#include "bench_util.hpp"

namespace serving_bench {

using attn::index_t;

constexpr index_t q_heads = 32, kv_heads = 8, dim = 128, group = q_heads / kv_heads;
constexpr index_t row = kv_heads * dim;  // floats per token of K (and of V)
constexpr index_t page = 64;             // tokens per page of the paged cache

// Unit-variance uniform values from a xorshift64 seeded by `key`: cheap
// enough for a gigabyte of cache, and a function of the logical position, so
// that the contiguous and paged caches hold the same keys and values.
void fill(float* x, index_t n, std::uint64_t key) {
  std::uint64_t s = (key + 1) * 0x9E3779B97F4A7C15ull;
  const float half_width = std::sqrt(3.0f);
  for (index_t i = 0; i < n; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    x[i] = half_width * (2.0f * float(s >> 40) * 0x1p-24f - 1.0f);
  }
}

// Keys held by each sequence: len_b = Nkv (b + 1) / B rounded down to a
// multiple of 64, at least 1024 (or Nkv, if less). B = 1: Nkv; the ragged
// B = 8 spreads them from 1K to Nkv (Nkv = 32768: 4096, 8192, ..., 32768;
// 4096: 1024, 1024, 1536, ..., 4096).
std::vector<std::int32_t> sequence_lengths(index_t batch, index_t nkv) {
  std::vector<std::int32_t> lengths(static_cast<std::size_t>(batch));
  for (index_t b = 0; b < batch; ++b)
    lengths[std::size_t(b)] =
        std::int32_t(std::min(nkv, std::max<index_t>(1024, nkv * (b + 1) / batch / 64 * 64)));
  return lengths;
}

// A decode step's q (B, 1, Hq, d), out and lse, and the keys of each sequence.
struct serving_problem {
  index_t batch, nkv;  // nkv: the capacity, the longest sequence
  std::vector<std::int32_t> lengths;
  attn::bench::float_buffer q, out, lse;
  serving_problem(index_t b, index_t n)
      : batch(b),
        nkv(n),
        lengths(sequence_lengths(b, n)),
        q(std::size_t(b * q_heads * dim)),
        out(q.size()),
        lse(std::size_t(b * q_heads)) {
    fill(q.data(), index_t(q.size()), 0x5EED0000000ull);  // past every K/V row's key
  }
  attn::view4<const float> qv() const {
    return attn::bshd<const float>(q.data(), batch, 1, q_heads, dim);
  }
  attn::view4<float> outv() { return attn::bshd(out.data(), batch, 1, q_heads, dim); }
  attn::view3<float> lsev() { return attn::bsh(lse.data(), batch, 1, q_heads); }
  attn::softmax_options options() const {
    attn::softmax_options opt;
    opt.kv_lengths = lengths;
    return opt;
  }
  double kv_bytes() const {  // the K/V rows read: sum_b len_b x Hkv x (Dk + Dv) x 4
    return double(std::reduce(lengths.begin(), lengths.end(), index_t(0)) * 2 * row) *
           sizeof(float);
  }
  double flops() const {  // sum_b 4 len_b d Hq
    double f = 0;
    for (const std::int32_t len : lengths)
      f += attn::bench::attention_flops(1, 1, len, q_heads, dim, dim, false);
    return f;
  }
  void report(benchmark::State& state) const {
    attn::bench::set_flops(state, flops());
    attn::bench::set_bytes(state, kv_bytes());
  }
};

// K and V (B, Nkv, Hkv, d), sequence b's first len_b rows filled.
struct contiguous_cache {
  attn::bench::float_buffer k, v;
  explicit contiguous_cache(const serving_problem& p)
      : k(std::size_t(p.batch * p.nkv * row)), v(k.size()) {
    for (index_t b = 0; b < p.batch; ++b)
      for (index_t j = 0; j < p.lengths[std::size_t(b)]; ++j) {
        const index_t at = b * p.nkv + j;
        fill(k.data() + at * row, row, 2 * std::uint64_t(at));
        fill(v.data() + at * row, row, 2 * std::uint64_t(at) + 1);
      }
  }
};

// The same keys in pools of exactly the pages used, (P, 64, Hkv, d), handed
// out in shuffled order; block table (B, Nkv / 64), unused entries 0.
struct paged_pool {
  index_t pages = 0, max_pages;
  attn::bench::float_buffer k, v;
  std::vector<std::int32_t> table;
  explicit paged_pool(const serving_problem& p) : max_pages(p.nkv / page) {
    for (const std::int32_t len : p.lengths) pages += (len + page - 1) / page;
    k.resize(std::size_t(pages * page * row)), v.resize(k.size());
    table.assign(std::size_t(p.batch * max_pages), 0);
    std::vector<std::int32_t> order(static_cast<std::size_t>(pages));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(3));
    auto next = order.begin();
    for (index_t b = 0; b < p.batch; ++b)
      for (index_t j = 0; j < p.lengths[std::size_t(b)]; ++j) {
        if (j % page == 0) table[std::size_t(b * max_pages + j / page)] = *next++;
        const index_t at = b * p.nkv + j;  // the contiguous cache's row
        const index_t slot = table[std::size_t(b * max_pages + j / page)] * page + j % page;
        fill(k.data() + slot * row, row, 2 * std::uint64_t(at));
        fill(v.data() + slot * row, row, 2 * std::uint64_t(at) + 1);
      }
  }
  attn::paged_kv view(index_t batch) const {
    return {attn::bshd<const float>(k.data(), pages, page, kv_heads, dim),
            attn::bshd<const float>(v.data(), pages, page, kv_heads, dim),
            {table.data(), {batch, max_pages}, {max_pages, 1}}};
  }
};

// One decode step over the contiguous cache.
template <class Backend, class Executor>
void decode_contiguous(serving_problem& p, const contiguous_cache& c, const Executor& exec) {
  const auto k = attn::bshd<const float>(c.k.data(), p.batch, p.nkv, kv_heads, dim);
  const auto v = attn::bshd<const float>(c.v.data(), p.batch, p.nkv, kv_heads, dim);
  attn::attention<Backend>(p.qv(), k, v, p.outv(), p.lsev(), p.options(), exec);
  benchmark::DoNotOptimize(p.out.data());
}

// Args: B, Nkv, threads. Executor: OpenMP, or attn::thread_pool.
template <class Backend, class Executor = attn::openmp>
void serving_decode(benchmark::State& state) {
  serving_problem p(state.range(0), state.range(1));
  const contiguous_cache c(p);
  const Executor exec(static_cast<int>(state.range(2)));
  for (auto _ : state) decode_contiguous<Backend>(p, c, exec);
  p.report(state);
}

template <class Backend>
void serving_decode_paged(benchmark::State& state) {
  serving_problem p(state.range(0), state.range(1));
  const paged_pool pool(p);
  const attn::paged_kv cache = pool.view(p.batch);
  const attn::softmax_options opt = p.options();
  const attn::openmp exec{static_cast<int>(state.range(2))};
  for (auto _ : state) {
    attn::attention<Backend>(p.qv(), cache, p.outv(), p.lsev(), opt, exec);
    benchmark::DoNotOptimize(p.out.data());
  }
  p.report(state);
}

// Per sequence and kv head g: S = scale Q_g K_g^T over its len_b keys (Q_g:
// the 4 query heads of g, 4 x 128), row softmax, O_g = S V_g; Eigen's GEMMs.
void serving_naive_eigen(benchmark::State& state) {
  serving_problem p(state.range(0), state.range(1));
  const contiguous_cache c(p);
  Eigen::setNbThreads(static_cast<int>(state.range(2)));
  using attn::bench::strided_map, attn::bench::strided_out;
  const float scale = 1.0f / std::sqrt(float(dim));
  attn::bench::row_matrix scores;
  for (auto _ : state) {
    for (index_t b = 0; b < p.batch; ++b) {
      const index_t len = p.lengths[std::size_t(b)];
      scores.resize(group, len);
      for (index_t g = 0; g < kv_heads; ++g) {
        const index_t heads = (b * q_heads + g * group) * dim,
                      keys = (b * p.nkv * kv_heads + g) * dim;
        const strided_map qg(p.q.data() + heads, group, dim, Eigen::OuterStride<>(dim));
        const strided_map kg(c.k.data() + keys, len, dim, Eigen::OuterStride<>(row));
        const strided_map vg(c.v.data() + keys, len, dim, Eigen::OuterStride<>(row));
        strided_out og(p.out.data() + heads, group, dim, Eigen::OuterStride<>(dim));
        scores.noalias() = scale * qg * kg.transpose();
        for (index_t h = 0; h < group; ++h) {
          auto s = scores.row(h).array();
          s = (s - s.maxCoeff()).exp();
          s /= s.sum();
        }
        og.noalias() = scores * vg;
      }
    }
    benchmark::DoNotOptimize(p.out.data());
  }
  p.report(state);
}

// One pass over exactly the bytes decode reads (each sequence's first len_b
// rows of K and V), in ~64 pieces split across the threads.
struct read_pass {
  const contiguous_cache& c;
  int threads;
  std::vector<std::pair<index_t, index_t>> pieces;  // (offset, floats) in k and in v

  read_pass(const serving_problem& p, const contiguous_cache& cache, int threads_) : c(cache), threads(threads_) {
    const index_t total = std::reduce(p.lengths.begin(), p.lengths.end(), index_t(0)) * row;
    const index_t size = (total + 63) / 64;
    for (index_t b = 0; b < p.batch; ++b) {
      const index_t begin = b * p.nkv * row, end = begin + p.lengths[std::size_t(b)] * row;
      for (index_t at = begin; at < end; at += size)
        pieces.emplace_back(at, std::min(size, end - at));
    }
  }
  float operator()() const {
    const int n = static_cast<int>(pieces.size());
    float sum = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : sum)
    for (int i = 0; i < n; ++i) {
      const auto [at, floats] = pieces[std::size_t(i)];
      sum += Eigen::Map<const Eigen::VectorXf>(c.k.data() + at, floats).sum() +
             Eigen::Map<const Eigen::VectorXf>(c.v.data() + at, floats).sum();
    }
    return sum;
  }
};

void serving_read_roofline(benchmark::State& state) {
  serving_problem p(state.range(0), state.range(1));
  const contiguous_cache c(p);
  const read_pass read(p, c, static_cast<int>(state.range(2)));
  for (auto _ : state) benchmark::DoNotOptimize(read());
  attn::bench::set_bytes(state, p.kv_bytes());
}

// Decode and the read pass in turn in every iteration (bench_util.hpp,
// paired_ratio): read_fraction is the pass's time over decode's, i.e.
// decode's GB/s over the read roofline's. The iteration time is decode's.
template <class Backend>
void serving_decode_paired(benchmark::State& state) {
  serving_problem p(state.range(0), state.range(1));
  const contiguous_cache c(p);
  const attn::openmp exec{static_cast<int>(state.range(2))};
  const read_pass read(p, c, static_cast<int>(state.range(2)));
  const double ratio = attn::bench::paired_ratio(
      state, [&] { benchmark::DoNotOptimize(read()); }, [&] { decode_contiguous<Backend>(p, c, exec); });
  p.report(state);
  state.counters["read_fraction"] = benchmark::Counter(ratio);
}

// Streaming probes (README, "Why the read and the compute add up"): one
// pass over the B = 1 cache's K and V that adds Fmas independent FMAs per
// vector loaded (0: a plain read), the keys split evenly over the threads,
// in tiles of 32 keys (the core's decode tile at Hkv = 8), K then V, each
// tile in one of two orders: memory order (key by key, a key's heads
// together) or the joint decode walk's (joint_walk_keys keys of one head at
// a time). At Nkv = 128 (1 MiB, cache-resident) the time is the FMAs'; at
// 32768 it tells whether the core overlaps them with the read (the FMAs'
// time) or not (their sum) in that order.
template <class Backend, int Fmas>
struct stream_probe {
  using vec = typename Backend::vec;
  static constexpr index_t width = static_cast<index_t>(Backend::width);
  static constexpr index_t tile = 32, step = attn::detail::joint_walk_keys;
  static constexpr int chains = 12;  // independent accumulators: FMA latency x throughput
  vec acc[chains];

  // One head's row of one key: each vector loaded, summed, then FMAs on it.
  void stream_row(const float* x) {
    const vec factor = Backend::broadcast(0.5f);
    for (index_t d = 0; d < dim; d += width) {
      const vec v = Backend::load(x + d);
      acc[0] = Backend::add(acc[0], v);
#pragma GCC unroll 32
      for (int f = 0; f < Fmas; ++f) acc[f % chains] = Backend::fma(v, factor, acc[f % chains]);
    }
  }
  // Keys [k0, k1) of x (Nkv, Hkv, d), a whole number of tiles.
  void tile_pass(const float* x, index_t k0, index_t k1, bool walk_order) {
    for (index_t s = k0; s < k1; s += step)
      if (walk_order)
        for (index_t h = 0; h < kv_heads; ++h)
          for (index_t j = s; j < s + step; ++j) stream_row(x + j * row + h * dim);
      else
        for (index_t j = s; j < s + step; ++j)
          for (index_t h = 0; h < kv_heads; ++h) stream_row(x + j * row + h * dim);
  }
  float run(const float* k, const float* v, index_t k0, index_t k1, bool walk_order) {
    for (vec& a : acc) a = Backend::zero();
    for (index_t t = k0; t < k1; t += tile) {
      tile_pass(k, t, t + tile, walk_order);
      tile_pass(v, t, t + tile, walk_order);
    }
    vec sum = acc[0];
    for (int c = 1; c < chains; ++c) sum = Backend::add(sum, acc[c]);
    return Backend::reduce_add(sum);
  }
};

template <class Backend, int Fmas>
void serving_stream_probe(benchmark::State& state) {
  serving_problem p(1, state.range(0));
  const contiguous_cache c(p);
  const bool walk_order = state.range(1) != 0;
  const int threads = static_cast<int>(state.range(2));
  const index_t tiles = p.nkv / stream_probe<Backend, Fmas>::tile;
  for (auto _ : state) {
    float sum = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : sum)
    for (int t = 0; t < threads; ++t) {
      stream_probe<Backend, Fmas> probe;
      sum += probe.run(c.k.data(), c.v.data(), tiles * t / threads * probe.tile, tiles * (t + 1) / threads * probe.tile,
                       walk_order);
    }
    benchmark::DoNotOptimize(sum);
  }
  attn::bench::set_bytes(state, p.kv_bytes());
}

void probe_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"Nkv", "walk_order", "threads"});
  for (int threads : attn::bench::thread_counts())
    for (int nkv : {128, 32768})
      for (int walk_order : {0, 1}) b->Args({nkv, walk_order, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// B = 8 stops at Nkv = 32768: at 131072 its contiguous cache (capacity 8 x
// 131072 keys, K and V) would take 8.6 GB, more than CI-sized machines hold.
// B = 1, Nkv = 512 is a short context, where a call's fixed costs show.
void serving_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "Nkv", "threads"});
  for (int threads : attn::bench::thread_counts())
    for (int batch : {1, 8})
      for (int nkv : {512, 4096, 32768, 131072})
        if (batch == 1 || (nkv >= 4096 && nkv <= 32768)) b->Args({batch, nkv, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The two bandwidth targets: B = 1 and the ragged B = 8 at Nkv = 32768.
void paired_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "Nkv", "threads"});
  for (int threads : attn::bench::thread_counts())
    for (int batch : {1, 8}) b->Args({batch, 32768, threads});
  b->Unit(benchmark::kMillisecond)->UseManualTime();
}

const bool registered =
    attn::bench::for_each_wide_backend([]<class Backend>(const std::string& name) {
      benchmark::RegisterBenchmark(("serving_decode<" + name + ">").c_str(),
                                   serving_decode<Backend>)
          ->Apply(serving_args);
      benchmark::RegisterBenchmark(("serving_decode_paged<" + name + ">").c_str(),
                                   serving_decode_paged<Backend>)
          ->Apply(serving_args);
      benchmark::RegisterBenchmark(("serving_decode_paired<" + name + ">").c_str(),
                                   serving_decode_paired<Backend>)
          ->Apply(paired_args);
      [&]<int... Fmas>(std::integer_sequence<int, Fmas...>) {
        (benchmark::RegisterBenchmark(("serving_stream_probe<" + name + ",fmas:" + std::to_string(Fmas) + ">").c_str(),
                                      serving_stream_probe<Backend, Fmas>)
             ->Apply(probe_args),
         ...);
      }(std::integer_sequence<int, 0, 12, 24>{});
      benchmark::RegisterBenchmark(("serving_decode_pool<" + name + ">").c_str(),
                                   serving_decode<Backend, attn::thread_pool>)
          ->Apply(serving_args);
    });
BENCHMARK(serving_naive_eigen)->Apply(serving_args);
BENCHMARK(serving_read_roofline)->Apply(serving_args);

}  // namespace serving_bench
