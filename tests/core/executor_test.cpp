// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Executors: attn::thread_pool on its own (every index once, reuse,
// exceptions, nesting, concurrent callers), then every variant run on serial,
// OpenMP, the pool and a caller's std::thread loop behind
// attn::parallel_for_executor, whose results must agree: bit for bit between
// executors of the same concurrency(), since the work split depends only on
// it, and with serial too unless the split cuts the keys (flash-decoding
// changes the summation order).

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace executor_test {

using attn::index_t;
namespace ref = attn::ref;

static_assert(attn::executor<attn::thread_pool>, "attn::thread_pool must model attn::executor");

// ---------------------------------------------------------------------------
// attn::thread_pool on its own.

// How many times each index of [0, n) ran.
struct index_counts {
  std::vector<std::atomic<int>> runs;
  explicit index_counts(std::size_t n) : runs(n) {}
  void operator()(std::size_t i) { runs.at(i).fetch_add(1, std::memory_order_relaxed); }
  bool each_once() const {
    return std::all_of(runs.begin(), runs.end(), [](const auto& r) { return r.load() == 1; });
  }
};

TEST(ThreadPool, EveryIndexExactlyOnce) {
  for (std::size_t threads : {1, 2, 3, 4}) {
    const attn::thread_pool pool(threads);
    ASSERT_EQ(pool.concurrency(), threads);
    for (std::size_t n : {0, 1, 7, 1000}) {
      SCOPED_TRACE("threads=" + std::to_string(threads) + " n=" + std::to_string(n));
      index_counts counts(n);
      pool.parallel_for(n, counts);
      EXPECT_TRUE(counts.each_once());
    }
  }
}

TEST(ThreadPool, ZeroThreadsMeansHardwareConcurrency) {
  const attn::thread_pool pool(0);
  EXPECT_EQ(pool.concurrency(), std::max<std::size_t>(std::thread::hardware_concurrency(), 1));
  EXPECT_GE(attn::thread_pool{}.concurrency(), 1u);
}

TEST(ThreadPool, RepeatedCallsOnOnePool) {
  constexpr std::size_t calls = 100;
  const attn::thread_pool pool(3);
  for (std::size_t c = 0; c < calls; ++c) {
    const std::size_t n = 1 + c * 7 % 200;  // sizes below and above the thread count
    index_counts counts(n);
    pool.parallel_for(n, counts);
    ASSERT_TRUE(counts.each_once()) << "call " << c << ", n=" << n;
  }
}

TEST(ThreadPool, NoMoreThreadsThanConcurrency) {
  const attn::thread_pool pool(3);
  std::mutex m;
  std::set<std::thread::id> seen;
  pool.parallel_for(500, [&](std::size_t) {
    const std::lock_guard lock(m);
    seen.insert(std::this_thread::get_id());
  });
  EXPECT_GE(seen.size(), 1u);
  EXPECT_LE(seen.size(), pool.concurrency());
}

TEST(ThreadPool, ExceptionIsRethrownOnTheCaller) {
  constexpr std::size_t n = 1000, bad = 37;
  for (std::size_t threads : {1, 2, 4}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    const attn::thread_pool pool(threads);
    index_counts counts(n);
    EXPECT_THROW(pool.parallel_for(n,
                                   [&](std::size_t i) {
                                     counts(i);
                                     if (i == bad) throw std::runtime_error("index 37");
                                   }),
                 std::runtime_error);
    EXPECT_EQ(counts.runs[bad].load(), 1);
    for (const auto& r : counts.runs) ASSERT_LE(r.load(), 1) << "an index ran twice";
    // Every index throws: exactly one exception comes out, of the right type.
    try {
      pool.parallel_for(n, [](std::size_t i) { throw std::out_of_range(std::to_string(i)); });
      ADD_FAILURE() << "no exception";
    } catch (const std::out_of_range&) {
    }
    // The pool still works.
    index_counts after(n);
    pool.parallel_for(n, after);
    EXPECT_TRUE(after.each_once());
  }
}

TEST(ThreadPool, NestedCallRunsSeriallyOnTheCaller) {
  constexpr std::size_t outer = 64, inner = 10;
  const attn::thread_pool pool(4);
  index_counts counts(outer * inner);
  std::atomic<int> off_thread{0};
  pool.parallel_for(outer, [&](std::size_t i) {
    const std::thread::id self = std::this_thread::get_id();
    pool.parallel_for(inner, [&](std::size_t j) {
      if (std::this_thread::get_id() != self) off_thread.fetch_add(1);
      counts(i * inner + j);
    });
  });
  EXPECT_TRUE(counts.each_once());
  EXPECT_EQ(off_thread.load(), 0) << "a nested loop left its calling thread";
  // A nested exception reaches the outer caller.
  EXPECT_THROW(pool.parallel_for(outer,
                                 [&](std::size_t) {
                                   pool.parallel_for(inner, [&](std::size_t j) {
                                     if (j == inner - 1) throw std::logic_error("nested");
                                   });
                                 }),
               std::logic_error);
}

TEST(ThreadPool, ConcurrentCallersAreSerialised) {
  constexpr std::size_t callers = 3, calls = 50, n = 97;
  const attn::thread_pool pool(2);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < callers; ++c)
    threads.emplace_back([&] {
      for (std::size_t k = 0; k < calls; ++k) {
        index_counts counts(n);
        pool.parallel_for(n, counts);
        if (!counts.each_once()) failures.fetch_add(1);
      }
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

// ---------------------------------------------------------------------------
// Equal results across executors.

using attn::ref::thread_loop;

// One pool per thread count, shared by every problem (pools are reused).
const attn::thread_pool& pool_of(std::size_t threads) {
  static const attn::thread_pool two(2), three(3), four(4);
  return threads == 2 ? two : threads == 3 ? three : four;
}

// f(name, exec) for every executor of `threads` threads.
template <class F>
void for_each_executor(std::size_t threads, F&& f) {
  f("openmp", attn::openmp{static_cast<int>(threads)});
  f("thread_pool", pool_of(threads));
  f("parallel_for_executor", attn::parallel_for_executor{threads, thread_loop{threads}});
}

constexpr std::size_t thread_counts[] = {2, 3, 4};
constexpr float sentinel = -1234.5f;  // fills outputs: every element must be overwritten
// Where the keys are split the summation order changes, and results move by
// a few ulps of fp32 (2^-23 ~ 1.2e-7) of the largest terms summed: values,
// which are uniform in [-1, 1) (ref::rng's default). An output row is their
// weighted mean, over thousands of keys ~1/sqrt(Nk) and far smaller than
// they are, so the bound is relative to max(max |serial|, value_bound).
constexpr double split_tolerance = 1e-6;
constexpr double value_bound = 1.0;

// The outputs of one call, copied out of contiguous tensors.
struct result {
  std::vector<float> out, lse;  // lse empty for linear attention
};

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want,
                      const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  if (got.empty()) return;  // memcmp needs non-null pointers
  std::size_t differ = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    differ += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
      << what << ": " << differ << " of " << got.size() << " elements differ";
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = value_bound, worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i]) && std::isfinite(want[i])) << what << " at " << i;
    scale = std::max(scale, std::fabs(double(want[i])));
    worst = std::max(worst, std::fabs(double(got[i]) - double(want[i])));
  }
  EXPECT_LE(worst, split_tolerance * scale) << what << ": max |difference| " << worst;
}

