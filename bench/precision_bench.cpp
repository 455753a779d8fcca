// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Reduced-precision storage (issue #9): decode (Nq = 1, Hq = 32, Hkv = 8,
// d = 128) over a K/V cache stored as fp32, fp16, bf16 or int8 (a scale per
// token and kv head), in GB/s of the bytes stored and tokens/s, to set
// beside decode_read_roofline (fp32 K/V of the same shape, softmax_bench.cpp)
// in the same run; the same decode paired with fp32's in every iteration
// (precision_decode_paired, x_fp32); and prefill (N = 4096, 8 heads, d =
// 128) with q, k, v and out all in one storage type, in GFLOP/s beside
// prefill_attn's fp32 figure.
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <benchmark/benchmark.h>

#include "attn/attn.hpp"
#include "bench_util.hpp"

namespace precision_bench {

using attn::index_t;

template <class T>
using buffer = std::vector<T, attn::bench::cache_aligned<T>>;

// The fp32 problem's tensors rounded to T (same values for every type up to
// the rounding).
template <class T>
buffer<T> stored_as(const attn::bench::float_buffer& x) {
  buffer<T> y(x.size());
  for (std::size_t n = 0; n < x.size(); ++n) y[n] = attn::from_float<T>(x[n]);
  return y;
}

constexpr index_t decode_heads = 32, decode_kv_heads = 8, decode_dim = 128;

// A decode problem's K and V stored as T: the fp32 values rounded, or for
// int8 quantized with one fp32 scale per token and kv head.
template <class T>
struct stored_cache {
  index_t nkv;
  buffer<T> k, v;
  explicit stored_cache(const attn::bench::problem& p) : nkv(p.nk), k(stored_as<T>(p.k)), v(stored_as<T>(p.v)) {}
  attn::view4<const T> kv() const { return attn::bshd<const T>(k.data(), 1, nkv, decode_kv_heads, decode_dim); }
  attn::view4<const T> vv() const { return attn::bshd<const T>(v.data(), 1, nkv, decode_kv_heads, decode_dim); }
  double bytes() const { return static_cast<double>(k.size() + v.size()) * sizeof(T); }
};
template <>
struct stored_cache<std::int8_t> {
  index_t nkv;
  buffer<std::int8_t> k, v;
  buffer<float> k_scales, v_scales;
  attn::quantized k_view, v_view;
  explicit stored_cache(const attn::bench::problem& p)
      : nkv(p.nk), k(p.k.size()), v(p.v.size()), k_scales(std::size_t(nkv * decode_kv_heads)), v_scales(k_scales.size()),
        k_view(quantize(p.k, k, k_scales)), v_view(quantize(p.v, v, v_scales)) {}
  attn::quantized kv() const { return k_view; }
  attn::quantized vv() const { return v_view; }
  double bytes() const {
    return static_cast<double>(k.size() + v.size()) + static_cast<double>(k_scales.size() + v_scales.size()) * sizeof(float);
  }

