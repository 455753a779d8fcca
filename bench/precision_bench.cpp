// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Reduced-precision storage (issue #9): decode (Nq = 1, Hq = 32, Hkv = 8,
// d = 128) over a K/V cache stored as fp32, fp16 or bf16, in GB/s of the
// bytes stored and tokens/s, to set beside decode_read_roofline (fp32 K/V
// of the same shape, softmax_bench.cpp) in the same run; and prefill (N =
// 4096, 8 heads, d = 128) with q, k, v and out all in one storage type, in
// GFLOP/s beside prefill_attn's fp32 figure.
#include <cstdint>
#include <string>
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

// Args: Nkv, threads.
template <class Backend, class T>
void precision_decode(benchmark::State& state) {
  const index_t nkv = state.range(0), hq = 32, hkv = 8, d = 128;
  const int threads = static_cast<int>(state.range(1));
  attn::bench::problem p(1, 1, nkv, hq, hkv, d, d);
  const buffer<T> k = stored_as<T>(p.k), v = stored_as<T>(p.v);
  const auto kv = attn::bshd<const T>(k.data(), 1, nkv, hkv, d);
  const auto vv = attn::bshd<const T>(v.data(), 1, nkv, hkv, d);
  for (auto _ : state) {
    attn::attention<Backend>(p.qv(), kv, vv, p.outv(), p.lsev(), {}, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(false));
  attn::bench::set_bytes(state, static_cast<double>(k.size() + v.size()) * sizeof(T));
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: Nkv, threads. K and V quantized to int8 with a scale per row.
template <class Backend>
void precision_decode_int8(benchmark::State& state) {
  const index_t nkv = state.range(0), hq = 32, hkv = 8, d = 128;
  const int threads = static_cast<int>(state.range(1));
  attn::bench::problem p(1, 1, nkv, hq, hkv, d, d);
  buffer<std::int8_t> k(p.k.size()), v(p.v.size());
  buffer<float> k_scales(static_cast<std::size_t>(nkv * hkv)), v_scales(k_scales.size());
  auto quantized = [&](const attn::bench::float_buffer& x, buffer<std::int8_t>& values, buffer<float>& scales) {
    const auto view = attn::bshd(values.data(), 1, nkv, hkv, d);
    const attn::view3<float> scale_view{scales.data(), {1, nkv, hkv}, {nkv * hkv, hkv, 1}};
    attn::quantize(attn::bshd<const float>(x.data(), 1, nkv, hkv, d), view, scale_view);
    return attn::quantized{view, scale_view};
  };
  const attn::quantized kq = quantized(p.k, k, k_scales), vq = quantized(p.v, v, v_scales);
  for (auto _ : state) {
    attn::attention<Backend>(p.qv(), kq, vq, p.outv(), p.lsev(), {}, attn::openmp{threads});
    benchmark::DoNotOptimize(p.out.data());
  }
  attn::bench::set_flops(state, p.flops(false));
  attn::bench::set_bytes(state, static_cast<double>(k.size() + v.size()) +
                                    static_cast<double>(k_scales.size() + v_scales.size()) * sizeof(float));
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
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

void decode_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"Nkv", "threads"});
  for (int threads : attn::bench::thread_counts()) b->Args({32768, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
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
  benchmark::RegisterBenchmark(("precision_prefill<" + backend + "," + type + ">").c_str(),
                               precision_prefill<Backend, T>)
      ->Apply(prefill_args);
}

const bool registered = attn::bench::for_each_wide_backend([]<class Backend>(const std::string& name) {
  register_type<Backend, float>(name);
  register_type<Backend, attn::float16>(name);
  register_type<Backend, attn::bfloat16>(name);
  benchmark::RegisterBenchmark(("precision_decode<" + name + ",int8>").c_str(), precision_decode_int8<Backend>)
      ->Apply(decode_args);
});

}  // namespace precision_bench