// Whether the work split may cut a row's keys (flash-decoding: dense decode,
// latent decode). Linear attention cuts heads and MoBA positions, never keys.
enum class keys_split { no, may };

// compute(exec) -> result, run on serial and on every executor of 2, 3 and 4
// threads. Executors of one thread count agree bit for bit; with serial they
// agree bit for bit unless the split may cut the keys.
template <class Compute>
void expect_equal_across_executors(const Compute& compute, keys_split split) {
  const result want = compute(attn::serial{});
  ASSERT_FALSE(want.out.empty());
  ASSERT_TRUE(std::none_of(want.out.begin(), want.out.end(), [](float x) { return x == sentinel; }))
      << "serial left outputs unwritten";
  for (std::size_t threads : thread_counts) {
    std::optional<result> first;
    for_each_executor(threads, [&](const char* name, const auto& exec) {
      SCOPED_TRACE(std::string(name) + " with " + std::to_string(threads) + " threads");
      ASSERT_EQ(exec.concurrency(), threads);
      const result got = compute(exec);
      if (split == keys_split::no) {
        expect_same_bits(got.out, want.out, "out against serial");
        expect_same_bits(got.lse, want.lse, "lse against serial");
      } else {
        expect_close(got.out, want.out, "out against serial");
        expect_close(got.lse, want.lse, "lse against serial");
      }
      if (!first) {
        first.emplace(got);
        return;
      }
      expect_same_bits(got.out, first->out, "out against openmp of as many threads");
      expect_same_bits(got.lse, first->lse, "lse against openmp of as many threads");
    });
  }
}

using backend = attn::backend::native;

// q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv) with random
// values, made once per problem and read by every executor's run.
struct qkv {
  ref::tensor4 q, k, v;
  qkv(std::uint64_t seed, index_t b, index_t nq, index_t nk, index_t hq, index_t hkv, index_t d)
      : qkv(ref::rng(seed), b, nq, nk, hq, hkv, d) {}

 private:
  qkv(ref::rng g, index_t b, index_t nq, index_t nk, index_t hq, index_t hkv, index_t d)
      : q(ref::random_bshd(g, b, nq, hq, d)),
        k(ref::random_bshd(g, b, nk, hkv, d)),
        v(ref::random_bshd(g, b, nk, hkv, d)) {}
};

// Softmax attention of `in` with `opt` on every executor.
void expect_softmax_agrees(const qkv& in, const attn::softmax_options& opt, keys_split split) {
  const auto& q = in.q.view;
  const index_t b = q.extent[0], nq = q.extent[1], hq = q.extent[2], dv = in.v.view.extent[3];
  expect_equal_across_executors(
      [&](const auto& exec) {
        ref::tensor4 out = ref::filled<4>({b, nq, hq, dv}, ref::bshd_memory, sentinel);
        ref::tensor3 lse = ref::filled<3>({b, nq, hq}, ref::bsh_memory, sentinel);
        attn::attention<backend>(in.q.cview(), in.k.cview(), in.v.cview(), out.view, lse.view, opt,
                                 exec);
        return result{out.storage, lse.storage};
      },
      split);
}

