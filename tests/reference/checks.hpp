// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "attn/core/element.hpp"
#include "attn/core/executor.hpp"
#include "reference/random.hpp"
#include "reference/softmax_reference.hpp"

// Accuracy checks against the fp64 oracle (DESIGN §1) and the typed-test
// plumbing every variant's tests use.
namespace attn::ref {

struct tolerance {
  double rel_frobenius = 1e-5;
  double max_abs_over_max_v = 1e-4;
  double lse = 1e-5;
};

struct accuracy {
  double rel_frobenius = 0;  // over the entries compared
  double max_abs = 0;
  double max_lse = 0;  // max |lse - ref| / (1 + |ref|)
  std::int64_t rows_compared = 0;
  std::vector<std::string> problems;  // first few contract violations

  std::string summary() const {
    std::ostringstream s;
    s << "rel_frobenius=" << rel_frobenius << " max_abs=" << max_abs << " max_lse_rel=" << max_lse
      << " rows=" << rows_compared;
    for (const auto& p : problems) s << "\n  " << p;
    return s.str();
  }
};

namespace detail {

inline bool same_bits(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  return x == y;
}

inline std::string where(index_t b, index_t i, index_t h) {
  return "(b=" + std::to_string(b) + ", i=" + std::to_string(i) + ", h=" + std::to_string(h) + ")";
}

}  // namespace detail

// Measures out/lse (lse may be a null view) against the oracle and collects
// violations of the contract under `tol`.
inline accuracy measure(view4<const float> out, view3<const float> lse, const softmax_result& ref,
                        const tolerance& tol = {}) {
  accuracy a;
  auto problem = [&](std::string msg) {
    if (a.problems.size() < 8) a.problems.push_back(std::move(msg));
  };
  if (out.extent != std::array<index_t, 4>{ref.batch, ref.nq, ref.hq, ref.dv}) {
    problem("out has shape " + attn::detail::shape_string(out) + ", the reference (" +
            std::to_string(ref.batch) + ", " + std::to_string(ref.nq) + ", " +
            std::to_string(ref.hq) + ", " + std::to_string(ref.dv) + ")");
    return a;
  }
  const double abs_limit = tol.max_abs_over_max_v * ref.max_abs_v;
  double diff2 = 0, ref2 = 0;
  for (index_t b = 0; b < ref.batch; ++b)
    for (index_t i = 0; i < ref.nq; ++i)
      for (index_t h = 0; h < ref.hq; ++h) {
        const double rl = ref.l(b, i, h);
        bool touched = std::isnan(rl);
        for (index_t d = 0; d < ref.dv; ++d) touched = touched || std::isnan(ref.o(b, i, h, d));
        const bool empty = ref.keys[ref.row_index(b, i, h)] == 0;
        ++a.rows_compared;
        for (index_t d = 0; d < ref.dv; ++d) {
          const double r = ref.o(b, i, h, d);
          const double o = out(b, i, h, d);
          if (std::isnan(r)) {
            if (!std::isnan(o))
              problem("out" + detail::where(b, i, h) + "[" + std::to_string(d) +
                      "] = " + std::to_string(o) + ", expected NaN");
            continue;
          }
          if (touched && std::isnan(o)) continue;
          if (empty && o != 0.0) {
            problem("out" + detail::where(b, i, h) +
                    " has no allowed key, expected exactly 0, got " + std::to_string(o));
            continue;
          }
          if (!std::isfinite(o)) {
            problem("out" + detail::where(b, i, h) + "[" + std::to_string(d) +
                    "] = " + std::to_string(o) + ", expected finite " + std::to_string(r));
            continue;
          }
          const double e = std::fabs(o - r);
          if (!touched) {
            diff2 += e * e;
            ref2 += r * r;
          }
          a.max_abs = std::max(a.max_abs, e);
          if (e > abs_limit)
            problem("out" + detail::where(b, i, h) + "[" + std::to_string(d) +
                    "] = " + std::to_string(o) + ", expected " + std::to_string(r) +
                    " (abs error " + std::to_string(e) + " > " + std::to_string(abs_limit) + ")");
        }
        if (lse.empty()) continue;
        const double l = lse(b, i, h);
        if (std::isnan(rl)) {
          if (!std::isnan(l))
            problem("lse" + detail::where(b, i, h) + " = " + std::to_string(l) + ", expected NaN");
        } else if (rl == neg_inf) {
          if (l != neg_inf)
            problem("lse" + detail::where(b, i, h) + " = " + std::to_string(l) + ", expected -inf");
        } else if (!(touched && std::isnan(l))) {
          const double e = std::fabs(l - rl) / (1.0 + std::fabs(rl));
          if (!(e <= tol.lse))  // also catches a NaN lse
            problem("lse" + detail::where(b, i, h) + " = " + std::to_string(l) + ", expected " +
                    std::to_string(rl));
          if (std::isfinite(e)) a.max_lse = std::max(a.max_lse, e);
        }
      }
  a.rel_frobenius = ref2 > 0 ? std::sqrt(diff2 / ref2) : (diff2 > 0 ? INFINITY : 0.0);
  if (!(a.rel_frobenius <= tol.rel_frobenius))
    problem("relative Frobenius error " + std::to_string(a.rel_frobenius) + " > " +
            std::to_string(tol.rel_frobenius));
  return a;
}

// EXPECT_TRUE(ref::within_contract(out, lse, oracle)): DESIGN §1 accuracy.
inline ::testing::AssertionResult within_contract(view4<const float> out, view3<const float> lse,
                                                  const softmax_result& ref,
                                                  const tolerance& tol = {}) {
  const accuracy a = measure(out, lse, ref, tol);
  if (a.problems.empty()) return ::testing::AssertionSuccess() << a.summary();
  return ::testing::AssertionFailure() << a.summary();
}

// The call throws attn::error whose message contains every one of `parts`.
inline ::testing::AssertionResult throws_naming(const std::function<void()>& call,
                                         std::initializer_list<std::string> parts) {
  try {
    call();
  } catch (const attn::error& e) {
    const std::string what = e.what();
    for (const std::string& p : parts)
      if (what.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << what << "\" lacks \"" << p << "\"";
    return ::testing::AssertionSuccess() << what;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-attn exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// The attn::error message f() throws, or "" when it returns normally.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const attn::error& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------------------
// Comparing two results of the library (executors, backends, repeated runs).

struct difference {
  double rel_frobenius = 0;  // ||a - b||_F / ||b||_F over finite pairs
  double max_abs = 0;
  std::int64_t mismatched_nan = 0;  // one NaN, the other not
  std::int64_t different_bits = 0;  // elements whose bit patterns differ
};

template <std::size_t R>
difference compare(strided_view<const float, R> a, strided_view<const float, R> b) {
  difference d;
  if (a.extent != b.extent) {
    d.rel_frobenius = INFINITY;
    d.different_bits = 1;
    return d;
  }
  double diff2 = 0, ref2 = 0;
  const index_t n = a.size();
  for (index_t flat = 0; flat < n; ++flat) {
    index_t rest = flat, oa = 0, ob = 0;
    for (std::size_t r = R; r-- > 0;) {
      const index_t idx = rest % a.extent[r];
      rest /= a.extent[r];
      oa += idx * a.stride[r];
      ob += idx * b.stride[r];
    }
    const float x = a.data[oa], y = b.data[ob];
    if (!detail::same_bits(x, y)) ++d.different_bits;
    if (std::isnan(x) != std::isnan(y)) {
      ++d.mismatched_nan;
      continue;
    }
    if (!std::isfinite(x) || !std::isfinite(y)) {
      if (x != y && !(std::isnan(x) && std::isnan(y))) ++d.mismatched_nan;
      continue;
    }
    const double e = std::fabs(double(x) - double(y));
    diff2 += e * e;
    ref2 += double(y) * double(y);
    d.max_abs = std::max(d.max_abs, e);
  }
  d.rel_frobenius = ref2 > 0 ? std::sqrt(diff2 / ref2) : (diff2 > 0 ? INFINITY : 0.0);
  return d;
}

// ---------------------------------------------------------------------------
// Typed-test plumbing: attn::backend::list<B...> -> ::testing::Types<B...>.

template <class List>
struct gtest_types;
template <class... B>
struct gtest_types<backend::list<B...>> {
  using type = ::testing::Types<B...>;
};

// The backends the variant tests run: every backend of the build
// (attn::backend::all), or, where ATTN_TEST_NATIVE_ONLY is defined, only the
// widest (the sanitize preset: memory and UB errors are the sanitizer's job
// there, the test preset has already run every backend for results, and
// the native backend is the one with vector loads and stores near the ends
// of rows; with the unity groups of tests/CMakeLists.txt this took the
// sanitize build from ~2280 to ~1840 s of compiles on 2 cores).
#ifdef ATTN_TEST_NATIVE_ONLY
using tested_backends = backend::list<backend::native>;
#else
using tested_backends = backend::all;
#endif
using backend_types = gtest_types<tested_backends>::type;
// Every backend of the build whatever the preset (the backends' own tests).
using all_backend_types = gtest_types<backend::all>::type;

// Names typed tests by the backend (e.g. ".../scalar", ".../avx512f").
struct backend_name {
  template <class B>
  static std::string GetName(int) {
    return B::name;
  }
};

// A caller-owned parallel loop for attn::parallel_for_executor: `threads`
// std::threads pull indices from a shared counter (the calling thread is
// one of them).
struct thread_loop {
  std::size_t threads;
  void operator()(std::size_t n, const attn::index_body& body) const {
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) body(i);
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
  }
};

// Executors the typed tests run on, each with its name.
struct serial_exec {
  static constexpr const char* name = "serial";
  static attn::serial make() { return {}; }
};
struct openmp2_exec {
  static constexpr const char* name = "openmp2";
  static attn::openmp make() { return attn::openmp{2}; }
};

// Reduced precision (README, "Reduced precision"): a float tensor's
// storage rounded to T (the tensor then holds the rounded values, the
// oracle's inputs), and the accuracy contract of an output stored as O:
// fp32 accumulation everywhere, so only its final rounding adds error.
template <class T, std::size_t R>
std::vector<T> rounded(tensor<R>& t) {
  std::vector<T> stored(t.storage.size());
  for (std::size_t n = 0; n < stored.size(); ++n) {
    stored[n] = attn::from_float<T>(t.storage[n]);
    t.storage[n] = attn::to_float(stored[n]);
  }
  return stored;
}
template <class O>
tolerance storage_contract() {
  if constexpr (std::is_same_v<O, attn::bfloat16>) return {8e-3, 8e-3, 1e-5};
  if constexpr (std::is_same_v<O, attn::float16>) return {1e-3, 1e-3, 1e-5};
  return {};
}

}  // namespace attn::ref