 private:
  attn::quantized quantize(const attn::bench::float_buffer& x, buffer<std::int8_t>& values, buffer<float>& scales) const {
    const auto view = attn::bshd(values.data(), 1, nkv, decode_kv_heads, decode_dim);
    const attn::view3<float> scale_view{scales.data(), {1, nkv, decode_kv_heads}, {nkv * decode_kv_heads, decode_kv_heads, 1}};
    attn::quantize(attn::bshd<const float>(x.data(), 1, nkv, decode_kv_heads, decode_dim), view, scale_view);
    return {view, scale_view};
  }
};

template <class Backend, class T>
void decode(attn::bench::problem& p, const stored_cache<T>& cache, int threads) {
  attn::attention<Backend>(p.qv(), cache.kv(), cache.vv(), p.outv(), p.lsev(), {}, attn::openmp{threads});
  benchmark::DoNotOptimize(p.out.data());
}

// Args: Nkv, threads. K and V stored as T.
template <class Backend, class T>
void precision_decode(benchmark::State& state) {
  attn::bench::problem p(1, 1, state.range(0), decode_heads, decode_kv_heads, decode_dim, decode_dim);
  const stored_cache<T> cache(p);
  for (auto _ : state) decode<Backend>(p, cache, static_cast<int>(state.range(1)));
  attn::bench::set_flops(state, p.flops(false));
  attn::bench::set_bytes(state, cache.bytes());
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: Nkv, threads. The same decode over fp32 K/V and over K/V stored as
// T in turn in every iteration (bench_util.hpp, paired_ratio): x_fp32 is
// fp32's time over T's. The iteration time is T's.
template <class Backend, class T>
void precision_decode_paired(benchmark::State& state) {
  attn::bench::problem p(1, 1, state.range(0), decode_heads, decode_kv_heads, decode_dim, decode_dim);
  const stored_cache<float> fp32(p);
  const stored_cache<T> cache(p);
  const int threads = static_cast<int>(state.range(1));
  const double ratio = attn::bench::paired_ratio(
      state, [&] { decode<Backend>(p, fp32, threads); }, [&] { decode<Backend>(p, cache, threads); });
  attn::bench::set_bytes(state, cache.bytes());
  state.counters["x_fp32"] = benchmark::Counter(ratio);
}

// Args: N, threads. q, k, v and out stored as T.
template <class Backend, class T>
void precision_prefill(benchmark::State& state) {
  const index_t n = state.range(0), heads = 8, d = 128;
  const int threads = static_cast<int>(state.range(1));
  attn::bench::problem p(1, n, n, heads, heads, d, d);
  const buffer<T> q = stored_as<T>(p.q), k = stored_as<T>(p.k), v = stored_as<T>(p.v);
  buffer<T> out(p.out.size());
  for (auto _ : state) {
    attn::attention<Backend>(attn::bshd<const T>(q.data(), 1, n, heads, d), attn::bshd<const T>(k.data(), 1, n, heads, d),
                             attn::bshd<const T>(v.data(), 1, n, heads, d), attn::bshd(out.data(), 1, n, heads, d),
                             p.lsev(), {}, attn::openmp{threads});
    benchmark::DoNotOptimize(out.data());
  }
  attn::bench::set_flops(state, p.flops(false));
}

void decode_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"Nkv", "threads"});
  for (int threads : attn::bench::thread_counts()) b->Args({32768, threads});
  b->Unit(benchmark::kMillisecond);
}
void decode_args(benchmark::internal::Benchmark* b) { decode_sizes(b->UseRealTime()); }
void paired_args(benchmark::internal::Benchmark* b) { decode_sizes(b->UseManualTime()); }
void prefill_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "threads"});
  for (int threads : attn::bench::thread_counts()) b->Args({4096, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

template <class Backend, class T>
void register_type(const std::string& backend) {
  const std::string type = attn::element_name<T>();
  benchmark::RegisterBenchmark(("precision_decode<" + backend + "," + type + ">").c_str(),
                               precision_decode<Backend, T>)
      ->Apply(decode_args);
  if constexpr (!std::is_same_v<T, float>)
    benchmark::RegisterBenchmark(("precision_decode_paired<" + backend + "," + type + ">").c_str(),
                                 precision_decode_paired<Backend, T>)
        ->Apply(paired_args);
  if constexpr (!std::is_same_v<T, std::int8_t>)
    benchmark::RegisterBenchmark(("precision_prefill<" + backend + "," + type + ">").c_str(),
                                 precision_prefill<Backend, T>)
        ->Apply(prefill_args);
}

const bool registered = attn::bench::for_each_wide_backend([]<class Backend>(const std::string& name) {
  register_type<Backend, float>(name);
  register_type<Backend, attn::float16>(name);
  register_type<Backend, attn::bfloat16>(name);
  register_type<Backend, std::int8_t>(name);
});

}  // namespace precision_bench