TEST(ExecutorsAgree, DensePrefill) {
  attn::softmax_options opt;
  opt.causal = true;
  expect_softmax_agrees(qkv(0xa, 2, 300, 300, 4, 2, 64), opt, keys_split::no);
}

TEST(ExecutorsAgree, DecodeSplitKv) {
  attn::softmax_options opt;
  opt.causal = true;
  expect_softmax_agrees(qkv(0xb, 1, 1, 5000, 32, 8, 128), opt, keys_split::may);
}

TEST(ExecutorsAgree, SlidingWindowWithSinkTokens) {
  attn::softmax_options opt;
  opt.window = std::array<index_t, 2>{127, 0};
  opt.sink_tokens = 4;
  expect_softmax_agrees(qkv(0xc, 1, 700, 700, 2, 2, 64), opt, keys_split::no);
}

TEST(ExecutorsAgree, LatentDecode) {
  constexpr index_t b = 1, nq = 1, h = 16, dc = 64, dr = 16, nk = 3000;
  ref::rng g(0xd);
  const ref::tensor4 q = ref::random_bshd(g, b, nq, h, dc + dr);      // (B, Nq, H, Dc + Dr)
  const ref::tensor4 cache = ref::random_bshd(g, b, nk, 1, dc + dr);  // (B, Nk, 1, Dc + Dr)
  attn::latent_options opt;
  opt.scale = 1.0f / std::sqrt(192.0f);  // DeepSeek-V3's: 1 / sqrt(128 + 64)
  opt.dc = dc;
  expect_equal_across_executors(
      [&](const auto& exec) {
        ref::tensor4 out = ref::filled<4>({b, nq, h, dc}, ref::bshd_memory, sentinel);
        ref::tensor3 lse = ref::filled<3>({b, nq, h}, ref::bsh_memory, sentinel);
        attn::latent_attention<backend>(q.cview(), cache.cview(), out.view, lse.view, opt, exec);
        return result{out.storage, lse.storage};
      },
      keys_split::may);
}

TEST(ExecutorsAgree, Neighborhood2d) {
  constexpr index_t b = 1, x = 24, y = 24, h = 2, d = 32, kernel = 5;
  constexpr ref::layout<5> grid_memory{{0, 1, 2, 3, 4}, {}};
  constexpr ref::layout<4> lse_memory{{0, 1, 2, 3}, {}};
  ref::rng g(0xe);
  const ref::tensor<5> q = ref::random<5>(g, {b, x, y, h, d}, grid_memory);  // (B, X, Y, H, D)
  const ref::tensor<5> k = ref::random<5>(g, {b, x, y, h, d}, grid_memory);
  const ref::tensor<5> v = ref::random<5>(g, {b, x, y, h, d}, grid_memory);
  attn::neighborhood_options<2> opt;
  opt.dims = {attn::neighborhood_dim{kernel}, attn::neighborhood_dim{kernel}};
  expect_equal_across_executors(
      [&](const auto& exec) {
        ref::tensor<5> out = ref::filled<5>({b, x, y, h, d}, grid_memory, sentinel);
        ref::tensor<4> lse = ref::filled<4>({b, x, y, h}, lse_memory, sentinel);  // (B, X, Y, H)
        attn::neighborhood_attention<backend>(q.cview(), k.cview(), v.cview(), out.view, lse.view,
                                              opt, exec);
        return result{out.storage, lse.storage};
      },
      keys_split::no);
}

TEST(ExecutorsAgree, LinearCausal) {
  const qkv in(0xf, 1, 500, 500, 2, 2, 32);
  const auto& q = in.q.view;
  attn::linear_options opt;
  opt.causal = true;
  expect_equal_across_executors(
      [&](const auto& exec) {
        ref::tensor4 out = ref::filled<4>(q.extent, ref::bshd_memory, sentinel);
        attn::linear_attention<backend>(in.q.cview(), in.k.cview(), in.v.cview(), out.view, opt,
                                        exec);
        return result{out.storage, {}};
      },
      keys_split::no);
}

TEST(ExecutorsAgree, Moba) {
  const qkv in(0x10, 1, 512, 512, 2, 2, 64);
  const auto& q = in.q.view;
  attn::moba_options opt;
  opt.block_k = 64;
  opt.topk = 2;
  expect_equal_across_executors(
      [&](const auto& exec) {
        ref::tensor4 out = ref::filled<4>(q.extent, ref::bshd_memory, sentinel);
        ref::tensor3 lse =
            ref::filled<3>({q.extent[0], q.extent[1], q.extent[2]}, ref::bsh_memory, sentinel);
        attn::moba_attention<backend>(in.q.cview(), in.k.cview(), in.v.cview(), out.view, lse.view,
                                      opt, exec);
        return result{out.storage, lse.storage};
      },
      keys_split::no);
}

}  // namespace executor_test
