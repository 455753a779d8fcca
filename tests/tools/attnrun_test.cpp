// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Tests of bench/npy.hpp (the .npy reader and writer) and of the attnrun
// command line (DESIGN.md §4): correct results of --variant softmax,
// --variant neighborhood, --variant block_sparse (layouts and MoBA),
// --variant linear and --variant latent against fp64 oracles, the --repeat
// JSON line, and for every kind of bad input a non-zero exit, one line on
// stderr naming the problem, and no output file.

#ifndef ATTNRUN_PATH
#error "ATTNRUN_PATH must be defined as the path of the built attnrun binary"
#endif

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <regex>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if !defined(_WIN32)
#include <sys/wait.h>
#endif

#include "attn/attn.hpp"
#include "npy.hpp"
#include "reference/linear_reference.hpp"
#include "reference/neighborhood_reference.hpp"
#include "reference/softmax_reference.hpp"

namespace attnrun_test {

namespace fs = std::filesystem;
namespace npy = attn::npy;

// ---------------------------------------------------------------------------
// Helpers: files, hand-written .npy bytes, running attnrun.

std::string to_lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool contains_nocase(const std::string& haystack, const std::string& needle) {
  return to_lower(haystack).find(to_lower(needle)) != std::string::npos;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << p;
}

// Little-endian bytes of integer or float values, independent of the host.
template <class T>
std::string le_bytes(const std::vector<T>& values) {
  std::string out;
  for (const T& v : values) {
    using bits_t =
        std::conditional_t<sizeof(T) == 1, std::uint8_t,
                           std::conditional_t<sizeof(T) == 2, std::uint16_t, std::uint32_t>>;
    const auto bits = std::bit_cast<bits_t>(v);
    for (std::size_t i = 0; i < sizeof(T); ++i) out += static_cast<char>((bits >> (8 * i)) & 0xff);
  }
  return out;
}

// A .npy file whose header dict is given verbatim (padded NumPy-style).
std::string npy_bytes(std::string_view dict, std::string_view data, int major = 1) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  std::string header(dict);
  while ((preamble + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t i = 0; i < preamble - 8; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(data);
}

std::string f4_dict(std::string_view shape, std::string_view descr = "<f4",
                    std::string_view fortran = "False") {
  return "{'descr': '" + std::string(descr) + "', 'fortran_order': " + std::string(fortran) +
         ", 'shape': " + std::string(shape) + ", }";
}

// Runs `f` and returns the message of the E it throws (a test failure if none).
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw an exception of the wrong type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

// A fresh directory per test, removed afterwards.
class temp_dir_test : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::random_device entropy;
    dir_ = fs::temp_directory_path() / ("attn_" + std::string(info->test_suite_name()) + "_" +
                                        info->name() + "_" + std::to_string(entropy()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path path(std::string_view name) const { return dir_ / name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------
// npy reader and writer.

using NpyTest = temp_dir_test;

static_assert(npy::half_to_float(0x3c00) == 1.0f);
static_assert(npy::half_to_float(0xc100) == -2.5f);
static_assert(npy::half_to_float(0x7bff) == 65504.0f);
static_assert(npy::half_to_float(0x0001) == 0x1p-24f);
static_assert(npy::half_to_float(0x03ff) == 1023 * 0x1p-24f);
static_assert(npy::half_to_float(0x0400) == 0x1p-14f);

TEST_F(NpyTest, RoundTripsFloat32AcrossShapes) {
  const std::vector<std::vector<std::int64_t>> shapes = {
      {2, 3, 4}, {5}, {}, {0, 3}, {1, 1, 1, 1, 1, 1, 1, 2}, {3, 0}};
  for (const auto& shape : shapes) {
    std::int64_t n = 1;
    for (auto e : shape) n *= e;
    std::vector<float> values(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < values.size(); ++i)
      values[i] = 0.25f * static_cast<float>(i) - 1.0f;
    const fs::path p = path("a.npy");
    npy::write_f32(p, shape, values);
    const npy::array a = npy::read(p);
    EXPECT_EQ(a.shape, shape) << npy::shape_string(shape);
    EXPECT_EQ(a.stored, npy::dtype::f32);
    ASSERT_TRUE(a.is_float());
    EXPECT_EQ(a.floats(), values);
    EXPECT_EQ(a.size(), n);
  }
  EXPECT_EQ(entries(), std::vector<std::string>{"a.npy"}) << "a temporary file was left behind";
}

TEST_F(NpyTest, WritesAlignedVersion1Header) {
  const std::vector<float> values = {
      1.0f, -0.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(),
      3.5f, -7.0f};
  npy::write_f32(path("a.npy"), std::vector<std::int64_t>{2, 3}, values);
  const std::string bytes = read_bytes(path("a.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(bytes[6], '\x01');
  EXPECT_EQ(bytes[7], '\x00');
  const std::size_t header_len =
      static_cast<unsigned char>(bytes[8]) |
      (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
  const std::size_t offset = 10 + header_len;
  EXPECT_EQ(offset % 64, 0u);
  EXPECT_EQ(bytes.size(), offset + 4 * values.size());
  EXPECT_EQ(bytes[offset - 1], '\n');
  // Byte for byte what numpy.save writes.
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_EQ(bytes.substr(10, offset - 10),
            dict + std::string(offset - 11 - dict.size(), ' ') + "\n");
  EXPECT_EQ(bytes.substr(offset), le_bytes(values));

  // NaN survives bit-exactly.
  const float nan = std::bit_cast<float>(0x7fc01234u);
  npy::write_f32(path("nan.npy"), std::vector<std::int64_t>{1}, std::vector<float>{nan});
  EXPECT_EQ(std::bit_cast<std::uint32_t>(npy::read(path("nan.npy")).floats()[0]), 0x7fc01234u);
}

TEST_F(NpyTest, HeaderShapesAsPythonTuples) {
  EXPECT_NE(npy::f32_header(std::vector<std::int64_t>{}).find("'shape': (), }"), std::string::npos);
  EXPECT_NE(npy::f32_header(std::vector<std::int64_t>{5}).find("'shape': (5,), }"),
            std::string::npos);
  EXPECT_EQ(npy::f32_header(std::vector<std::int64_t>{5}).size() % 64, 0u);
}

TEST_F(NpyTest, OverwritesAnExistingFile) {
  write_bytes(path("a.npy"), "old contents");
  npy::write_f32(path("a.npy"), std::vector<std::int64_t>{2}, std::vector<float>{1.0f, 2.0f});
  EXPECT_EQ(npy::read(path("a.npy")).floats(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(entries(), std::vector<std::string>{"a.npy"});
}

TEST_F(NpyTest, StagedFileAppearsOnlyOnCommit) {
  const std::vector<std::int64_t> shape{3};
  const std::vector<float> values{1, 2, 3};
  {
    npy::staged_file staged(path("a.npy"), shape, values);
    EXPECT_FALSE(fs::exists(path("a.npy")));
  }
  EXPECT_TRUE(entries().empty()) << "an uncommitted staged file must leave nothing behind";
  {
    npy::staged_file staged(path("a.npy"), shape, values);
    staged.commit();
  }
  EXPECT_EQ(npy::read(path("a.npy")).floats(), values);
  EXPECT_EQ(entries(), std::vector<std::string>{"a.npy"});
}

TEST_F(NpyTest, WriteFailuresLeaveNoFile) {
  const std::string msg = error_of<npy::io_error>([&] {
    npy::write_f32(path("missing_dir") / "a.npy", std::vector<std::int64_t>{1},
                   std::vector<float>{1});
  });
  EXPECT_TRUE(contains_nocase(msg, "a.npy")) << msg;
  EXPECT_TRUE(entries().empty());
  error_of<std::invalid_argument>([&] {
    npy::write_f32(path("a.npy"), std::vector<std::int64_t>{2, 2}, std::vector<float>{1, 2, 3});
  });
  EXPECT_TRUE(entries().empty());
}

TEST_F(NpyTest, ReadsFloat16AsFloat) {
  const std::vector<std::uint16_t> halves = {0x3c00, 0xc100, 0x7bff, 0x7c00, 0x0001,
                                             0x03ff, 0x8000, 0xfc00, 0x7e00, 0x3555};
  write_bytes(path("h.npy"), npy_bytes(f4_dict("(2, 5)", "<f2"), le_bytes(halves)));
  const npy::array a = npy::read(path("h.npy"));
  EXPECT_EQ(a.stored, npy::dtype::f16);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 5}));
  ASSERT_TRUE(a.is_float());
  const auto& f = a.floats();
  ASSERT_EQ(f.size(), halves.size());
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.5f);
  EXPECT_EQ(f[2], 65504.0f);
  EXPECT_EQ(f[3], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[4], std::ldexp(1.0f, -24));            // smallest subnormal half
  EXPECT_EQ(f[5], 1023.0f * std::ldexp(1.0f, -24));  // largest subnormal half
  EXPECT_EQ(f[6], 0.0f);
  EXPECT_TRUE(std::signbit(f[6]));
  EXPECT_EQ(f[7], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f[8]));
  EXPECT_EQ(f[9], 0.333251953125f);  // 0x3555, the half nearest 1/3
}

TEST_F(NpyTest, ReadsUint8AndInt32) {
  write_bytes(path("u.npy"), npy_bytes(f4_dict("(4,)", "|u1"),
                                       le_bytes(std::vector<std::uint8_t>{0, 1, 200, 255})));
  const npy::array u = npy::read(path("u.npy"));
  EXPECT_EQ(u.stored, npy::dtype::u8);
  EXPECT_EQ(std::get<std::vector<std::uint8_t>>(u.data),
            (std::vector<std::uint8_t>{0, 1, 200, 255}));

  const std::vector<std::int32_t> ints = {0, -1, 2147483647, -2147483647 - 1, 42, 7};
  write_bytes(path("i.npy"), npy_bytes(f4_dict("(3, 2)", "<i4"), le_bytes(ints)));
  const npy::array i = npy::read(path("i.npy"));
  EXPECT_EQ(i.stored, npy::dtype::i32);
  EXPECT_FALSE(i.is_float());
  EXPECT_EQ(std::get<std::vector<std::int32_t>>(i.data), ints);
}

TEST_F(NpyTest, ReadsVersions2And3AndHeaderSpellings) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  for (int major : {2, 3}) {
    write_bytes(path("a.npy"), npy_bytes(f4_dict("(2, 3)"), le_bytes(v), major));
    EXPECT_EQ(npy::read(path("a.npy")).floats(), v) << "version " << major;
  }
  // Key order, quotes, whitespace, no trailing comma, Python 2 longs, and
  // bytes after the data are all accepted.
  const std::vector<std::string> dicts = {
      "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
      "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}",
      "{ 'descr' : '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
  };
  for (const auto& d : dicts) {
    write_bytes(path("a.npy"), npy_bytes(d, le_bytes(v) + "trailing garbage"));
    const npy::array a = npy::read(path("a.npy"));
    EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3})) << d;
    EXPECT_EQ(a.floats(), v) << d;
  }
  write_bytes(path("s.npy"), npy_bytes(f4_dict("()"), le_bytes(std::vector<float>{9.5f})));
  const npy::array scalar = npy::read(path("s.npy"));
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_EQ(scalar.floats(), std::vector<float>{9.5f});
}

// Every malformation: a format_error (or io_error) naming the file and the problem.
TEST_F(NpyTest, RejectsMalformedFiles) {
  const std::string four_floats = le_bytes(std::vector<float>{1, 2, 3, 4});
  struct bad_case {
    const char* what;
    std::string bytes;
    const char* word;
  };
  std::string header_past_end = npy_bytes(f4_dict("(4,)"), four_floats);
  header_past_end[8] = '\xff';
  header_past_end[9] = '\x7f';
  std::string version4 = npy_bytes(f4_dict("(4,)"), four_floats);
  version4[6] = '\x04';
  std::string version1_1 = npy_bytes(f4_dict("(4,)"), four_floats);
  version1_1[7] = '\x01';
  const std::vector<bad_case> cases = {
      {"bad magic", "PK\x03\x04 this is a zip file" + four_floats, "magic"},
      {"empty file", "", "magic"},
      {"magic only", "\x93NUMPY", "truncated"},
      {"unsupported version", version4, "version 4.0"},
      {"unsupported minor version", version1_1, "version 1.1"},
      {"header length beyond file", header_past_end, "header length"},
      {"header not a dict", npy_bytes("['descr', '<f4']", four_floats), "dict"},
      {"missing shape", npy_bytes("{'descr': '<f4', 'fortran_order': False}", four_floats),
       "'shape'"},
      {"missing descr", npy_bytes("{'fortran_order': False, 'shape': (4,)}", four_floats),
       "'descr'"},
      {"unknown key",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", four_floats),
       "'x'"},
      {"duplicate key",
       npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                 "'shape': (4,)}",
                 four_floats),
       "twice"},
      {"shape not a tuple", npy_bytes(f4_dict("[4]"), four_floats), "tuple"},
      {"shape an int in parentheses", npy_bytes(f4_dict("(4)"), four_floats), "tuple"},
      {"shape of floats", npy_bytes(f4_dict("(4.0,)"), four_floats), "'shape'"},
      {"unterminated header", npy_bytes("{'descr': '<f4', 'fortran_order': False", four_floats),
       "header"},
      {"fortran order", npy_bytes(f4_dict("(2, 2)", "<f4", "True"), four_floats), "fortran"},
      {"float64", npy_bytes(f4_dict("(2,)", "<f8"), four_floats), "dtype '<f8'"},
      {"object", npy_bytes(f4_dict("(2,)", "|O"), four_floats), "dtype '|O'"},
      {"structured",
       npy_bytes("{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, "
                 "'shape': (2,), }",
                 four_floats),
       "structured"},
      {"big-endian f4", npy_bytes(f4_dict("(4,)", ">f4"), four_floats), "big-endian"},
      {"big-endian i4", npy_bytes(f4_dict("(4,)", ">i4"), four_floats), "big-endian"},
      {"negative dimension", npy_bytes(f4_dict("(-3, 4)"), four_floats), "negative"},
      {"dimension beyond int64", npy_bytes(f4_dict("(99999999999999999999,)"), four_floats),
       "overflow"},
      {"element count overflow", npy_bytes(f4_dict("(4611686018427387904, 4)"), four_floats),
       "overflow"},
      {"byte count overflow", npy_bytes(f4_dict("(2305843009213693952, 2)"), four_floats),
       "overflow"},
      {"truncated data", npy_bytes(f4_dict("(5,)"), four_floats), "truncated"},
      {"truncated halves", npy_bytes(f4_dict("(5,)", "<f2"), four_floats.substr(0, 9)),
       "truncated"},
      {"huge shape, small file", npy_bytes(f4_dict("(1000000000000,)"), four_floats), "truncated"},
  };
  for (const auto& c : cases) {
    const fs::path p = path("bad.npy");
    write_bytes(p, c.bytes);
    const std::string msg = error_of<npy::format_error>([&] { npy::read(p); });
    EXPECT_TRUE(contains_nocase(msg, c.word)) << c.what << ": " << msg;
    EXPECT_EQ(msg.rfind(p.string() + ": ", 0), 0u)
        << c.what << ": the message must start with the path: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.what << ": " << msg;
  }
}

TEST_F(NpyTest, MissingFileIsAnIoError) {
  const std::string msg = error_of<npy::io_error>([&] { npy::read(path("nope.npy")); });
  EXPECT_TRUE(contains_nocase(msg, "nope.npy")) << msg;
  EXPECT_TRUE(contains_nocase(msg, "open")) << msg;
}

// ---------------------------------------------------------------------------
// attnrun.

struct run_result {
  int code = -1;
  std::string out, err;
};

std::string shell_quote(std::string_view s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A softmax problem in BSHD layout with deterministic random contents.
struct problem {
  std::int64_t b, nq, nk, hq, hkv, dk, dv;
  std::vector<float> q, k, v;

  problem(std::int64_t b_, std::int64_t nq_, std::int64_t nk_, std::int64_t hq_, std::int64_t hkv_,
          std::int64_t dk_, std::int64_t dv_, unsigned seed = 1)
      : b(b_),
        nq(nq_),
        nk(nk_),
        hq(hq_),
        hkv(hkv_),
        dk(dk_),
        dv(dv_),
        q(static_cast<std::size_t>(b * nq * hq * dk)),
        k(static_cast<std::size_t>(b * nk * hkv * dk)),
        v(static_cast<std::size_t>(b * nk * hkv * dv)) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal;
    for (auto* t : {&q, &k, &v})
      for (float& x : *t) x = normal(gen);
  }
  std::vector<std::int64_t> q_shape() const { return {b, nq, hq, dk}; }
  std::vector<std::int64_t> k_shape() const { return {b, nk, hkv, dk}; }
  std::vector<std::int64_t> v_shape() const { return {b, nk, hkv, dv}; }
};

struct reference_result {
  std::vector<double> out;  // (B, Nq, Hq, Dv)
  std::vector<double> lse;  // (B, Nq, Hq)
};

// fp64 softmax attention (DESIGN §1), bottom-right aligned causal mask.
reference_result reference(const problem& p, double scale, bool causal,
                           const std::vector<float>* sinks = nullptr) {
  reference_result r;
  r.out.assign(static_cast<std::size_t>(p.b * p.nq * p.hq * p.dv), 0.0);
  r.lse.assign(static_cast<std::size_t>(p.b * p.nq * p.hq), 0.0);
  const std::int64_t group = p.hq / p.hkv, off = p.nk - p.nq;
  for (std::int64_t b = 0; b < p.b; ++b)
    for (std::int64_t i = 0; i < p.nq; ++i)
      for (std::int64_t h = 0; h < p.hq; ++h) {
        const std::int64_t g = h / group;
        const float* qi = &p.q[static_cast<std::size_t>(((b * p.nq + i) * p.hq + h) * p.dk)];
        std::vector<double> s;
        std::vector<std::int64_t> keys;
        for (std::int64_t j = 0; j < p.nk; ++j) {
          if (causal && j > i + off) continue;
          const float* kj = &p.k[static_cast<std::size_t>(((b * p.nk + j) * p.hkv + g) * p.dk)];
          double dot = 0;
          for (std::int64_t d = 0; d < p.dk; ++d) dot += static_cast<double>(qi[d]) * kj[d];
          s.push_back(scale * dot);
          keys.push_back(j);
        }
        const std::size_t row = static_cast<std::size_t>((b * p.nq + i) * p.hq + h);
        double m = -std::numeric_limits<double>::infinity();
        for (double x : s) m = std::max(m, x);
        if (sinks) m = std::max(m, static_cast<double>((*sinks)[static_cast<std::size_t>(h)]));
        if (std::isinf(m)) {
          r.lse[row] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - m);
        if (sinks) sum += std::exp((*sinks)[static_cast<std::size_t>(h)] - m);
        const double lse = m + std::log(sum);
        r.lse[row] = lse;
        for (std::size_t t = 0; t < keys.size(); ++t) {
          const double w = std::exp(s[t] - lse);
          const float* vj =
              &p.v[static_cast<std::size_t>(((b * p.nk + keys[t]) * p.hkv + g) * p.dv)];
          for (std::int64_t d = 0; d < p.dv; ++d)
            r.out[row * static_cast<std::size_t>(p.dv) + static_cast<std::size_t>(d)] += w * vj[d];
        }
      }
  return r;
}

double relative_frobenius(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return norm == 0 ? std::sqrt(err) : std::sqrt(err / norm);
}

class AttnrunTest : public temp_dir_test {
 protected:
  run_result run(const std::vector<std::string>& args) const {
    std::string cmd = shell_quote(ATTNRUN_PATH);
    for (const auto& a : args) {
      cmd += ' ';
      cmd += shell_quote(a);
    }
    cmd += " >" + shell_quote(path("stdout.txt").string()) + " 2>" +
           shell_quote(path("stderr.txt").string());
    const int status = std::system(cmd.c_str());
    run_result r;
#if defined(_WIN32)
    r.code = status;
#else
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
#endif
    r.out = read_bytes(path("stdout.txt"));
    r.err = read_bytes(path("stderr.txt"));
    fs::remove(path("stdout.txt"));
    fs::remove(path("stderr.txt"));
    return r;
  }

  void write_problem(const problem& p) const {
    npy::write_f32(path("q.npy"), p.q_shape(), p.q);
    npy::write_f32(path("k.npy"), p.k_shape(), p.k);
    npy::write_f32(path("v.npy"), p.v_shape(), p.v);
  }

  // Runs `args` (which write out.npy and lse.npy) with a float32 out, then
  // with --out-dtype float16: the second writes halves, each the first's
  // value rounded once to the nearest half, and the same lse.
  void expect_half_out(std::vector<std::string> args) const {
    run_result r = run(args);
    ASSERT_EQ(r.code, 0) << r.err;
    const npy::array out = npy::read(path("out.npy"));
    ASSERT_EQ(out.stored, npy::dtype::f32);
    const std::string lse = read_bytes(path("lse.npy"));
    args.insert(args.end(), {"--out-dtype", "float16"});
    r = run(args);
    ASSERT_EQ(r.code, 0) << r.err;
    const npy::array half = npy::read(path("out.npy"));
    EXPECT_EQ(half.stored, npy::dtype::f16);
    ASSERT_EQ(half.shape, out.shape);
    EXPECT_EQ(read_bytes(path("lse.npy")), lse) << "lse stays float32";
    const std::vector<float> want = out.floats(), got = half.floats();
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(got[i], attn::to_float(attn::from_float<attn::float16>(want[i]))) << "out element " << i;
  }

  // --variant softmax with q/k/v/out/lse in the test directory, then `extra`.
  std::vector<std::string> softmax_args(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"--variant", "softmax",
                                     "--q",       path("q.npy").string(),
                                     "--k",       path("k.npy").string(),
                                     "--v",       path("v.npy").string(),
                                     "--out",     path("out.npy").string(),
                                     "--lse",     path("lse.npy").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Runs attnrun and checks its out/lse against the fp64 reference.
  void expect_matches_reference(const problem& p, const std::vector<std::string>& extra,
                                double scale, bool causal,
                                const std::vector<float>* sinks = nullptr) const {
    const run_result r = run(softmax_args(extra));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "") << "attnrun prints nothing on stdout without --repeat";
    EXPECT_EQ(r.err, "");
    const npy::array out = npy::read(path("out.npy"));
    const npy::array lse = npy::read(path("lse.npy"));
    EXPECT_EQ(out.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq, p.dv}));
    EXPECT_EQ(lse.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq}));
    const reference_result ref = reference(p, scale, causal, sinks);
    ASSERT_EQ(out.floats().size(), ref.out.size());
    ASSERT_EQ(lse.floats().size(), ref.lse.size());
    EXPECT_LE(relative_frobenius(out.floats(), ref.out), 1e-5);
    for (std::size_t i = 0; i < ref.lse.size(); ++i) {
      const double got = lse.floats()[i], want = ref.lse[i];
      if (std::isinf(want)) {
        EXPECT_EQ(got, want) << "lse row " << i;
      } else {
        EXPECT_NEAR(got, want, 1e-5 * (1 + std::abs(want))) << "lse row " << i;
      }
    }
  }

  // Runs attnrun with `extra` and checks out/lse against the fp64 oracle of
  // tests/reference with the options `opt` that the flags stand for (DESIGN
  // §1 accuracy). Returns the oracle.
  attn::ref::softmax_result expect_matches_oracle(const problem& p,
                                                  const std::vector<std::string>& extra,
                                                  const attn::softmax_options& opt) const {
    const attn::ref::softmax_result want = attn::ref::softmax_attention(
        attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
        attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
        attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv), opt);
    const run_result r = run(softmax_args(extra));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    if (r.code != 0) return want;
    const npy::array out = npy::read(path("out.npy"));
    const npy::array lse = npy::read(path("lse.npy"));
    EXPECT_EQ(out.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq, p.dv}));
    EXPECT_EQ(lse.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq}));
    if (out.floats().size() != want.out.size() || lse.floats().size() != want.lse.size()) {
      ADD_FAILURE() << "out or lse of the wrong size";
      return want;
    }
    EXPECT_LE(relative_frobenius(out.floats(), want.out), 1e-5);
    for (std::size_t i = 0; i < want.out.size(); ++i)
      EXPECT_NEAR(out.floats()[i], want.out[i], 1e-4 * want.max_abs_v) << "out element " << i;
    for (std::size_t i = 0; i < want.lse.size(); ++i) {
      const double got = lse.floats()[i], ref = want.lse[i];
      if (std::isinf(ref)) {
        EXPECT_EQ(got, ref) << "lse row " << i;
      } else {
        EXPECT_NEAR(got, ref, 1e-5 * (1 + std::abs(ref))) << "lse row " << i;
      }
    }
    return want;
  }

  // A failed run: non-zero exit, exactly one "attnrun: ..." line on stderr
  // containing `word`, nothing on stdout, and no output (or temporary) file.
  void expect_failure(const std::vector<std::string>& args, const std::string& word,
                      int code = -1) const {
    expect_failure_mentioning(args, {word}, code);
  }

  // The same, with a message containing every one of `words`.
  void expect_failure_mentioning(const std::vector<std::string>& args,
                                 const std::vector<std::string>& words, int code = -1) const {
    const run_result r = run(args);
    EXPECT_NE(r.code, 0) << "expected a failure mentioning '" << words.front() << "'";
    if (code >= 0) {
      EXPECT_EQ(r.code, code) << r.err;
    }
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.err;
    EXPECT_TRUE(r.err.ends_with('\n')) << r.err;
    EXPECT_TRUE(r.err.starts_with("attnrun: ")) << r.err;
    for (const std::string& word : words)
      EXPECT_TRUE(contains_nocase(r.err, word)) << "expected '" << word << "' in: " << r.err;
    EXPECT_FALSE(fs::exists(path("out.npy"))) << "a failed run wrote --out; stderr: " << r.err;
    EXPECT_FALSE(fs::exists(path("lse.npy"))) << "a failed run wrote --lse; stderr: " << r.err;
    for (const auto& name : entries())
      EXPECT_FALSE(name.starts_with(".")) << "temporary file left behind: " << name;
  }
};

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

// --- correct runs

TEST_F(AttnrunTest, DenseGqaMatchesReference) {
  const problem p(2, 5, 7, 4, 2, 8, 6);  // Dk != Dv, two query heads per kv head
  write_problem(p);
  expect_matches_reference(p, {}, 1 / std::sqrt(8.0), false);
}

TEST_F(AttnrunTest, CausalWithMoreKeysThanQueriesMatchesReference) {
  const problem p(2, 5, 9, 4, 2, 8, 6, 2);  // bottom-right aligned: off = 4
  write_problem(p);
  expect_matches_reference(p, {"--causal"}, 1 / std::sqrt(8.0), true);
}

TEST_F(AttnrunTest, CausalWithMoreQueriesThanKeysHasEmptyRows) {
  const problem p(1, 6, 3, 4, 2, 8, 8, 3);  // off = -3: rows 0..2 see no key
  write_problem(p);
  expect_matches_reference(p, {"--causal"}, 1 / std::sqrt(8.0), true);
  const npy::array out = npy::read(path("out.npy"));
  for (std::size_t i = 0; i < 3 * 4 * 8; ++i) EXPECT_EQ(out.floats()[i], 0.0f);
}

// --- float16 storage (issue #9)

// Rounds values to fp16 (in place: the reference then sees what the file
// holds) and writes them as a '<f2' file.
void write_half(const fs::path& p, const std::vector<std::int64_t>& shape, std::vector<float>& values) {
  std::vector<std::uint16_t> bits(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const attn::float16 h = attn::from_float<attn::float16>(values[i]);
    bits[i] = h.bits;
    values[i] = attn::to_float(h);
  }
  npy::staged_file(p, shape, std::span<const std::uint16_t>(bits)).commit();
}

TEST_F(AttnrunTest, Float16InputsMatchReference) {
  problem p(2, 5, 7, 4, 2, 8, 6);
  write_half(path("q.npy"), p.q_shape(), p.q);
  write_half(path("k.npy"), p.k_shape(), p.k);
  write_half(path("v.npy"), p.v_shape(), p.v);
  expect_matches_reference(p, {}, 1 / std::sqrt(8.0), false);
}

TEST_F(AttnrunTest, Float16CacheWithFloat32Queries) {
  problem p(1, 2, 70, 8, 2, 16, 16, 4);  // decode-shaped: fp16 k and v read in place
  npy::write_f32(path("q.npy"), p.q_shape(), p.q);
  write_half(path("k.npy"), p.k_shape(), p.k);
  write_half(path("v.npy"), p.v_shape(), p.v);
  expect_matches_reference(p, {"--causal"}, 0.25, true);
}

TEST_F(AttnrunTest, OutDtypeFloat16WritesHalves) {
  const problem p(1, 6, 9, 4, 2, 8, 8, 5);
  write_problem(p);
  const run_result r = run(softmax_args({"--out-dtype", "float16"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const npy::array out = npy::read(path("out.npy"));
  EXPECT_EQ(out.stored, npy::dtype::f16);
  EXPECT_EQ(npy::read(path("lse.npy")).stored, npy::dtype::f32) << "lse stays float32";
  const reference_result ref = reference(p, 1 / std::sqrt(8.0), false);
  ASSERT_EQ(out.floats().size(), ref.out.size());
  for (std::size_t i = 0; i < ref.out.size(); ++i)  // one fp16 rounding of an fp32 result
    EXPECT_NEAR(out.floats()[i], ref.out[i], 0x1p-11 * std::abs(ref.out[i]) + 1e-5) << "out element " << i;
}

TEST_F(AttnrunTest, ScaleThreadsAndEqualsSyntax) {
  const problem p(1, 33, 47, 4, 1, 16, 16, 4);  // MQA, more than one tile
  write_problem(p);
  expect_matches_reference(p, {"--scale=0.3", "--threads", "1", "--causal"}, 0.3, true);
  expect_matches_reference(p, {"--scale", "-0.5", "--threads=2"}, -0.5, false);
}

TEST_F(AttnrunTest, SinksMatchReference) {
  const problem p(1, 6, 4, 4, 2, 8, 8, 5);
  write_problem(p);
  const std::vector<float> sinks = {0.5f, -1.0f, 2.0f, 0.0f};
  npy::write_f32(path("sinks.npy"), std::vector<std::int64_t>{4}, sinks);
  expect_matches_reference(p, {"--causal", "--sinks", path("sinks.npy").string()},
                           1 / std::sqrt(8.0), true, &sinks);
}

TEST_F(AttnrunTest, OutWithoutLseAndOverwrite) {
  const problem p(1, 4, 4, 2, 2, 4, 4, 6);
  write_problem(p);
  write_bytes(path("out.npy"), "stale");
  const run_result r =
      run({"--variant", "softmax", "--q", path("q.npy").string(), "--k", path("k.npy").string(),
           "--v", path("v.npy").string(), "--out", path("out.npy").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(npy::read(path("out.npy")).shape, (std::vector<std::int64_t>{1, 4, 2, 4}));
  EXPECT_FALSE(fs::exists(path("lse.npy")));
}

TEST_F(AttnrunTest, RepeatPrintsOneJsonLine) {
  const problem p(1, 16, 16, 2, 2, 8, 8, 7);
  write_problem(p);
  const run_result r = run(softmax_args({"--repeat", "3", "--causal"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  const std::regex json(
      R"(^\{\s*"median_s"\s*:\s*([-+0-9.eE]+)\s*,\s*"gflops"\s*:\s*([-+0-9.eE]+)\s*\}\n$)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, json)) << r.out;
  const double median_s = std::stod(m[1].str()), gflops = std::stod(m[2].str());
  EXPECT_GT(median_s, 0.0);
  EXPECT_GT(gflops, 0.0);
  EXPECT_TRUE(std::isfinite(median_s) && std::isfinite(gflops));
  // gflops * median_s = allowed pairs x 2 x (Dk + Dv) x heads x batch (causal,
  // Nq == Nk: 16 * 17 / 2 pairs).
  EXPECT_NEAR(gflops * 1e9 * median_s, 136.0 * 2 * 16 * 2, 1e-3 * 136 * 2 * 16 * 2);
  // The outputs are still written, and correct.
  const reference_result ref = reference(p, 1 / std::sqrt(8.0), true);
  EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), ref.out), 1e-5);
  EXPECT_TRUE(fs::exists(path("lse.npy")));
}

TEST_F(AttnrunTest, HelpPrintsUsage) {
  const run_result r = run({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(contains_nocase(r.out, "usage")) << r.out;
  for (const char* flag :
       {"--variant", "--window",    "--softcap", "--alibi",       "--bias",       "--doc",
        "--kernel",  "--dilation",  "--stride",  "--causal-dims", "neighborhood", "block_sparse",
        "--block",   "--layout",    "--topk",    "MoBA",          "linear",       "--feature",
        "elu1",      "--normalize", "--decay",   "latent",        "--dv",         "CACHE.npy"})
    EXPECT_TRUE(contains_nocase(r.out, flag)) << flag << " is missing from: " << r.out;
  EXPECT_EQ(r.err, "");
}

// --- bad input files

class AttnrunBadInput : public AttnrunTest {
 protected:
  void SetUp() override {
    AttnrunTest::SetUp();
    write_problem(problem(1, 4, 4, 2, 2, 8, 8));
  }
  std::string q_floats() const { return le_bytes(problem(1, 4, 4, 2, 2, 8, 8).q); }
};

TEST_F(AttnrunBadInput, BadMagic) {
  write_bytes(path("q.npy"), "not a numpy file at all, just some text\n");
  expect_failure(softmax_args(), "magic", exit_failure);
}

TEST_F(AttnrunBadInput, TruncatedData) {
  write_bytes(path("k.npy"), npy_bytes(f4_dict("(1, 4, 2, 8)"), q_floats().substr(0, 100)));
  expect_failure(softmax_args(), "truncated", exit_failure);
}

TEST_F(AttnrunBadInput, FortranOrder) {
  write_bytes(path("q.npy"), npy_bytes(f4_dict("(1, 4, 2, 8)", "<f4", "True"), q_floats()));
  expect_failure(softmax_args(), "fortran", exit_failure);
}

TEST_F(AttnrunBadInput, UnsupportedDtype) {
  write_bytes(path("v.npy"), npy_bytes(f4_dict("(1, 4, 2, 4)", "<f8"), q_floats()));
  expect_failure(softmax_args(), "dtype '<f8'", exit_failure);
}

TEST_F(AttnrunBadInput, ShapeProductOverflow) {
  write_bytes(path("q.npy"), npy_bytes(f4_dict("(4611686018427387904, 4)"), q_floats()));
  expect_failure(softmax_args(), "overflow", exit_failure);
}

TEST_F(AttnrunBadInput, BigEndian) {
  write_bytes(path("q.npy"), npy_bytes(f4_dict("(1, 4, 2, 8)", ">f4"), q_floats()));
  expect_failure(softmax_args(), "big-endian", exit_failure);
}

TEST_F(AttnrunBadInput, MissingFile) {
  fs::remove(path("v.npy"));
  expect_failure(softmax_args(), "v.npy", exit_failure);
}

TEST_F(AttnrunBadInput, IntegerInputsAreNotFloats) {
  write_bytes(path("q.npy"), npy_bytes(f4_dict("(1, 4, 2, 8)", "<i4"), std::string(4 * 64, '\0')));
  expect_failure_mentioning(softmax_args(), {"--q", "dtype '<i4'", "float16"}, exit_failure);
}

TEST_F(AttnrunBadInput, KeysAndValuesStoredAlike) {
  write_bytes(path("k.npy"), npy_bytes(f4_dict("(1, 4, 2, 8)", "<f2"), std::string(2 * 64, '\0')));
  expect_failure_mentioning(softmax_args(), {"--v", "'<f4'", "'<f2'"}, exit_failure);
}

TEST_F(AttnrunBadInput, OutDtypeIsFloat32OrFloat16) {
  expect_failure_mentioning(softmax_args({"--out-dtype", "bfloat16"}), {"--out-dtype", "bfloat16"}, exit_usage);
}

TEST_F(AttnrunBadInput, HalfInputsOnlyWhereTheVariantStoresThem) {
  // Linear attention takes float32 only.
  write_bytes(path("q.npy"), npy_bytes(f4_dict("(1, 4, 2, 8)", "<f2"), std::string(2 * 64, '\0')));
  expect_failure_mentioning({"--variant", "linear", "--q", path("q.npy").string(), "--k", path("k.npy").string(),
                             "--v", path("v.npy").string(), "--out", path("out.npy").string()},
                            {"--q", "dtype '<f2'"}, exit_failure);
}

TEST_F(AttnrunBadInput, WrongRank) {
  npy::write_f32(path("q.npy"), std::vector<std::int64_t>{4, 16}, std::vector<float>(64));
  expect_failure(softmax_args(), "rank", exit_failure);
}

TEST_F(AttnrunBadInput, KeyDimensionMismatch) {
  const problem p(1, 4, 4, 2, 2, 6, 8);
  npy::write_f32(path("k.npy"), p.k_shape(), p.k);  // Dk = 6, q has Dk = 8
  expect_failure(softmax_args(), "shape", exit_failure);
}

TEST_F(AttnrunBadInput, ValueLengthMismatch) {
  const problem p(1, 4, 5, 2, 2, 8, 8);
  npy::write_f32(path("v.npy"), p.v_shape(), p.v);  // Nk = 5, k has Nk = 4
  expect_failure(softmax_args(), "shape", exit_failure);
}

TEST_F(AttnrunBadInput, QueryHeadsNotDivisibleByKvHeads) {
  const problem p(1, 4, 4, 3, 2, 8, 8);  // Hq = 3, Hkv = 2
  write_problem(p);
  expect_failure(softmax_args(), "GQA", exit_failure);
}

TEST_F(AttnrunBadInput, SinksOfTheWrongShape) {
  npy::write_f32(path("sinks.npy"), std::vector<std::int64_t>{3}, std::vector<float>(3));
  expect_failure(softmax_args({"--sinks", path("sinks.npy").string()}), "--sinks", exit_failure);
}

TEST_F(AttnrunBadInput, UnwritableOutputLeavesNoOtherFile) {
  // --out cannot be created: --lse must not appear either.
  std::vector<std::string> args = softmax_args();
  args[9] = path("no_such_dir/out.npy").string();
  expect_failure(args, "out.npy", exit_failure);
  // --lse cannot be created: the staged --out must be discarded.
  args = softmax_args();
  args[11] = path("no_such_dir/lse.npy").string();
  expect_failure(args, "lse.npy", exit_failure);
}

// --- bad command lines

TEST_F(AttnrunBadInput, UnknownFlag) {
  expect_failure(softmax_args({"--frobnicate"}), "--frobnicate", exit_usage);
  expect_failure(softmax_args({"stray"}), "stray", exit_usage);
}

TEST_F(AttnrunBadInput, BadNumbers) {
  expect_failure(softmax_args({"--scale", "abc"}), "--scale", exit_usage);
  expect_failure(softmax_args({"--scale", "1.5x"}), "--scale", exit_usage);
  expect_failure(softmax_args({"--scale", "inf"}), "--scale", exit_usage);
  expect_failure(softmax_args({"--threads", "0"}), "--threads", exit_usage);
  expect_failure(softmax_args({"--threads", "1.5"}), "--threads", exit_usage);
  expect_failure(softmax_args({"--threads", "99999999999999999999"}), "--threads", exit_usage);
  expect_failure(softmax_args({"--repeat", "-1"}), "--repeat", exit_usage);
  expect_failure(softmax_args({"--repeat", "0"}), "--repeat", exit_usage);
}

TEST_F(AttnrunBadInput, MissingValuesAndFlags) {
  expect_failure(softmax_args({"--scale"}), "--scale", exit_usage);
  expect_failure({"--variant", "softmax", "--q", "--k", path("k.npy").string()}, "--q", exit_usage);
  expect_failure({"--variant", "softmax", "--q", path("q.npy").string(), "--k",
                  path("k.npy").string(), "--out", path("out.npy").string()},
                 "--v", exit_usage);
  expect_failure({"--q", path("q.npy").string(), "--k", path("k.npy").string(), "--v",
                  path("v.npy").string(), "--out", path("out.npy").string()},
                 "--variant", exit_usage);
  expect_failure(softmax_args({"--causal=yes"}), "--causal", exit_usage);
  expect_failure(softmax_args({"--q", path("q.npy").string()}), "more than once", exit_usage);
}

TEST_F(AttnrunBadInput, UnknownVariant) {
  std::vector<std::string> args = softmax_args();
  args[1] = "flash";
  expect_failure_mentioning(args, {"--variant flash", "linear, latent"}, exit_usage);
}

TEST_F(AttnrunBadInput, FlagsOfOtherVariantsAreRefused) {
  const std::vector<std::vector<std::string>> others = {
      {"--kernel", "7"},    {"--dilation", "2"},   {"--stride", "1"}, {"--causal-dims", "0"},
      {"--block", "16,16"}, {"--layout", "l.npy"}, {"--topk", "2"},   {"--feature", "relu"},
      {"--normalize"},      {"--decay", "d.npy"},  {"--dv", "4"}};
  for (const auto& flag : others)
    expect_failure(softmax_args(flag), flag[0] + " does not apply to --variant softmax",
                   exit_usage);
  expect_failure_mentioning(softmax_args({"--kernel", "7,7", "--causal"}),
                            {"--kernel", "only to neighborhood"}, exit_usage);
}

TEST_F(AttnrunBadInput, OutAndLseNameTheSameFile) {
  std::vector<std::string> args = softmax_args();
  args[11] = path("out.npy").string();
  expect_failure(args, "same file", exit_usage);
}

}  // namespace attnrun_test

namespace attnrun_test {

// --window and --sink-tokens against the fp64 oracle of tests/reference.
TEST_F(AttnrunTest, WindowAndSinkTokensMatchTheOracle) {
  const problem p(1, 40, 50, 4, 2, 8, 8, 9);
  write_problem(p);
  const run_result r = run(softmax_args({"--window", "7,2", "--sink-tokens", "3"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const npy::array out = npy::read(path("out.npy"));
  attn::softmax_options opt;
  opt.window = std::array<attn::index_t, 2>{7, 2};
  opt.sink_tokens = 3;
  const attn::ref::softmax_result want = attn::ref::softmax_attention(
      attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
      attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
      attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv), opt);
  ASSERT_EQ(out.floats().size(), want.out.size());
  EXPECT_LE(relative_frobenius(out.floats(), want.out), 1e-5);
}

TEST_F(AttnrunBadInput, BadWindowAndSinkTokens) {
  expect_failure(softmax_args({"--window", "3"}), "--window", exit_usage);
  expect_failure(softmax_args({"--window", "-2,0"}), "--window", exit_usage);
  expect_failure(softmax_args({"--sink-tokens", "-1", "--window", "3,0"}), "--sink-tokens",
                 exit_usage);
  expect_failure(softmax_args({"--sink-tokens", "4"}), "sink_tokens", exit_failure);
}

}  // namespace attnrun_test

namespace attnrun_test {

// --softcap, --alibi, --bias and --doc against the fp64 oracle of tests/reference.

// A (Nk,) int32 .npy of document ids, written byte by byte.
void write_ids(const fs::path& p, const std::vector<std::int32_t>& ids) {
  const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(ids.size())};
  write_bytes(p, npy_bytes(f4_dict(npy::shape_string(shape), "<i4"), le_bytes(ids)));
}

// Deterministic N(0, sigma^2) values.
std::vector<float> normal_values(std::size_t n, float sigma, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(n);
  for (float& e : x) e = normal(gen);
  return x;
}

TEST_F(AttnrunTest, SoftcapAlibiAndWindowMatchTheOracle) {
  const problem p(2, 20, 27, 6, 3, 8, 6, 11);  // Hq = 6: ALiBi slopes of a non-power of two
  write_problem(p);
  attn::softmax_options opt;
  opt.softcap = 1.5f;
  opt.alibi = true;
  opt.window = std::array<attn::index_t, 2>{6, 1};
  expect_matches_oracle(p, {"--softcap", "1.5", "--alibi", "--window", "6,1"}, opt);
  opt.window = std::array<attn::index_t, 2>{6, 0};
  opt.causal = true;
  opt.softcap = 0.75f;
  expect_matches_oracle(p, {"--softcap=0.75", "--alibi", "--window=6,0", "--causal"}, opt);
}

TEST_F(AttnrunTest, BiasPerHeadAndPerBatchMatchesTheOracle) {
  const problem p(2, 9, 13, 4, 2, 8, 8, 12);
  write_problem(p);
  for (const std::vector<std::int64_t>& shape :
       {std::vector<std::int64_t>{1, p.hq, p.nq, p.nk},
        std::vector<std::int64_t>{p.b, 1, p.nq, p.nk},
        std::vector<std::int64_t>{p.b, p.hq, p.nq, p.nk}}) {
    SCOPED_TRACE("bias shape " + npy::shape_string(shape));
    const std::vector<float> bias = normal_values(
        static_cast<std::size_t>(shape[0] * shape[1] * shape[2] * shape[3]), 2.0f, 13);
    npy::write_f32(path("bias.npy"), shape, bias);
    attn::softmax_options opt;
    opt.bias = attn::bshd<const float>(bias.data(), shape[0], shape[1], shape[2], shape[3]);
    expect_matches_oracle(p, {"--bias", path("bias.npy").string()}, opt);
    opt.causal = true;
    opt.softcap = 2.0f;
    expect_matches_oracle(p, {"--bias", path("bias.npy").string(), "--causal", "--softcap", "2"},
                          opt);
  }
}

TEST_F(AttnrunTest, DocumentIdsMatchTheOracle) {
  // Documents of 5, 1 and 11 keys (any int32 ids); Nq = 13 < Nk = 17, so the
  // queries take the ids of keys 4..16 and start inside the first document.
  const problem p(2, 13, 17, 4, 2, 8, 6, 14);
  write_problem(p);
  std::vector<std::int32_t> ids(5, 7);
  ids.push_back(3);
  ids.insert(ids.end(), 11, -9);
  write_ids(path("doc.npy"), ids);
  const std::string doc = path("doc.npy").string();
  attn::softmax_options opt;
  opt.document_ids = ids;
  opt.causal = true;
  expect_matches_oracle(p, {"--doc", doc, "--causal"}, opt);
  opt.causal = false;
  expect_matches_oracle(p, {"--doc", doc}, opt);
  opt.window = std::array<attn::index_t, 2>{3, 2};
  opt.alibi = true;
  expect_matches_oracle(p, {"--doc", doc, "--window", "3,2", "--alibi"}, opt);

  // --repeat counts only the pairs the documents (and the window) allow.
  const attn::ref::softmax_result want = attn::ref::softmax_attention(
      attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
      attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
      attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv), opt);
  double pairs = 0;
  for (attn::index_t n : want.keys) pairs += static_cast<double>(n);
  const run_result r = run(softmax_args({"--doc", doc, "--window", "3,2", "--repeat", "2"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::regex json(
      R"(^\{\s*"median_s"\s*:\s*([-+0-9.eE]+)\s*,\s*"gflops"\s*:\s*([-+0-9.eE]+)\s*\}\n$)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, json)) << r.out;
  const double flops = pairs * 2 * static_cast<double>(p.dk + p.dv);
  EXPECT_NEAR(std::stod(m[2].str()) * 1e9 * std::stod(m[1].str()), flops, 1e-3 * flops);
}

TEST_F(AttnrunBadInput, BadSoftcapAndAlibi) {
  for (const char* value : {"0", "-1", "nan", "inf", "abc", "1.5x"})
    expect_failure(softmax_args({"--softcap", value}), "--softcap", exit_usage);
  expect_failure(softmax_args({"--alibi=yes"}), "--alibi", exit_usage);
}

TEST_F(AttnrunBadInput, BiasOfTheWrongShapeOrDtype) {
  // The fixture's problem: B = 1, Nq = Nk = 4, Hq = 2.
  const std::string bias = path("bias.npy").string();
  for (const std::vector<std::int64_t>& shape :
       {std::vector<std::int64_t>{1, 2, 4, 3}, std::vector<std::int64_t>{1, 2, 3, 4},
        std::vector<std::int64_t>{1, 3, 4, 4}, std::vector<std::int64_t>{2, 2, 4, 4}}) {
    npy::write_f32(
        bias, shape,
        std::vector<float>(static_cast<std::size_t>(shape[0] * shape[1] * shape[2] * shape[3])));
    expect_failure_mentioning(softmax_args({"--bias", bias}), {"--bias", "shape"}, exit_failure);
  }
  npy::write_f32(bias, std::vector<std::int64_t>{2, 4, 4}, std::vector<float>(32));
  expect_failure_mentioning(softmax_args({"--bias", bias}), {"--bias", "rank"}, exit_failure);
  write_bytes(bias, npy_bytes(f4_dict("(1, 2, 4, 4)", "<i4"), std::string(4 * 32, '\0')));
  expect_failure_mentioning(softmax_args({"--bias", bias}), {"--bias", "dtype '<i4'"},
                            exit_failure);
  fs::remove(bias);
  expect_failure_mentioning(softmax_args({"--bias", bias}), {"--bias", "bias.npy"}, exit_failure);
}

TEST_F(AttnrunBadInput, BadDocumentIds) {
  const std::string doc = path("doc.npy").string();
  write_ids(doc, {0, 0, 1});
  expect_failure_mentioning(softmax_args({"--doc", doc}), {"--doc", "shape"}, exit_failure);
  write_ids(doc, {0, 0, 1, 1, 1});
  expect_failure_mentioning(softmax_args({"--doc", doc}), {"--doc", "shape"}, exit_failure);
  write_bytes(doc, npy_bytes(f4_dict("(2, 2)", "<i4"), le_bytes(std::vector<std::int32_t>(4))));
  expect_failure_mentioning(softmax_args({"--doc", doc}), {"--doc", "rank"}, exit_failure);
  npy::write_f32(doc, std::vector<std::int64_t>{4}, std::vector<float>{0, 0, 1, 1});
  expect_failure_mentioning(softmax_args({"--doc", doc}), {"--doc", "dtype '<f4'"}, exit_failure);
  write_ids(doc, {0, 0, 1, 0});
  expect_failure_mentioning(softmax_args({"--doc", doc, "--causal"}), {"--doc", "contiguous"},
                            exit_failure);
  // Queries take the ids of the last Nq keys: Nq > Nk has no ids for them.
  const problem more_queries(1, 6, 4, 2, 2, 8, 8);
  npy::write_f32(path("q.npy"), more_queries.q_shape(), more_queries.q);
  write_ids(doc, {0, 0, 1, 1});
  expect_failure_mentioning(softmax_args({"--doc", doc}), {"--doc", "Nq <= Nk"}, exit_failure);
}

}  // namespace attnrun_test

namespace attnrun_test {

// --variant neighborhood (DESIGN §2 and §4): rank 1, 2 and 3 grids against
// the fp64 oracle of tests/reference/neighborhood_reference.hpp.

using attn::index_t;
using attn::neighborhood_dim;

// A neighborhood problem: q (B, grid..., Hq, Dk), k and v (B, grid..., Hkv,
// Dk|Dv), C order, deterministic random contents.
struct grid_problem {
  std::int64_t b;
  std::vector<std::int64_t> grid;
  std::int64_t hq, hkv, dk, dv;
  std::vector<float> q, k, v;

  grid_problem(std::int64_t b_, std::vector<std::int64_t> grid_, std::int64_t hq_,
               std::int64_t hkv_, std::int64_t dk_, std::int64_t dv_, unsigned seed)
      : b(b_), grid(std::move(grid_)), hq(hq_), hkv(hkv_), dk(dk_), dv(dv_) {
    q = normal_values(static_cast<std::size_t>(b * tokens() * hq * dk), 1.0f, seed);
    k = normal_values(static_cast<std::size_t>(b * tokens() * hkv * dk), 1.0f, seed + 1);
    v = normal_values(static_cast<std::size_t>(b * tokens() * hkv * dv), 1.0f, seed + 2);
  }
  std::int64_t tokens() const {
    std::int64_t n = 1;
    for (std::int64_t l : grid) n *= l;
    return n;
  }
  std::vector<std::int64_t> shape(std::int64_t heads, std::int64_t last) const {
    std::vector<std::int64_t> s{b};
    s.insert(s.end(), grid.begin(), grid.end());
    s.push_back(heads);
    if (last >= 0) s.push_back(last);
    return s;
  }
  std::vector<std::int64_t> q_shape() const { return shape(hq, dk); }
  std::vector<std::int64_t> k_shape() const { return shape(hkv, dk); }
  std::vector<std::int64_t> v_shape() const { return shape(hkv, dv); }
  std::vector<std::int64_t> out_shape() const { return shape(hq, dv); }
  std::vector<std::int64_t> lse_shape() const { return shape(hq, -1); }
};

// The fp64 oracle. The files are C order, so the grid's row-major token
// order is already the flat (B, N, H, D) order of the oracle's rows; with the
// default scale this is ref::neighborhood_attention itself.
template <std::size_t R>
attn::ref::softmax_result neighborhood_oracle(const grid_problem& p,
                                              const std::array<neighborhood_dim, R>& dims,
                                              std::optional<double> scale = std::nullopt) {
  attn::ref::grid<R> g;
  std::copy_n(p.grid.begin(), R, g.length.begin());
  const index_t n = p.tokens();
  const auto q = attn::bshd<const float>(p.q.data(), p.b, n, p.hq, p.dk);
  const auto k = attn::bshd<const float>(p.k.data(), p.b, n, p.hkv, p.dk);
  const auto v = attn::bshd<const float>(p.v.data(), p.b, n, p.hkv, p.dv);
  if (!scale) {
    auto grid_view = [&](const float* data, index_t heads, index_t last) {
      attn::strided_view<const float, R + 3> x{data, {}, {}};
      x.extent[0] = p.b;
      std::copy_n(g.length.begin(), R, x.extent.begin() + 1);
      x.extent[R + 1] = heads;
      x.extent[R + 2] = last;
      index_t pitch = 1;
      for (std::size_t d = R + 3; d-- > 0;) {
        x.stride[d] = pitch;
        pitch *= x.extent[d];
      }
      return x;
    };
    return attn::ref::neighborhood_attention<R>(grid_view(p.q.data(), p.hq, p.dk),
                                                grid_view(p.k.data(), p.hkv, p.dk),
                                                grid_view(p.v.data(), p.hkv, p.dv), dims);
  }
  auto allowed = [&](index_t, index_t, index_t i, index_t j) {
    return attn::ref::neighborhood_pair(g, dims, i, j);
  };
  auto identity = [](double s, index_t, index_t, index_t, index_t) { return s; };
  return attn::ref::softmax_attention(q, k, v, *scale, nullptr, allowed, identity);
}

class AttnrunNeighborhood : public AttnrunTest {
 protected:
  void write_problem(const grid_problem& p) const {
    npy::write_f32(path("q.npy"), p.q_shape(), p.q);
    npy::write_f32(path("k.npy"), p.k_shape(), p.k);
    npy::write_f32(path("v.npy"), p.v_shape(), p.v);
  }

  // --variant neighborhood with q/k/v/out/lse in the test directory, then `extra`.
  std::vector<std::string> neighborhood_args(const std::vector<std::string>& extra) const {
    std::vector<std::string> args = softmax_args(extra);
    args[1] = "neighborhood";
    return args;
  }

  // Runs attnrun with `extra` and checks out and lse against the oracle of
  // `dims` (DESIGN §1 accuracy). Returns the oracle.
  template <std::size_t R>
  attn::ref::softmax_result expect_matches_oracle(
      const grid_problem& p, const std::vector<std::string>& extra,
      const std::array<neighborhood_dim, R>& dims,
      std::optional<double> scale = std::nullopt) const {
    const attn::ref::softmax_result want = neighborhood_oracle<R>(p, dims, scale);
    const run_result r = run(neighborhood_args(extra));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, "") << "attnrun prints nothing on stdout without --repeat";
    if (r.code != 0) return want;
    const npy::array out = npy::read(path("out.npy"));
    const npy::array lse = npy::read(path("lse.npy"));
    EXPECT_EQ(out.shape, p.out_shape());
    EXPECT_EQ(lse.shape, p.lse_shape());
    if (out.floats().size() != want.out.size() || lse.floats().size() != want.lse.size()) {
      ADD_FAILURE() << "out or lse of the wrong size";
      return want;
    }
    EXPECT_LE(relative_frobenius(out.floats(), want.out), 1e-5);
    for (std::size_t i = 0; i < want.out.size(); ++i)
      EXPECT_NEAR(out.floats()[i], want.out[i], 1e-4 * want.max_abs_v) << "out element " << i;
    for (std::size_t i = 0; i < want.lse.size(); ++i)
      EXPECT_NEAR(lse.floats()[i], want.lse[i], 1e-5 * (1 + std::abs(want.lse[i])))
          << "lse row " << i;
    // Every row sees some keys, and the neighborhood removed some pairs:
    // the case is not dense attention in disguise.
    const auto [fewest, most] = std::minmax_element(want.keys.begin(), want.keys.end());
    EXPECT_GT(*fewest, 0);
    EXPECT_LT(*fewest, p.tokens());
    return want;
  }
};

TEST_F(AttnrunNeighborhood, Rank1GqaMatchesTheOracle) {
  const grid_problem p(2, {23}, 4, 2, 8, 6, 21);  // Dk != Dv, two query heads per kv head
  write_problem(p);
  expect_matches_oracle<1>(p, {"--kernel", "5", "--dilation", "2", "--stride", "3"},
                           {neighborhood_dim{5, 2, 3, false}});
  expect_matches_oracle<1>(
      p, {"--kernel", "5", "--dilation", "2", "--stride", "3", "--causal-dims", "1"},
      {neighborhood_dim{5, 2, 3, true}});
  // K * D = L: the largest kernel the dilation allows.
  expect_matches_oracle<1>(p, {"--kernel", "11", "--dilation", "2"},
                           {neighborhood_dim{11, 2, 1, false}});
}

TEST_F(AttnrunNeighborhood, Float16InputsMatchTheOracle) {
  grid_problem p(2, {9, 11}, 4, 2, 8, 8, 24);  // q, k and v '<f2': stored and run as fp16
  write_half(path("q.npy"), p.q_shape(), p.q);
  write_half(path("k.npy"), p.k_shape(), p.k);
  write_half(path("v.npy"), p.v_shape(), p.v);
  expect_matches_oracle<2>(p, {"--kernel", "3,5", "--causal-dims", "0,1"},
                           {neighborhood_dim{3, 1, 1, false}, neighborhood_dim{5, 1, 1, true}});
  npy::write_f32(path("q.npy"), p.q_shape(), p.q);  // float32 q beside '<f2' k and v: widened
  expect_matches_oracle<2>(p, {"--kernel", "3,5"}, {neighborhood_dim{3}, neighborhood_dim{5}});
}

TEST_F(AttnrunNeighborhood, OutDtypeFloat16WritesHalves) {
  write_problem(grid_problem(2, {9, 11}, 4, 2, 8, 8, 25));
  expect_half_out(neighborhood_args({"--kernel", "3,5", "--causal-dims", "0,1"}));
}

TEST_F(AttnrunNeighborhood, Rank2MatchesTheOracle) {
  const grid_problem p(2, {9, 11}, 2, 2, 8, 8, 22);
  write_problem(p);
  expect_matches_oracle<2>(
      p, {"--kernel", "3,5", "--dilation", "2,1", "--stride", "1,5", "--causal-dims", "0,1"},
      {neighborhood_dim{3, 2, 1, false}, neighborhood_dim{5, 1, 5, true}});
  expect_matches_oracle<2>(
      p, {"--kernel=4,2", "--dilation=1,3", "--stride=2,2", "--causal-dims=1,0", "--threads=1"},
      {neighborhood_dim{4, 1, 2, true}, neighborhood_dim{2, 3, 2, false}});
}

TEST_F(AttnrunNeighborhood, Rank3MqaWithScaleMatchesTheOracle) {
  const grid_problem p(1, {4, 6, 7}, 3, 1, 4, 5, 23);  // one kv head for three query heads
  write_problem(p);
  const std::array<neighborhood_dim, 3> dims = {neighborhood_dim{2, 2, 2, true},
                                                neighborhood_dim{3, 2, 1, false},
                                                neighborhood_dim{4, 1, 3, false}};
  expect_matches_oracle<3>(p,
                           {"--kernel", "2,3,4", "--dilation", "2,2,1", "--stride", "2,1,3",
                            "--causal-dims", "1,0,0", "--scale", "0.7", "--threads", "2"},
                           dims, 0.7);
  expect_matches_oracle<3>(
      p,
      {"--kernel", "2,3,4", "--dilation", "2,2,1", "--stride", "2,1,3", "--causal-dims", "1,0,0"},
      dims);
}

TEST_F(AttnrunNeighborhood, MissingPerDimensionFlagsTakeTheirDefaults) {
  const grid_problem p(1, {7, 8}, 2, 1, 8, 8, 24);
  write_problem(p);
  // Only --kernel: dilation 1, stride 1, not causal in every dimension.
  expect_matches_oracle<2>(p, {"--kernel", "3,5"}, {neighborhood_dim{3}, neighborhood_dim{5}});
  const std::string implicit = read_bytes(path("out.npy"));
  expect_matches_oracle<2>(
      p, {"--kernel", "3,5", "--dilation", "1,1", "--stride", "1,1", "--causal-dims", "0,0"},
      {neighborhood_dim{3}, neighborhood_dim{5}});
  EXPECT_EQ(read_bytes(path("out.npy")), implicit) << "explicit defaults changed the result";
  // Each flag alone; the others keep their defaults.
  expect_matches_oracle<2>(p, {"--kernel", "3,4", "--dilation", "2,2"},
                           {neighborhood_dim{3, 2}, neighborhood_dim{4, 2}});
  expect_matches_oracle<2>(p, {"--kernel", "3,4", "--stride", "3,2"},
                           {neighborhood_dim{3, 1, 3}, neighborhood_dim{4, 1, 2}});
  expect_matches_oracle<2>(p, {"--kernel", "3,4", "--causal-dims", "0,1"},
                           {neighborhood_dim{3}, neighborhood_dim{4, 1, 1, true}});
}

TEST_F(AttnrunNeighborhood, OutWithoutLse) {
  const grid_problem p(1, {5, 6}, 2, 2, 4, 4, 25);
  write_problem(p);
  std::vector<std::string> args = neighborhood_args({"--kernel", "2,3"});
  args.erase(args.begin() + 10, args.begin() + 12);  // "--lse", path
  const run_result r = run(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const npy::array out = npy::read(path("out.npy"));
  EXPECT_EQ(out.shape, p.out_shape());
  const attn::ref::softmax_result want =
      neighborhood_oracle<2>(p, {neighborhood_dim{2}, neighborhood_dim{3}});
  EXPECT_LE(relative_frobenius(out.floats(), want.out), 1e-5);
  EXPECT_FALSE(fs::exists(path("lse.npy")));
}

TEST_F(AttnrunNeighborhood, RepeatCountsAllowedPairsOnly) {
  const grid_problem p(2, {8, 10}, 4, 2, 8, 6, 26);
  write_problem(p);
  const std::array<neighborhood_dim, 2> dims = {neighborhood_dim{3, 2, 1, false},
                                                neighborhood_dim{5, 1, 2, true}};
  const run_result r = run(neighborhood_args({"--kernel", "3,5", "--dilation", "2,1", "--stride",
                                              "1,2", "--causal-dims", "0,1", "--repeat", "3"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  const std::regex json(
      R"(^\{\s*"median_s"\s*:\s*([-+0-9.eE]+)\s*,\s*"gflops"\s*:\s*([-+0-9.eE]+)\s*\}\n$)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, json)) << r.out;
  const double median_s = std::stod(m[1].str()), gflops = std::stod(m[2].str());
  EXPECT_GT(median_s, 0.0);
  EXPECT_GT(gflops, 0.0);
  // The oracle's allowed keys per (b, query, head) row, summed: every pair the
  // kernel must compute, 2 x (Dk + Dv) FLOPs each.
  const attn::ref::softmax_result want = neighborhood_oracle<2>(p, dims);
  double pairs = 0;
  for (index_t n : want.keys) pairs += static_cast<double>(n);
  EXPECT_LT(pairs, static_cast<double>(p.b * p.hq * p.tokens() * p.tokens()));
  const double flops = pairs * 2 * static_cast<double>(p.dk + p.dv);
  EXPECT_NEAR(gflops * 1e9 * median_s, flops, 1e-3 * flops);
  // The outputs are still written, and correct.
  EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), want.out), 1e-5);
  EXPECT_EQ(npy::read(path("lse.npy")).shape, p.lse_shape());
}

// --- bad neighborhood command lines and inputs

class AttnrunNeighborhoodBadInput : public AttnrunNeighborhood {
 protected:
  // A valid problem on a 6 x 5 grid; each test breaks one thing.
  void SetUp() override {
    AttnrunNeighborhood::SetUp();
    AttnrunNeighborhood::write_problem(grid_problem(1, {6, 5}, 2, 2, 8, 8, 27));
  }
};

TEST_F(AttnrunNeighborhoodBadInput, TheFixtureRuns) {
  const run_result r = run(neighborhood_args({"--kernel", "3,3"}));
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST_F(AttnrunNeighborhoodBadInput, PerDimensionCountsMustMatchTheKernel) {
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--dilation", "2"}),
                            {"--dilation", "expects 2 values", "got 1"}, exit_usage);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--stride", "1,1,1"}),
                            {"--stride", "expects 2 values", "got 3"}, exit_usage);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3", "--causal-dims", "0,1"}),
                            {"--causal-dims", "expects 1 value", "got 2"}, exit_usage);
  expect_failure_mentioning(neighborhood_args({"--kernel", "2,2,2,2"}),
                            {"--kernel", "1 to 3 values", "got 4"}, exit_usage);
}

TEST_F(AttnrunNeighborhoodBadInput, MalformedPerDimensionValues) {
  expect_failure(neighborhood_args({}), "--kernel", exit_usage);  // --kernel is required
  for (const char* text : {"3,,3", "3,", ",3", "a", "3;3", "3.5", "3, 3", "99999999999"})
    expect_failure(neighborhood_args({"--kernel", text}), "--kernel", exit_usage);
  expect_failure(neighborhood_args({"--kernel", "3,3", "--dilation", "1,x"}), "--dilation",
                 exit_usage);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--causal-dims", "0,2"}),
                            {"--causal-dims", "0 or 1"}, exit_usage);
}

TEST_F(AttnrunNeighborhoodBadInput, InvalidParametersAreLibraryErrors) {
  // K < 2.
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,1"}),
                            {"dimension 1", "kernel", "K >= 2", "--kernel 3,1"}, exit_failure);
  expect_failure_mentioning(neighborhood_args({"--kernel", "-3,3"}),
                            {"dimension 0", "kernel", "--kernel -3,3"}, exit_failure);
  // S > K, and S < 1.
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--stride", "1,4"}),
                            {"dimension 1", "stride", "--stride 1,4"}, exit_failure);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--stride", "0,1"}),
                            {"dimension 0", "stride", "--stride 0,1"}, exit_failure);
  // D < 1.
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--dilation", "1,0"}),
                            {"dimension 1", "dilation", "--dilation 1,0"}, exit_failure);
  // K * D > L: 3 * 2 = 6 > 5 in the second dimension; 7 > 6 in the first.
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3", "--dilation", "1,2"}),
                            {"dimension 1", "K * D", "--kernel 3,3 --dilation 1,2"}, exit_failure);
  expect_failure_mentioning(neighborhood_args({"--kernel", "7,2"}),
                            {"dimension 0", "K * D", "--kernel 7,2"}, exit_failure);
}

TEST_F(AttnrunNeighborhoodBadInput, GridsOfQAndKvMustMatch) {
  const grid_problem other_grid(1, {6, 4}, 2, 2, 8, 8, 28);
  npy::write_f32(path("k.npy"), other_grid.k_shape(), other_grid.k);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3"}), {"--k", "grid", "(1, 6, 5)"},
                            exit_failure);
  const grid_problem p(1, {6, 5}, 2, 2, 8, 8, 27);
  npy::write_f32(path("k.npy"), p.k_shape(), p.k);
  const grid_problem other_batch(2, {6, 5}, 2, 2, 8, 8, 29);
  npy::write_f32(path("v.npy"), other_batch.v_shape(), other_batch.v);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3"}), {"--v", "grid"}, exit_failure);
  npy::write_f32(path("v.npy"), p.v_shape(), p.v);
  // Dk of k differs from q's; Hq = 2 is not a multiple of Hkv = 3 (library checks).
  const grid_problem other_dk(1, {6, 5}, 2, 2, 4, 8, 30);
  npy::write_f32(path("k.npy"), other_dk.k_shape(), other_dk.k);
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3"}), {"k:", "shape"}, exit_failure);
  const grid_problem three_kv_heads(1, {6, 5}, 2, 3, 8, 8, 31);
  npy::write_f32(path("k.npy"), three_kv_heads.k_shape(), three_kv_heads.k);
  npy::write_f32(path("v.npy"), three_kv_heads.v_shape(), three_kv_heads.v);
  expect_failure(neighborhood_args({"--kernel", "3,3"}), "GQA", exit_failure);
}

TEST_F(AttnrunNeighborhoodBadInput, InputRankMustFollowTheKernel) {
  // Rank 5 files, a kernel of 1 or 3 values.
  expect_failure_mentioning(neighborhood_args({"--kernel", "3"}),
                            {"--q", "rank 4", "(B, X, Hq, Dk)", "(1, 6, 5, 2, 8)"}, exit_failure);
  expect_failure_mentioning(neighborhood_args({"--kernel", "2,2,2"}),
                            {"--q", "rank 6", "(B, X, Y, Z, Hq, Dk)"}, exit_failure);
  // One file of the wrong rank.
  npy::write_f32(path("v.npy"), std::vector<std::int64_t>{1, 30, 2, 8}, std::vector<float>(480));
  expect_failure_mentioning(neighborhood_args({"--kernel", "3,3"}), {"--v", "rank 5"},
                            exit_failure);
}

TEST_F(AttnrunNeighborhoodBadInput, FlagsOfOtherVariantsAreRefused) {
  const std::vector<std::vector<std::string>> others = {
      {"--causal"},         {"--window", "3,3"},   {"--sink-tokens", "2"}, {"--sinks", "s.npy"},
      {"--softcap", "2"},   {"--alibi"},           {"--bias", "b.npy"},    {"--doc", "d.npy"},
      {"--block", "16,16"}, {"--layout", "l.npy"}, {"--topk", "2"},        {"--feature", "relu"},
      {"--normalize"},      {"--decay", "d.npy"},  {"--dv", "4"}};
  for (const auto& flag : others) {
    std::vector<std::string> extra = {"--kernel", "3,3"};
    extra.insert(extra.end(), flag.begin(), flag.end());
    expect_failure(neighborhood_args(extra), flag[0] + " does not apply to --variant neighborhood",
                   exit_usage);
  }
  expect_failure(neighborhood_args({"--kernel", "3,3", "--causal"}), "--causal-dims", exit_usage);
}

TEST_F(AttnrunNeighborhoodBadInput, OutAndLseNameTheSameFile) {
  std::vector<std::string> args = neighborhood_args({"--kernel", "3,3"});
  args[11] = path("out.npy").string();
  expect_failure(args, "same file", exit_usage);
}

}  // namespace attnrun_test

namespace attnrun_test {

// --variant block_sparse (DESIGN §2 and §4): explicit layouts against the
// fp64 oracle of the layout predicate, MoBA against the library's
// attn::moba_attention and against the oracle of its gate's selection, the
// --repeat FLOP count of the selected pairs, and bad command lines and inputs.

using attn::index_t;

// A block layout (heads, nbq, nbk) of 0/1 in C order for blocks of bq
// queries and bk keys; heads is Hq or 1 (shared by every head).
struct layout_blocks {
  std::int64_t heads, nbq, nbk, bq, bk;
  std::vector<std::uint8_t> blocks;

  layout_blocks(std::int64_t heads_, std::int64_t nq, std::int64_t nk, std::int64_t bq_,
                std::int64_t bk_, unsigned seed)
      : heads(heads_), nbq((nq + bq_ - 1) / bq_), nbk((nk + bk_ - 1) / bk_), bq(bq_), bk(bk_) {
    std::mt19937 gen(seed);
    std::bernoulli_distribution half(0.5);
    blocks.resize(static_cast<std::size_t>(heads * nbq * nbk));
    for (std::uint8_t& x : blocks) x = half(gen) ? 1 : 0;
  }
  std::vector<std::int64_t> shape() const { return {heads, nbq, nbk}; }
  std::uint8_t& at(std::int64_t h, std::int64_t qb, std::int64_t kb) {
    return blocks[static_cast<std::size_t>((h * nbq + qb) * nbk + kb)];
  }
  // Key j for query i of head h: DESIGN §2 written out.
  bool selects(std::int64_t h, std::int64_t i, std::int64_t j) const {
    const std::int64_t lh = heads == 1 ? 0 : h;
    return blocks[static_cast<std::size_t>((lh * nbq + i / bq) * nbk + j / bk)] != 0;
  }
};

// A .npy of `descr` (e.g. '|u1') holding `data`, written byte by byte.
void write_npy(const fs::path& p, const std::vector<std::int64_t>& shape, std::string_view descr,
               const std::string& data) {
  write_bytes(p, npy_bytes(f4_dict(npy::shape_string(shape), descr), data));
}

void write_layout(const fs::path& p, const layout_blocks& l) {
  write_npy(p, l.shape(), "|u1", le_bytes(l.blocks));
}

attn::ref::softmax_result oracle_of(const problem& p, const attn::ref::pair_predicate& allowed,
                                    std::optional<double> scale = std::nullopt) {
  const auto identity = [](double s, index_t, index_t, index_t, index_t) { return s; };
  return attn::ref::softmax_attention(attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
                                      attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
                                      attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv),
                                      scale.value_or(1 / std::sqrt(static_cast<double>(p.dk))),
                                      nullptr, allowed, identity);
}

// The fp64 oracle of a layout: key j allowed for query i of head h iff its
// block is selected and, with causal, j <= i + Nk - Nq.
attn::ref::softmax_result layout_oracle(const problem& p, const layout_blocks& l, bool causal,
                                        std::optional<double> scale = std::nullopt) {
  const std::int64_t off = p.nk - p.nq;
  return oracle_of(
      p,
      [&l, causal, off](index_t, index_t h, index_t i, index_t j) {
        return (!causal || j <= i + off) && l.selects(h, i, j);
      },
      scale);
}

// The library's MoBA gate on the problem, and the fp64 oracle of the pairs it
// selects: the selected blocks' keys, causal inside the query's own block.
attn::moba_selection gate_of(const problem& p, index_t block, index_t topk) {
  return attn::moba_gate(attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
                         attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
                         attn::moba_options{block, topk, std::nullopt});
}

attn::ref::softmax_result moba_oracle(const problem& p, const attn::moba_selection& sel,
                                      index_t block) {
  const std::int64_t off = p.nk - p.nq;
  return oracle_of(p, [&sel, block, off](index_t b, index_t h, index_t i, index_t j) {
    if (j > i + off) return false;
    for (const std::int32_t c : sel(b, h, i))
      if (c == j / block) return true;
    return false;
  });
}

double pairs_of(const attn::ref::softmax_result& r) {
  double pairs = 0;
  for (const index_t n : r.keys) pairs += static_cast<double>(n);
  return pairs;
}

// The FLOPs of the --repeat JSON line: gflops x 1e9 x median_s.
std::optional<double> reported_flops(const run_result& r) {
  const std::regex json(
      R"(^\{\s*"median_s"\s*:\s*([-+0-9.eE]+)\s*,\s*"gflops"\s*:\s*([-+0-9.eE]+)\s*\}\n$)");
  std::smatch m;
  if (!std::regex_match(r.out, m, json)) return std::nullopt;
  const double median_s = std::stod(m[1].str()), gflops = std::stod(m[2].str());
  EXPECT_GT(median_s, 0.0);
  EXPECT_GT(gflops, 0.0);
  return gflops * 1e9 * median_s;
}

class AttnrunBlockSparse : public AttnrunTest {
 protected:
  // --variant block_sparse with q/k/v/out/lse in the test directory, then `extra`.
  std::vector<std::string> block_sparse_args(const std::vector<std::string>& extra) const {
    std::vector<std::string> args = softmax_args(extra);
    args[1] = "block_sparse";
    return args;
  }
  std::string layout_path() const { return path("layout.npy").string(); }

  // Runs attnrun with `extra` and checks out and lse against `want` (DESIGN
  // §1 accuracy; an empty row is out 0, lse -inf).
  void expect_matches(const problem& p, const std::vector<std::string>& extra,
                      const attn::ref::softmax_result& want) const {
    const run_result r = run(block_sparse_args(extra));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, "") << "attnrun prints nothing on stdout without --repeat";
    const npy::array out = npy::read(path("out.npy"));
    const npy::array lse = npy::read(path("lse.npy"));
    ASSERT_EQ(out.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq, p.dv}));
    ASSERT_EQ(lse.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq}));
    ASSERT_EQ(out.floats().size(), want.out.size());
    ASSERT_EQ(lse.floats().size(), want.lse.size());
    EXPECT_LE(relative_frobenius(out.floats(), want.out), 1e-5);
    for (std::size_t i = 0; i < want.out.size(); ++i)
      EXPECT_NEAR(out.floats()[i], want.out[i], 1e-4 * want.max_abs_v) << "out element " << i;
    for (std::size_t i = 0; i < want.lse.size(); ++i) {
      const double got = lse.floats()[i], ref = want.lse[i];
      if (std::isinf(ref)) {
        EXPECT_EQ(got, ref) << "lse row " << i;
      } else {
        EXPECT_NEAR(got, ref, 1e-5 * (1 + std::abs(ref))) << "lse row " << i;
      }
    }
  }

  // The oracle removed some pairs of some rows but not of every row: the
  // case is neither dense attention nor empty.
  static void expect_sparse(const attn::ref::softmax_result& want, std::int64_t nk) {
    const auto [fewest, most] = std::minmax_element(want.keys.begin(), want.keys.end());
    EXPECT_LT(*fewest, nk);
    EXPECT_GT(*most, 0);
  }
};

TEST_F(AttnrunBlockSparse, PerHeadLayoutWithGqaMatchesTheOracle) {
  // BQ = 3 and BK = 5 divide neither Nq = 13 nor Nk = 22; Nq != Nk; Dk != Dv;
  // two query heads per kv head, each with its own layout.
  const problem p(2, 13, 22, 4, 2, 8, 6, 41);
  write_problem(p);
  layout_blocks l(4, p.nq, p.nk, 3, 5, 42);
  // Head 1's query block 2 selects nothing (empty rows: out 0, lse -inf);
  // head 2's query block 0 selects the short last key block.
  for (std::int64_t kb = 0; kb < l.nbk; ++kb) l.at(1, 2, kb) = 0;
  l.at(2, 0, 4) = 1;
  write_layout(path("layout.npy"), l);
  const attn::ref::softmax_result plain = layout_oracle(p, l, false);
  expect_sparse(plain, p.nk);
  EXPECT_EQ(*std::min_element(plain.keys.begin(), plain.keys.end()), 0);
  expect_matches(p, {"--block", "3,5", "--layout", layout_path()}, plain);
  const attn::ref::softmax_result causal = layout_oracle(p, l, true);
  expect_sparse(causal, p.nk);
  EXPECT_LT(pairs_of(causal), pairs_of(plain));
  expect_matches(p, {"--block=3,5", "--layout=" + layout_path(), "--causal"}, causal);
}

TEST_F(AttnrunBlockSparse, Float16InputsWithALayoutMatchTheOracle) {
  problem p(1, 13, 22, 4, 2, 8, 8, 44);
  write_half(path("q.npy"), p.q_shape(), p.q);
  write_half(path("k.npy"), p.k_shape(), p.k);
  write_half(path("v.npy"), p.v_shape(), p.v);
  layout_blocks l(4, p.nq, p.nk, 3, 5, 45);
  write_layout(path("layout.npy"), l);
  expect_matches(p, {"--block", "3,5", "--layout", layout_path(), "--causal"}, layout_oracle(p, l, true));
}

TEST_F(AttnrunBlockSparse, Float16InputsWithMobaMatchTheOracleOfItsGate) {
  problem p(2, 40, 64, 4, 2, 8, 6, 53);
  write_half(path("q.npy"), p.q_shape(), p.q);  // p now holds the halves' values
  write_half(path("k.npy"), p.k_shape(), p.k);
  write_half(path("v.npy"), p.v_shape(), p.v);
  expect_matches(p, {"--block", "8", "--topk", "3"}, moba_oracle(p, gate_of(p, 8, 3), 8));
}

TEST_F(AttnrunBlockSparse, OutDtypeFloat16WritesHalves) {
  const problem p(1, 13, 22, 4, 2, 8, 8, 46);
  write_problem(p);
  const layout_blocks l(4, p.nq, p.nk, 3, 5, 47);
  write_layout(path("layout.npy"), l);
  expect_half_out(block_sparse_args({"--block", "3,5", "--layout", layout_path(), "--causal"}));
  expect_half_out(block_sparse_args({"--block", "4", "--topk", "2"}));
}

TEST_F(AttnrunBlockSparse, SharedLayoutWithMoreQueriesThanKeysMatchesTheOracle) {
  // off = Nk - Nq = -8: with causal, queries 0..7 see no key.
  const problem p(1, 19, 11, 3, 3, 8, 8, 43);
  write_problem(p);
  layout_blocks l(1, p.nq, p.nk, 4, 3, 44);
  for (std::int64_t qb = 0; qb < l.nbq; ++qb) l.at(0, qb, qb % l.nbk) = 1;  // no empty query block
  write_layout(path("layout.npy"), l);
  const attn::ref::softmax_result plain = layout_oracle(p, l, false);
  expect_sparse(plain, p.nk);
  expect_matches(p, {"--block", "4,3", "--layout", layout_path()}, plain);
  const attn::ref::softmax_result causal = layout_oracle(p, l, true);
  for (std::int64_t i = 0; i < 8; ++i)
    for (std::int64_t h = 0; h < p.hq; ++h) EXPECT_EQ(causal.keys[causal.row_index(0, i, h)], 0);
  expect_matches(p, {"--block", "4,3", "--layout", layout_path(), "--causal"}, causal);
  const npy::array out = npy::read(path("out.npy"));
  for (std::size_t e = 0; e < static_cast<std::size_t>(8 * p.hq * p.dv); ++e)
    EXPECT_EQ(out.floats()[e], 0.0f) << "an empty row's out is 0";
}

TEST_F(AttnrunBlockSparse, OneBlockValueScaleThreadsAndManyTiles) {
  // MQA, blocks larger and smaller than the core's tiles, several tiles.
  const problem p(1, 100, 150, 4, 1, 16, 16, 45);
  write_problem(p);
  layout_blocks l(4, p.nq, p.nk, 24, 24, 46);
  write_layout(path("layout.npy"), l);
  const attn::ref::softmax_result want = layout_oracle(p, l, true, 0.4);
  expect_sparse(want, p.nk);
  expect_matches(
      p,
      {"--block", "24", "--layout", layout_path(), "--causal", "--scale", "0.4", "--threads", "2"},
      want);
  const std::string one_value = read_bytes(path("out.npy"));
  expect_matches(p,
                 {"--block", "24,24", "--layout", layout_path(), "--causal", "--scale", "0.4",
                  "--threads", "1"},
                 want);
  EXPECT_EQ(read_bytes(path("out.npy")), one_value) << "--block 24 differs from --block 24,24";

  layout_blocks small(1, p.nq, p.nk, 7, 40, 47);
  write_layout(path("layout.npy"), small);
  expect_matches(p, {"--block", "7,40", "--layout", layout_path()}, layout_oracle(p, small, false));
}

TEST_F(AttnrunBlockSparse, LayoutOutWithoutLse) {
  const problem p(1, 9, 9, 2, 2, 4, 4, 48);
  write_problem(p);
  layout_blocks l(2, p.nq, p.nk, 2, 2, 49);
  write_layout(path("layout.npy"), l);
  std::vector<std::string> args = block_sparse_args({"--block", "2", "--layout", layout_path()});
  args.erase(args.begin() + 10, args.begin() + 12);  // "--lse", path
  const run_result r = run(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), layout_oracle(p, l, false).out),
            1e-5);
  EXPECT_FALSE(fs::exists(path("lse.npy")));
}

TEST_F(AttnrunBlockSparse, MobaMatchesTheLibraryAndTheOracleOfItsGate) {
  const problem p(2, 40, 64, 4, 2, 8, 6, 50);  // GQA, Nq != Nk, 8 key blocks of 8
  write_problem(p);
  const attn::moba_selection sel = gate_of(p, 8, 3);
  const attn::ref::softmax_result want = moba_oracle(p, sel, 8);
  // The gate dropped some past blocks: not causal attention in disguise.
  const attn::ref::softmax_result causal = oracle_of(
      p, [off = p.nk - p.nq](index_t, index_t, index_t i, index_t j) { return j <= i + off; });
  EXPECT_LT(pairs_of(want), pairs_of(causal));
  expect_matches(p, {"--block", "8", "--topk", "3"}, want);

  // The library on the same inputs, in this process.
  std::vector<float> out(static_cast<std::size_t>(p.b * p.nq * p.hq * p.dv));
  std::vector<float> lse(static_cast<std::size_t>(p.b * p.nq * p.hq));
  attn::moba_attention(attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
                       attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
                       attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv),
                       attn::bshd(out.data(), p.b, p.nq, p.hq, p.dv),
                       attn::bsh(lse.data(), p.b, p.nq, p.hq), attn::moba_options{8, 3, {}});
  const std::vector<float> got_out = npy::read(path("out.npy")).floats();
  const std::vector<float> got_lse = npy::read(path("lse.npy")).floats();
  ASSERT_EQ(got_out.size(), out.size());
  ASSERT_EQ(got_lse.size(), lse.size());
  for (std::size_t e = 0; e < out.size(); ++e)
    EXPECT_NEAR(got_out[e], out[e], 1e-6 * (1 + std::abs(out[e]))) << "out element " << e;
  for (std::size_t e = 0; e < lse.size(); ++e)
    EXPECT_NEAR(got_lse[e], lse[e], 1e-6 * (1 + std::abs(lse[e]))) << "lse row " << e;

  // MoBA is causal by definition: --causal changes nothing, nor does B,B.
  const std::string plain = read_bytes(path("out.npy"));
  expect_matches(p, {"--block", "8,8", "--topk", "3", "--causal", "--threads", "1"}, want);
  EXPECT_EQ(read_bytes(path("out.npy")), plain);
}

TEST_F(AttnrunBlockSparse, MobaSelectingEveryBlockIsCausalAttention) {
  // Nk <= block * topk: every past block is selected (DESIGN §2).
  for (const auto& [p, block, topk] : {std::tuple{problem(1, 10, 24, 2, 1, 8, 8, 51), "8", "3"},
                                       std::tuple{problem(2, 20, 20, 2, 2, 8, 4, 52), "7", "3"},
                                       std::tuple{problem(1, 6, 5, 3, 1, 4, 4, 53), "2", "9"}}) {
    write_problem(p);
    const attn::ref::softmax_result causal = oracle_of(
        p, [off = p.nk - p.nq](index_t, index_t, index_t i, index_t j) { return j <= i + off; });
    expect_matches(p, {"--block", block, "--topk", topk}, causal);
  }
}

TEST_F(AttnrunBlockSparse, RepeatCountsTheLayoutsPairs) {
  const problem p(2, 30, 37, 4, 2, 8, 6, 54);
  write_problem(p);
  layout_blocks l(4, p.nq, p.nk, 4, 6, 55);
  write_layout(path("layout.npy"), l);
  for (const bool causal : {false, true}) {
    std::vector<std::string> extra = {"--block", "4,6", "--layout", layout_path(), "--repeat", "3"};
    if (causal) extra.push_back("--causal");
    const run_result r = run(block_sparse_args(extra));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    const std::optional<double> flops = reported_flops(r);
    ASSERT_TRUE(flops) << r.out;
    // The oracle's allowed keys of every (b, query, head) row, summed, at
    // 2 x (Dk + Dv) FLOPs each; exact, so a tight tolerance (%.9g output).
    const attn::ref::softmax_result want = layout_oracle(p, l, causal);
    const double pairs = pairs_of(want);
    EXPECT_LT(pairs, static_cast<double>(p.b * p.hq * p.nq * p.nk));
    const double expected = pairs * 2 * static_cast<double>(p.dk + p.dv);
    EXPECT_NEAR(*flops, expected, 1e-7 * expected) << (causal ? "causal" : "not causal");
    EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), want.out), 1e-5);
    EXPECT_TRUE(fs::exists(path("lse.npy")));
  }
  // A shared layout counts its pairs once per query head.
  layout_blocks shared(1, p.nq, p.nk, 4, 6, 56);
  write_layout(path("layout.npy"), shared);
  const run_result r =
      run(block_sparse_args({"--block", "4,6", "--layout", layout_path(), "--repeat", "2"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::optional<double> flops = reported_flops(r);
  ASSERT_TRUE(flops) << r.out;
  const double expected =
      pairs_of(layout_oracle(p, shared, false)) * 2 * static_cast<double>(p.dk + p.dv);
  EXPECT_NEAR(*flops, expected, 1e-7 * expected);
}

TEST_F(AttnrunBlockSparse, RepeatCountsTheGatesPairs) {
  const problem p(1, 50, 70, 4, 2, 8, 8, 57);
  write_problem(p);
  const run_result r = run(block_sparse_args({"--block", "8", "--topk", "3", "--repeat", "3"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const std::optional<double> flops = reported_flops(r);
  ASSERT_TRUE(flops) << r.out;
  const attn::ref::softmax_result want = moba_oracle(p, gate_of(p, 8, 3), 8);
  const double pairs = pairs_of(want);
  // Own block causally plus at most two whole past blocks per row.
  EXPECT_LT(pairs, static_cast<double>(p.b * p.hq * p.nq * p.nk) / 2);
  const double expected = pairs * 2 * static_cast<double>(p.dk + p.dv);
  EXPECT_NEAR(*flops, expected, 1e-7 * expected);
  EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), want.out), 1e-5);
}

// --- bad block_sparse command lines and inputs

class AttnrunBlockSparseBadInput : public AttnrunBlockSparse {
 protected:
  // A valid problem (Hq = 4, Nq = 10, Nk = 12) and a valid per-head layout
  // for --block 4,5: (4, 3, 3). Each test breaks one thing.
  void SetUp() override {
    AttnrunBlockSparse::SetUp();
    write_problem(problem(1, 10, 12, 4, 2, 8, 8, 58));
    write_layout(path("layout.npy"), layout_blocks(4, 10, 12, 4, 5, 59));
  }
  std::vector<std::string> layout_args(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"--block", "4,5", "--layout", layout_path()};
    args.insert(args.end(), extra.begin(), extra.end());
    return block_sparse_args(args);
  }
  std::vector<std::string> moba_args(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"--block", "4", "--topk", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return block_sparse_args(args);
  }
};

TEST_F(AttnrunBlockSparseBadInput, TheFixtureRuns) {
  EXPECT_EQ(run(layout_args()).code, 0);
  EXPECT_EQ(run(moba_args()).code, 0);
}

TEST_F(AttnrunBlockSparseBadInput, ExactlyOneOfLayoutAndTopk) {
  expect_failure_mentioning(layout_args({"--topk", "2"}), {"--layout", "--topk", "not both"},
                            exit_usage);
  expect_failure_mentioning(block_sparse_args({"--block", "4,5"}), {"--layout", "--topk"},
                            exit_usage);
}

TEST_F(AttnrunBlockSparseBadInput, BlockIsRequired) {
  expect_failure_mentioning(block_sparse_args({"--layout", layout_path()}), {"missing", "--block"},
                            exit_usage);
  expect_failure_mentioning(block_sparse_args({"--topk", "2"}), {"missing", "--block"}, exit_usage);
}

TEST_F(AttnrunBlockSparseBadInput, MalformedBlock) {
  for (const char* text : {"4,", ",4", "a", "4;5", "4.5", "0", "4,0", "-4,4", "4,-5", "4,5,6",
                           "4, 5", "+4", "99999999999"}) {
    expect_failure(block_sparse_args({"--block", text, "--layout", layout_path()}), "--block",
                   exit_usage);
    expect_failure(block_sparse_args({"--block", text, "--topk", "2"}), "--block", exit_usage);
  }
  expect_failure(block_sparse_args({"--layout", layout_path(), "--block"}), "--block", exit_usage);
}

TEST_F(AttnrunBlockSparseBadInput, MobaHasOneBlockSize) {
  expect_failure_mentioning(block_sparse_args({"--block", "4,8", "--topk", "2"}),
                            {"--block", "--topk", "MoBA", "one block size"}, exit_usage);
}

TEST_F(AttnrunBlockSparseBadInput, TopkIsAPositiveInteger) {
  for (const char* text : {"0", "-1", "x", "2.5", "2,2", "99999999999"})
    expect_failure_mentioning(block_sparse_args({"--block", "4", "--topk", text}),
                              {"--topk", "positive integer"}, exit_usage);
}

TEST_F(AttnrunBlockSparseBadInput, LayoutMustBeUint8) {
  const std::vector<std::int64_t> shape = {4, 3, 3};
  npy::write_f32(path("layout.npy"), shape, std::vector<float>(36, 1.0f));
  expect_failure_mentioning(layout_args(), {"--layout", "dtype '<f4'", "uint8"}, exit_failure);
  write_npy(path("layout.npy"), shape, "<i4", le_bytes(std::vector<std::int32_t>(36, 1)));
  expect_failure_mentioning(layout_args(), {"--layout", "dtype '<i4'", "uint8"}, exit_failure);
  // bool is refused too (save the layout with .astype(np.uint8)).
  write_npy(path("layout.npy"), shape, "|b1", std::string(36, '\x01'));
  expect_failure_mentioning(layout_args(), {"--layout", "dtype '|b1'"}, exit_failure);
}

TEST_F(AttnrunBlockSparseBadInput, LayoutMustHaveTheBlockShape) {
  // One query block too many: expected (Hq|1, nbq, nbk) = (4|1, 3, 3).
  write_layout(path("layout.npy"), layout_blocks(4, 13, 12, 4, 5, 60));
  expect_failure_mentioning(layout_args(), {"--layout", "(4|1, 3, 3)", "got (4, 4, 3)"},
                            exit_failure);
  // Heads neither Hq nor 1 (Hkv is not a layout's head count).
  write_layout(path("layout.npy"), layout_blocks(2, 10, 12, 4, 5, 61));
  expect_failure_mentioning(layout_args(), {"--layout", "(4|1, 3, 3)", "got (2, 3, 3)"},
                            exit_failure);
  // A valid layout for other block sizes.
  write_layout(path("layout.npy"), layout_blocks(4, 10, 12, 4, 5, 62));
  expect_failure_mentioning(block_sparse_args({"--block", "4,6", "--layout", layout_path()}),
                            {"--layout", "(4|1, 3, 2)", "--block 4,6", "got (4, 3, 3)"},
                            exit_failure);
  expect_failure_mentioning(block_sparse_args({"--block", "5", "--layout", layout_path()}),
                            {"--layout", "(4|1, 2, 3)", "--block 5,5"}, exit_failure);
}

TEST_F(AttnrunBlockSparseBadInput, LayoutMustHaveRank3) {
  write_npy(path("layout.npy"), {3, 3}, "|u1", std::string(9, '\x01'));
  expect_failure_mentioning(layout_args(), {"--layout", "rank 3", "got shape (3, 3)"},
                            exit_failure);
  write_npy(path("layout.npy"), {1, 4, 3, 3}, "|u1", std::string(36, '\x01'));
  expect_failure_mentioning(layout_args(), {"--layout", "rank 3", "(1, 4, 3, 3)"}, exit_failure);
}

TEST_F(AttnrunBlockSparseBadInput, MissingOrMalformedLayoutFile) {
  fs::remove(path("layout.npy"));
  expect_failure_mentioning(layout_args(), {"--layout", "layout.npy"}, exit_failure);
  write_bytes(path("layout.npy"), "not a numpy file");
  expect_failure_mentioning(layout_args(), {"--layout", "magic"}, exit_failure);
}

TEST_F(AttnrunBlockSparseBadInput, ShapesOfQkvAreChecked) {
  const problem other_dk(1, 10, 12, 4, 2, 6, 8, 63);
  npy::write_f32(path("k.npy"), other_dk.k_shape(), other_dk.k);
  expect_failure_mentioning(layout_args(), {"k:", "shape"}, exit_failure);
  expect_failure_mentioning(moba_args(), {"k:", "shape"}, exit_failure);
  const problem three_kv_heads(1, 10, 12, 4, 3, 8, 8, 64);
  npy::write_f32(path("k.npy"), three_kv_heads.k_shape(), three_kv_heads.k);
  npy::write_f32(path("v.npy"), three_kv_heads.v_shape(), three_kv_heads.v);
  expect_failure(layout_args(), "GQA", exit_failure);
  expect_failure(moba_args(), "GQA", exit_failure);
  npy::write_f32(path("q.npy"), std::vector<std::int64_t>{10, 32}, std::vector<float>(320));
  expect_failure_mentioning(moba_args(), {"--q", "rank"}, exit_failure);
}

TEST_F(AttnrunBlockSparseBadInput, FlagsOfOtherVariantsAreRefused) {
  const std::vector<std::vector<std::string>> others = {
      {"--kernel", "7"},   {"--dilation", "2"},    {"--stride", "1"},    {"--causal-dims", "0"},
      {"--window", "3,3"}, {"--sink-tokens", "2"}, {"--sinks", "s.npy"}, {"--softcap", "2"},
      {"--alibi"},         {"--bias", "b.npy"},    {"--doc", "d.npy"},   {"--feature", "relu"},
      {"--normalize"},     {"--decay", "d.npy"},   {"--dv", "4"}};
  for (const auto& flag : others) {
    const std::string message = flag[0] + " does not apply to --variant block_sparse";
    expect_failure(layout_args(flag), message, exit_usage);
    expect_failure(moba_args(flag), message, exit_usage);
  }
  expect_failure_mentioning(layout_args({"--kernel", "7", "--causal"}),
                            {"--kernel", "only to neighborhood"}, exit_usage);
}

TEST_F(AttnrunBlockSparseBadInput, OutAndLseNameTheSameFile) {
  std::vector<std::string> args = layout_args();
  args[11] = path("out.npy").string();
  expect_failure(args, "same file", exit_usage);
}

}  // namespace attnrun_test

namespace attnrun_test {

// --variant linear (DESIGN §2 and §4): each feature map, --normalize,
// --decay with --causal, non-causal, GQA and MQA against an fp64 oracle of
// the formula and against attn::linear_attention called in this process; the
// --repeat FLOP count of bench/flops.hpp; and bad command lines and inputs.

using attn::index_t;

// The fp64 oracle of tests/reference/linear_reference.hpp with the map the
// options name.
std::vector<double> linear_oracle(const problem& p, const attn::linear_options& opt) {
  std::vector<double> out;
  attn::detail::with_feature(opt.feature, [&](const auto& phi) {
    out = attn::ref::linear_reference(attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
                                      attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
                                      attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv),
                                      phi, opt)
              .out;
  });
  return out;
}

// attn::linear_attention on the problem, in this process.
std::vector<float> linear_library(const problem& p, const attn::linear_options& opt) {
  std::vector<float> out(static_cast<std::size_t>(p.b * p.nq * p.hq * p.dv));
  attn::linear_attention(attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
                         attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
                         attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv),
                         attn::bshd(out.data(), p.b, p.nq, p.hq, p.dv), opt);
  return out;
}

// RetNet's per-head decays, 1 - 2^(-5 - h).
std::vector<float> retnet_decay(std::int64_t heads) {
  std::vector<float> decay(static_cast<std::size_t>(heads));
  for (std::size_t h = 0; h < decay.size(); ++h)
    decay[h] = 1.0f - std::ldexp(1.0f, -5 - static_cast<int>(h));
  return decay;
}

struct named_feature {
  const char* flag;
  attn::feature_kind kind;
};
constexpr named_feature features[] = {{"identity", attn::feature_kind::identity},
                                      {"elu1", attn::feature_kind::elu_plus_one},
                                      {"relu", attn::feature_kind::relu}};

class AttnrunLinear : public AttnrunTest {
 protected:
  // --variant linear with q/k/v/out in the test directory, then `extra`.
  std::vector<std::string> linear_args(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = softmax_args(extra);
    args[1] = "linear";
    args.erase(args.begin() + 10, args.begin() + 12);  // "--lse", path: linear has none
    return args;
  }
  std::string decay_path() const { return path("decay.npy").string(); }
  void write_decay(const std::vector<float>& decay) const {
    npy::write_f32(path("decay.npy"), std::vector<std::int64_t>{std::ssize(decay)}, decay);
  }

  // Runs attnrun with `extra`, the flags of `opt`, and checks out against
  // the library run in this process (the same kernels: equal up to rounding)
  // and, with `oracle`, against the fp64 oracle (relative Frobenius 1e-5,
  // max abs error 1e-4 x max |ref|). Returns out.
  std::vector<float> expect_matches(const problem& p, const std::vector<std::string>& extra,
                                    const attn::linear_options& opt, bool oracle = true) const {
    const run_result r = run(linear_args(extra));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, "") << "attnrun prints nothing on stdout without --repeat";
    if (r.code != 0) return {};
    EXPECT_FALSE(fs::exists(path("lse.npy")));
    const npy::array file = npy::read(path("out.npy"));
    EXPECT_EQ(file.shape, (std::vector<std::int64_t>{p.b, p.nq, p.hq, p.dv}));
    const std::vector<float> got = file.floats();
    const std::vector<float> library = linear_library(p, opt);
    if (got.size() != library.size()) {
      ADD_FAILURE() << "out of the wrong size";
      return got;
    }
    for (std::size_t e = 0; e < got.size(); ++e)
      EXPECT_NEAR(got[e], library[e], 1e-6 * (1 + std::abs(library[e]))) << "out element " << e;
    if (oracle) {
      const std::vector<double> want = linear_oracle(p, opt);
      double max_abs = 0;
      for (const double x : want) max_abs = std::max(max_abs, std::abs(x));
      EXPECT_GT(max_abs, 0.0);
      EXPECT_LE(relative_frobenius(got, want), 1e-5);
      for (std::size_t e = 0; e < want.size(); ++e)
        EXPECT_NEAR(got[e], want[e], 1e-4 * max_abs) << "out element " << e;
    }
    return got;
  }
};

TEST_F(AttnrunLinear, EachFeatureCausalAndNotMatchesTheOracle) {
  // GQA, Dk != Dv, Nq < Nk (bottom-right aligned), several chunks of keys.
  const problem p(2, 90, 150, 4, 2, 8, 6, 70);
  write_problem(p);
  for (const named_feature& f : features)
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(std::string(f.flag) + (causal ? ", causal" : ""));
      attn::linear_options opt;
      opt.feature = f.kind;
      opt.causal = causal;
      std::vector<std::string> extra = {"--feature", f.flag};
      if (causal) extra.push_back("--causal");
      expect_matches(p, extra, opt);
    }
}

TEST_F(AttnrunLinear, DefaultFeatureIsIdentity) {
  const problem p(1, 20, 20, 2, 2, 8, 8, 71);
  write_problem(p);
  attn::linear_options opt;
  opt.causal = true;
  const std::vector<float> implicit = expect_matches(p, {"--causal"}, opt);
  EXPECT_EQ(expect_matches(p, {"--causal", "--feature=identity"}, opt), implicit);
}

TEST_F(AttnrunLinear, NormalizeMatchesTheOracle) {
  const problem p(1, 70, 70, 4, 1, 8, 8, 72);  // MQA
  write_problem(p);
  // Positive features: the normaliser stays away from zero.
  for (const named_feature& f : {features[1], features[2]})
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(std::string(f.flag) + (causal ? ", causal" : ""));
      attn::linear_options opt;
      opt.feature = f.kind;
      opt.causal = causal;
      opt.normalize = true;
      std::vector<std::string> extra = {"--feature", f.flag, "--normalize"};
      if (causal) extra.push_back("--causal");
      const std::vector<float> got = expect_matches(p, extra, opt);
      // A weighted mean of the values (the weights are >= 0): within their range.
      const auto [lo, hi] = std::minmax_element(p.v.begin(), p.v.end());
      for (const float x : got) {
        EXPECT_GE(x, *lo - 1e-5f);
        EXPECT_LE(x, *hi + 1e-5f);
      }
    }
  // Identity features can make the normaliser small or negative (DESIGN §2):
  // the flag reaches the library, compared with it only.
  attn::linear_options opt;
  opt.normalize = true;
  opt.causal = true;
  expect_matches(p, {"--normalize", "--causal"}, opt, /*oracle=*/false);
}

TEST_F(AttnrunLinear, DecayWithCausalMatchesTheOracle) {
  const problem p(2, 100, 130, 4, 2, 8, 6, 73);  // GQA, Nq < Nk, several chunks
  write_problem(p);
  std::vector<float> decay = retnet_decay(p.hq);
  decay[3] = 1.0f;  // no decay on one head
  write_decay(decay);
  for (const named_feature& f : features) {
    SCOPED_TRACE(f.flag);
    attn::linear_options opt;
    opt.feature = f.kind;
    opt.causal = true;
    opt.decay = decay;
    expect_matches(p, {"--feature", f.flag, "--causal", "--decay", decay_path()}, opt);
  }
  attn::linear_options opt;
  opt.feature = attn::feature_kind::elu_plus_one;
  opt.causal = true;
  opt.normalize = true;
  opt.decay = decay;
  expect_matches(p, {"--feature", "elu1", "--normalize", "--causal", "--decay=" + decay_path()},
                 opt);

  // A strong decay: lambda = 0.5 forgets a key within a few dozen tokens.
  const std::vector<float> strong = {0.5f, 0.75f, 0.9f, 0.99f};
  write_decay(strong);
  opt.decay = strong;
  expect_matches(p, {"--feature", "elu1", "--normalize", "--causal", "--decay", decay_path()}, opt);
}

TEST_F(AttnrunLinear, CausalWithMoreQueriesThanKeysHasZeroRows) {
  const problem p(1, 40, 30, 2, 1, 8, 8, 74);  // off = -10: rows 0..9 see no key
  write_problem(p);
  write_decay({0.9f, 0.8f});
  attn::linear_options opt;
  opt.feature = attn::feature_kind::elu_plus_one;
  opt.causal = true;
  opt.normalize = true;
  const std::vector<float> decay = {0.9f, 0.8f};
  opt.decay = decay;
  const std::vector<float> got = expect_matches(
      p, {"--feature", "elu1", "--normalize", "--causal", "--decay", decay_path()}, opt);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(p.nq * p.hq * p.dv));
  for (std::size_t e = 0; e < static_cast<std::size_t>(10 * p.hq * p.dv); ++e)
    EXPECT_EQ(got[e], 0.0f) << "a row with no key is 0";
}

TEST_F(AttnrunLinear, ScaleThreadsAndEqualsSyntax) {
  const problem p(1, 80, 80, 4, 4, 16, 16, 75);
  write_problem(p);
  attn::linear_options opt;
  opt.feature = attn::feature_kind::relu;
  opt.causal = true;
  opt.scale = 0.25f;
  const std::vector<float> one =
      expect_matches(p, {"--feature=relu", "--causal", "--scale=0.25", "--threads=1"}, opt);
  EXPECT_EQ(expect_matches(
                p, {"--feature", "relu", "--causal", "--scale", "0.25", "--threads", "3"}, opt),
            one)
      << "the thread count changed the result";
  opt.causal = false;
  opt.scale = -0.5f;
  expect_matches(p, {"--scale", "-0.5", "--feature", "relu"}, opt);
}

TEST_F(AttnrunLinear, OverwritesAStaleOutput) {
  const problem p(1, 6, 6, 2, 2, 4, 4, 76);
  write_problem(p);
  write_bytes(path("out.npy"), "stale");
  expect_matches(p, {}, attn::linear_options{});
}

TEST_F(AttnrunLinear, RepeatCountsTheLinearFlops) {
  // The library's chunk for these sizes, and the FLOPs of bench/flops.hpp
  // counted here pair by pair: per (batch, query head) 2 Df Dv per key and
  // per query that sees a key, plus with causal 2 (Df + Dv) per allowed pair
  // inside a chunk.
  struct flops_case {
    problem p;
    bool causal;
  };
  for (const auto& [p, causal] : {flops_case{problem(2, 150, 150, 4, 2, 8, 6, 77), true},
                                  flops_case{problem(1, 50, 140, 2, 1, 16, 8, 78), true},
                                  flops_case{problem(1, 100, 80, 2, 2, 8, 8, 79), true},
                                  flops_case{problem(1, 50, 140, 2, 1, 16, 8, 80), false}}) {
    SCOPED_TRACE(testing::Message() << "Nq " << p.nq << ", Nk " << p.nk << ", causal " << causal);
    write_problem(p);
    std::vector<std::string> extra = {"--feature", "elu1", "--repeat", "3"};
    if (causal) extra.push_back("--causal");
    const run_result r = run(linear_args(extra));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    const std::optional<double> flops = reported_flops(r);
    ASSERT_TRUE(flops) << r.out;

    attn::linear_options opt;
    opt.causal = causal;
    opt.feature = attn::feature_kind::elu_plus_one;
    std::vector<float> out(static_cast<std::size_t>(p.b * p.nq * p.hq * p.dv));
    const index_t chunk = attn::detail::linear_chunk(attn::detail::make_linear_problem(
        attn::bshd<const float>(p.q.data(), p.b, p.nq, p.hq, p.dk),
        attn::bshd<const float>(p.k.data(), p.b, p.nk, p.hkv, p.dk),
        attn::bshd<const float>(p.v.data(), p.b, p.nk, p.hkv, p.dv),
        attn::bshd(out.data(), p.b, p.nq, p.hq, p.dv), p.dk, opt));
    ASSERT_GE(chunk, 1);
    EXPECT_LT(chunk, p.nk) << "the keys should span several chunks";
    double reads = 0, intra_pairs = 0;
    for (std::int64_t i = 0; i < p.nq; ++i) {
      const std::int64_t pos = i + p.nk - p.nq;
      if (causal && pos < 0) continue;
      reads += 1;
      if (causal)
        for (std::int64_t j = 0; j <= pos; ++j) intra_pairs += j / chunk == pos / chunk ? 1 : 0;
    }
    const double df = static_cast<double>(p.dk), dv = static_cast<double>(p.dv);
    const double expected =
        static_cast<double>(p.b * p.hq) *
        (2 * df * dv * (static_cast<double>(p.nk) + reads) + 2 * (df + dv) * intra_pairs);
    EXPECT_NEAR(*flops, expected, 1e-7 * expected);
    // The outputs are still written, and correct.
    EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), linear_oracle(p, opt)), 1e-5);
    EXPECT_FALSE(fs::exists(path("lse.npy")));
  }
}

// --- bad linear command lines and inputs

class AttnrunLinearBadInput : public AttnrunLinear {
 protected:
  // A valid problem (Hq = 4, Hkv = 2) and a valid decay (4,). Each test
  // breaks one thing.
  void SetUp() override {
    AttnrunLinear::SetUp();
    write_problem(problem(1, 10, 12, 4, 2, 8, 8, 81));
    write_decay(retnet_decay(4));
  }
  std::vector<std::string> decay_args(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"--causal", "--decay", decay_path()};
    args.insert(args.end(), extra.begin(), extra.end());
    return linear_args(args);
  }
};

TEST_F(AttnrunLinearBadInput, TheFixtureRuns) {
  EXPECT_EQ(run(linear_args()).code, 0);
  fs::remove(path("out.npy"));
  EXPECT_EQ(run(decay_args({"--feature", "elu1", "--normalize"})).code, 0);
}

TEST_F(AttnrunLinearBadInput, LseIsRefused) {
  // Linear attention has no softmax, so no log-sum-exp to write.
  for (const bool causal : {false, true}) {
    std::vector<std::string> extra = {"--lse", path("lse.npy").string()};
    if (causal) extra.push_back("--causal");
    expect_failure_mentioning(linear_args(extra),
                              {"--lse does not apply to --variant linear", "log-sum-exp"},
                              exit_usage);
  }
  expect_failure(decay_args({"--lse=" + path("lse.npy").string()}), "--lse", exit_usage);
}

TEST_F(AttnrunLinearBadInput, DecayNeedsCausal) {
  expect_failure_mentioning(linear_args({"--decay", decay_path()}), {"--decay", "--causal"},
                            exit_usage);
  expect_failure_mentioning(linear_args({"--decay", decay_path(), "--normalize"}),
                            {"--decay", "--causal"}, exit_usage);
  // Checked before any file is read.
  expect_failure_mentioning(linear_args({"--decay", path("missing.npy").string()}),
                            {"--decay", "--causal"}, exit_usage);
}

TEST_F(AttnrunLinearBadInput, DecayOfTheWrongShape) {
  write_decay({0.9f, 0.9f, 0.9f});  // Hq = 4
  expect_failure_mentioning(decay_args(), {"--decay", "decay.npy", "(4,)", "got (3,)"},
                            exit_failure);
  write_decay(std::vector<float>(8, 0.9f));
  expect_failure_mentioning(decay_args(), {"--decay", "(4,)", "got (8,)"}, exit_failure);
  npy::write_f32(path("decay.npy"), std::vector<std::int64_t>{1, 4}, std::vector<float>(4, 0.9f));
  expect_failure_mentioning(decay_args(), {"--decay", "rank 1", "(1, 4)"}, exit_failure);
  npy::write_f32(path("decay.npy"), std::vector<std::int64_t>{}, std::vector<float>{0.9f});
  expect_failure_mentioning(decay_args(), {"--decay", "rank 1"}, exit_failure);
}

TEST_F(AttnrunLinearBadInput, DecayOfTheWrongDtype) {
  write_npy(path("decay.npy"), {4}, "<f8", le_bytes(std::vector<std::uint32_t>(8, 0)));
  expect_failure_mentioning(decay_args(), {"--decay", "dtype '<f8'"}, exit_failure);
  write_npy(path("decay.npy"), {4}, "<f2", le_bytes(std::vector<std::uint16_t>(4, 0x3b33)));
  expect_failure_mentioning(decay_args(), {"--decay", "dtype '<f2'"}, exit_failure);
  write_npy(path("decay.npy"), {4}, "<i4", le_bytes(std::vector<std::int32_t>(4, 1)));
  expect_failure_mentioning(decay_args(), {"--decay", "dtype '<i4'"}, exit_failure);
}

TEST_F(AttnrunLinearBadInput, DecayOutOfRange) {
  // lambda_h in (0, 1]: 0 forgets the past entirely, > 1 grows without bound.
  for (const float bad : {0.0f, -0.5f, 1.5f, 1.0000001f, std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(bad);
    write_decay({0.9f, 1.0f, bad, 0.5f});
    expect_failure_mentioning(decay_args(), {"--decay", "decay.npy", "(0, 1]", "decay[2]"},
                              exit_failure);
  }
}

TEST_F(AttnrunLinearBadInput, MissingOrMalformedDecayFile) {
  fs::remove(path("decay.npy"));
  expect_failure_mentioning(decay_args(), {"--decay", "decay.npy"}, exit_failure);
  write_bytes(path("decay.npy"), "not a numpy file");
  expect_failure_mentioning(decay_args(), {"--decay", "magic"}, exit_failure);
}

TEST_F(AttnrunLinearBadInput, UnknownFeature) {
  for (const char* name : {"softmax", "elu", "ELU1", "elu_plus_one", "favor", "relu,elu1"})
    expect_failure_mentioning(linear_args({"--feature", name}),
                              {"--feature", "identity, elu1 or relu", name}, exit_usage);
  expect_failure_mentioning(linear_args({"--feature"}), {"--feature", "needs a value"}, exit_usage);
  expect_failure_mentioning(linear_args({"--feature="}), {"--feature", "non-empty"}, exit_usage);
  expect_failure(linear_args({"--normalize=1"}), "--normalize", exit_usage);
}

TEST_F(AttnrunLinearBadInput, BadScale) {
  expect_failure(linear_args({"--scale", "abc"}), "--scale", exit_usage);
  expect_failure(linear_args({"--scale", "nan"}), "--scale", exit_usage);
}

TEST_F(AttnrunLinearBadInput, ShapesOfQkvAreChecked) {
  const problem other_dk(1, 10, 12, 4, 2, 6, 8, 82);
  npy::write_f32(path("k.npy"), other_dk.k_shape(), other_dk.k);
  expect_failure_mentioning(linear_args(), {"k:", "shape"}, exit_failure);
  const problem other_nk(1, 10, 13, 4, 2, 8, 8, 83);
  npy::write_f32(path("k.npy"), other_nk.k_shape(), other_nk.k);
  expect_failure_mentioning(decay_args(), {"v:", "shape"}, exit_failure);
  const problem three_kv_heads(1, 10, 12, 4, 3, 8, 8, 84);
  npy::write_f32(path("k.npy"), three_kv_heads.k_shape(), three_kv_heads.k);
  npy::write_f32(path("v.npy"), three_kv_heads.v_shape(), three_kv_heads.v);
  expect_failure(linear_args(), "GQA", exit_failure);
  npy::write_f32(path("q.npy"), std::vector<std::int64_t>{10, 32}, std::vector<float>(320));
  expect_failure_mentioning(linear_args(), {"--q", "rank"}, exit_failure);
}

TEST_F(AttnrunLinearBadInput, FlagsOfOtherVariantsAreRefused) {
  const std::vector<std::vector<std::string>> others = {
      {"--kernel", "7"},     {"--dilation", "2"},    {"--stride", "1"},    {"--causal-dims", "0"},
      {"--window", "3,3"},   {"--sink-tokens", "2"}, {"--sinks", "s.npy"}, {"--softcap", "2"},
      {"--alibi"},           {"--bias", "b.npy"},    {"--doc", "d.npy"},   {"--block", "4"},
      {"--layout", "l.npy"}, {"--topk", "2"},        {"--dv", "4"},        {"--out-dtype", "float16"}};
  for (const auto& flag : others) {
    const std::string message = flag[0] + " does not apply to --variant linear";
    expect_failure(linear_args(flag), message, exit_usage);
    expect_failure(decay_args(flag), message, exit_usage);
  }
  expect_failure_mentioning(linear_args({"--kernel", "7,7", "--causal"}),
                            {"--kernel", "only to neighborhood"}, exit_usage);
}

}  // namespace attnrun_test

namespace attnrun_test {

// --variant latent (DESIGN §2 and §4): DeepSeek MLA in absorbed form, one
// cache row (Dc + Dr) per token shared by every head, the values its first
// Dc channels. Decode (Nq = 1) and multi-token causal (Nq = 4) with 16 heads,
// DeepSeek-V3's Dc = 512, Dr = 64 and small widths, against the fp64 softmax
// oracle whose k is the cache and v the same cache cut to Dc channels; the
// --repeat FLOP count; and bad command lines and inputs.

using attn::index_t;

// q (B, Nq, H, D) and the cache (B, Nk, 1, D) in C order, normal random.
struct latent_problem {
  std::int64_t b, nq, nk, h, d, dc;
  std::vector<float> q, cache;

  latent_problem(std::int64_t b_, std::int64_t nq_, std::int64_t nk_, std::int64_t h_,
                 std::int64_t d_, std::int64_t dc_, unsigned seed)
      : b(b_),
        nq(nq_),
        nk(nk_),
        h(h_),
        d(d_),
        dc(dc_),
        q(static_cast<std::size_t>(b * nq * h * d)),
        cache(static_cast<std::size_t>(b * nk * d)) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal;
    for (auto* t : {&q, &cache})
      for (float& x : *t) x = normal(gen);
  }
  std::vector<std::int64_t> q_shape() const { return {b, nq, h, d}; }
  std::vector<std::int64_t> cache_shape() const { return {b, nk, 1, d}; }
};

// The fp64 oracle: MQA with k = the cache and v = the same memory, Dc wide.
attn::ref::softmax_result latent_oracle(const latent_problem& p, float scale, bool causal) {
  const attn::view4<const float> cache = attn::bshd<const float>(p.cache.data(), p.b, p.nk, 1, p.d);
  attn::view4<const float> values = cache;
  values.extent[3] = p.dc;
  attn::softmax_options opt;
  opt.scale = scale;
  opt.causal = causal;
  return attn::ref::softmax_attention(attn::bshd<const float>(p.q.data(), p.b, p.nq, p.h, p.d),
                                      cache, values, opt);
}

// DeepSeek-V3's 1/sqrt(128 + 64), as written on the command line.
constexpr const char* deepseek_scale = "0.0721687836";

class AttnrunLatent : public AttnrunTest {
 protected:
  void write_latent(const latent_problem& p) const {
    npy::write_f32(path("q.npy"), p.q_shape(), p.q);
    npy::write_f32(path("cache.npy"), p.cache_shape(), p.cache);
  }

  // --variant latent with q/cache/out/lse in the test directory, --dv and
  // --scale, then `extra`.
  std::vector<std::string> latent_args(std::int64_t dc, const std::string& scale,
                                       const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"--variant", "latent",
                                     "--q",       path("q.npy").string(),
                                     "--k",       path("cache.npy").string(),
                                     "--out",     path("out.npy").string(),
                                     "--lse",     path("lse.npy").string(),
                                     "--dv",      std::to_string(dc),
                                     "--scale",   scale};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Runs attnrun with `args` and checks out (and lse unless `without_lse`)
  // against the oracle (DESIGN §1 accuracy). Returns the oracle.
  attn::ref::softmax_result expect_matches(const latent_problem& p,
                                           const std::vector<std::string>& args, float scale,
                                           bool causal, bool without_lse = false) const {
    const attn::ref::softmax_result want = latent_oracle(p, scale, causal);
    const run_result r = run(args);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    if (r.code != 0) return want;
    const npy::array out = npy::read(path("out.npy"));
    EXPECT_EQ(out.shape, (std::vector<std::int64_t>{p.b, p.nq, p.h, p.dc}));
    EXPECT_GT(want.max_abs_v, 0.0);
    if (out.floats().size() != want.out.size()) {
      ADD_FAILURE() << "out of the wrong size";
      return want;
    }
    EXPECT_LE(relative_frobenius(out.floats(), want.out), 1e-5);
    for (std::size_t i = 0; i < want.out.size(); ++i)
      EXPECT_NEAR(out.floats()[i], want.out[i], 1e-4 * want.max_abs_v) << "out element " << i;
    if (without_lse) {
      EXPECT_FALSE(fs::exists(path("lse.npy")));
      return want;
    }
    const npy::array lse = npy::read(path("lse.npy"));
    EXPECT_EQ(lse.shape, (std::vector<std::int64_t>{p.b, p.nq, p.h}));
    if (lse.floats().size() != want.lse.size()) {
      ADD_FAILURE() << "lse of the wrong size";
      return want;
    }
    for (std::size_t i = 0; i < want.lse.size(); ++i) {
      const double got = lse.floats()[i], ref = want.lse[i];
      if (std::isinf(ref)) {
        EXPECT_EQ(got, ref) << "lse row " << i;
      } else {
        EXPECT_NEAR(got, ref, 1e-5 * (1 + std::abs(ref))) << "lse row " << i;
      }
    }
    return want;
  }
};

TEST_F(AttnrunLatent, DeepSeekShardDecodeAndMultiTokenMatchTheOracle) {
  // One tensor-parallel shard of DeepSeek-V3: 16 heads, Dc = 512, Dr = 64,
  // more keys than one tile; Nq = 4 is multi-token decode (causal).
  const float scale = std::stof(deepseek_scale);
  for (const std::int64_t nq : {1, 4})
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(testing::Message() << "Nq " << nq << (causal ? ", causal" : ""));
      const latent_problem p(2, nq, 300, 16, 576, 512, 90 + static_cast<unsigned>(nq));
      write_latent(p);
      std::vector<std::string> extra;
      if (causal) extra.push_back("--causal");
      expect_matches(p, latent_args(512, deepseek_scale, extra), scale, causal);
    }
}

TEST_F(AttnrunLatent, SmallWidthsMatchTheOracle) {
  // 16 heads, Dc = 64, Dr = 8; Nq in {1, 4}, causal and not; a scale of 1
  // makes the softmax peaked.
  for (const std::int64_t nq : {1, 4})
    for (const bool causal : {false, true})
      for (const char* scale : {deepseek_scale, "1"}) {
        SCOPED_TRACE(testing::Message()
                     << "Nq " << nq << (causal ? ", causal" : "") << ", scale " << scale);
        const latent_problem p(3, nq, 37, 16, 72, 64, 100 + static_cast<unsigned>(nq));
        write_latent(p);
        std::vector<std::string> extra;
        if (causal) extra.push_back("--causal");
        expect_matches(p, latent_args(64, scale, extra), std::stof(scale), causal);
      }
}

TEST_F(AttnrunLatent, CausalWithMoreQueriesThanKeysHasEmptyRows) {
  // off = Nk - Nq = -2: queries 0 and 1 see no key (out 0, lse -inf).
  const latent_problem p(1, 4, 2, 16, 24, 16, 110);
  write_latent(p);
  const attn::ref::softmax_result want = expect_matches(
      p, latent_args(16, deepseek_scale, {"--causal"}), std::stof(deepseek_scale), true);
  const std::vector<float> out = npy::read(path("out.npy")).floats();
  const std::vector<float> lse = npy::read(path("lse.npy")).floats();
  ASSERT_EQ(out.size(), static_cast<std::size_t>(4 * 16 * 16));
  for (std::size_t e = 0; e < static_cast<std::size_t>(2 * 16 * 16); ++e)
    EXPECT_EQ(out[e], 0.0f) << "a row with no key is 0";
  for (std::size_t row = 0; row < 2 * 16; ++row)
    EXPECT_EQ(lse[row], -std::numeric_limits<float>::infinity()) << "lse row " << row;
  EXPECT_EQ(want.keys[2 * 16], 1);
}

TEST_F(AttnrunLatent, OutDtypeFloat16WritesHalves) {
  write_latent(latent_problem(1, 2, 12, 4, 24, 16, 151));
  expect_half_out(latent_args(16, "0.2", {"--causal"}));
}

TEST_F(AttnrunLatent, EveryChannelAsValueAndOneHead) {
  // --dv = Dc + Dr (no rope channels: plain MQA with v = k), and H = 1.
  const latent_problem p(1, 3, 20, 1, 32, 32, 120);
  write_latent(p);
  expect_matches(p, latent_args(32, "0.2"), 0.2f, false);
  latent_problem one_value = p;  // the same files, a single value channel
  one_value.dc = 1;
  expect_matches(one_value, latent_args(1, "0.2", {"--causal"}), 0.2f, true);
}

TEST_F(AttnrunLatent, OutWithoutLseThreadsAndEqualsSyntax) {
  const latent_problem p(2, 4, 50, 16, 72, 64, 130);
  write_latent(p);
  write_bytes(path("out.npy"), "stale");
  const std::vector<std::string> args = {"--variant=latent",
                                         "--q=" + path("q.npy").string(),
                                         "--k=" + path("cache.npy").string(),
                                         "--out=" + path("out.npy").string(),
                                         "--dv=64",
                                         "--scale=0.125",
                                         "--causal"};
  for (const char* threads : {"1", "3"}) {
    SCOPED_TRACE(threads);
    std::vector<std::string> with_threads = args;
    with_threads.push_back(std::string("--threads=") + threads);
    expect_matches(p, with_threads, 0.125f, true, /*without_lse=*/true);
  }
}

TEST_F(AttnrunLatent, RepeatPrintsOneJsonLineWithTheLatentFlops) {
  // gflops x median_s = allowed pairs x 2 x ((Dc + Dr) + Dc) x H x B
  // (bench/flops.hpp attention_flops with Dk = Dc + Dr, Dv = Dc).
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    const latent_problem p(2, 4, 37, 16, 72, 64, 140);
    write_latent(p);
    std::vector<std::string> extra = {"--repeat", "3"};
    if (causal) extra.push_back("--causal");
    const run_result r = run(latent_args(64, deepseek_scale, extra));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    const std::optional<double> flops = reported_flops(r);
    ASSERT_TRUE(flops) << r.out;
    const attn::ref::softmax_result want = latent_oracle(p, std::stof(deepseek_scale), causal);
    const double pairs = pairs_of(want);  // summed over batch, queries and heads
    EXPECT_EQ(pairs, causal ? 2.0 * 16 * (34 + 35 + 36 + 37) : 2.0 * 16 * 4 * 37);
    const double expected = pairs * 2 * (72 + 64);
    EXPECT_NEAR(*flops, expected, 1e-6 * expected);
    // The outputs are still written, and correct.
    EXPECT_LE(relative_frobenius(npy::read(path("out.npy")).floats(), want.out), 1e-5);
    EXPECT_TRUE(fs::exists(path("lse.npy")));
  }
}

// --- bad latent command lines and inputs

class AttnrunLatentBadInput : public AttnrunLatent {
 protected:
  // A valid problem: 4 heads, Dc = 16, Dr = 8. Each test breaks one thing.
  void SetUp() override {
    AttnrunLatent::SetUp();
    write_latent(latent_problem(1, 2, 12, 4, 24, 16, 150));
  }
  std::vector<std::string> valid_args(const std::vector<std::string>& extra = {}) const {
    return latent_args(16, deepseek_scale, extra);
  }
  // The valid arguments without `flag` and its value.
  std::vector<std::string> without(const std::string& flag) const {
    std::vector<std::string> args = valid_args();
    const auto at = std::find(args.begin(), args.end(), flag);
    EXPECT_NE(at, args.end());
    args.erase(at, at + 2);
    return args;
  }
};

TEST_F(AttnrunLatentBadInput, TheFixtureRuns) {
  EXPECT_EQ(run(valid_args({"--causal"})).code, 0);
  EXPECT_TRUE(fs::exists(path("out.npy")));
  EXPECT_TRUE(fs::exists(path("lse.npy")));
}

TEST_F(AttnrunLatentBadInput, DvIsRequired) {
  expect_failure_mentioning(without("--dv"), {"--variant latent needs --dv", "first DC channels"},
                            exit_usage);
  // Checked before any file is read.
  std::vector<std::string> args = without("--dv");
  args[3] = path("missing.npy").string();
  expect_failure(args, "--dv", exit_usage);
}

TEST_F(AttnrunLatentBadInput, DvOutOfRange) {
  // --dv > Dc + Dr = 24: a mismatch between the flag and the cache file.
  for (const std::int64_t dc : {25, 1000})
    expect_failure_mentioning(latent_args(dc, deepseek_scale),
                              {"--dv " + std::to_string(dc), "at most Dc+Dr = 24", "cache.npy"},
                              exit_failure);
  for (const char* bad : {"0", "-1", "1.5", "abc", "99999999999999999999"}) {
    std::vector<std::string> args = valid_args();
    args[11] = bad;
    expect_failure_mentioning(args, {"--dv", "a positive integer", bad}, exit_usage);
  }
}

TEST_F(AttnrunLatentBadInput, VIsRefused) {
  npy::write_f32(path("v.npy"), std::vector<std::int64_t>{1, 12, 1, 16},
                 std::vector<float>(12 * 16));
  expect_failure_mentioning(valid_args({"--v", path("v.npy").string()}),
                            {"--v does not apply to --variant latent", "values from --k", "--dv"},
                            exit_usage);
}

TEST_F(AttnrunLatentBadInput, ScaleIsRequired) {
  // No default: the cache row width is not the model's head dimension.
  expect_failure_mentioning(
      without("--scale"),
      {"--variant latent needs --scale", "model's softmax scale", "head dimension"}, exit_usage);
  for (const char* bad : {"abc", "nan", "inf"}) {
    std::vector<std::string> args = valid_args();
    args[13] = bad;
    expect_failure(args, "--scale", exit_usage);
  }
}

TEST_F(AttnrunLatentBadInput, CacheMustHaveOneHeadAndTheRowsOfQ) {
  const auto write_cache = [&](std::vector<std::int64_t> shape) {
    std::int64_t count = 1;
    for (const std::int64_t e : shape) count *= e;
    npy::write_f32(path("cache.npy"), shape, std::vector<float>(static_cast<std::size_t>(count)));
  };
  write_cache({1, 12, 2, 24});  // two heads: a cache is shared by every head
  expect_failure_mentioning(
      valid_args(), {"--k", "cache.npy", "(1, Nk, 1, 24)", "got (1, 12, 2, 24)"}, exit_failure);
  write_cache({1, 12, 1, 20});  // row width != q's Dc + Dr
  expect_failure_mentioning(valid_args(), {"--k", "(1, Nk, 1, 24)", "got (1, 12, 1, 20)"},
                            exit_failure);
  write_cache({2, 12, 1, 24});  // batch != q's
  expect_failure_mentioning(valid_args(), {"--k", "(1, Nk, 1, 24)", "got (2, 12, 1, 24)"},
                            exit_failure);
  write_cache({12, 24});
  expect_failure_mentioning(valid_args(), {"--k", "rank 4", "latent cache"}, exit_failure);
  fs::remove(path("cache.npy"));
  expect_failure_mentioning(valid_args(), {"--k", "cache.npy"}, exit_failure);
}

TEST_F(AttnrunLatentBadInput, QIsChecked) {
  npy::write_f32(path("q.npy"), std::vector<std::int64_t>{2, 96}, std::vector<float>(192));
  expect_failure_mentioning(valid_args(), {"--q", "rank"}, exit_failure);
  write_npy(path("q.npy"), {1, 2, 4, 24}, "<f8", le_bytes(std::vector<std::uint32_t>(384, 0)));
  expect_failure_mentioning(valid_args(), {"--q", "dtype '<f8'"}, exit_failure);
}

TEST_F(AttnrunLatentBadInput, OutAndLseNameTheSameFile) {
  std::vector<std::string> args = valid_args();
  args[9] = path("out.npy").string();
  expect_failure(args, "same file", exit_usage);
}

TEST_F(AttnrunLatentBadInput, UnwritableLseLeavesNoOutput) {
  std::vector<std::string> args = valid_args();
  args[9] = path("no_such_dir/lse.npy").string();
  expect_failure(args, "lse.npy", exit_failure);
}

TEST_F(AttnrunLatentBadInput, FlagsOfOtherVariantsAreRefused) {
  const std::vector<std::vector<std::string>> others = {
      {"--kernel", "7"},     {"--dilation", "2"},    {"--stride", "1"},     {"--causal-dims", "0"},
      {"--window", "3,3"},   {"--sink-tokens", "2"}, {"--sinks", "s.npy"},  {"--softcap", "2"},
      {"--alibi"},           {"--bias", "b.npy"},    {"--doc", "d.npy"},    {"--block", "4"},
      {"--layout", "l.npy"}, {"--topk", "2"},        {"--feature", "relu"}, {"--normalize"},
      {"--decay", "d.npy"}};
  for (const auto& flag : others)
    expect_failure(valid_args(flag), flag[0] + " does not apply to --variant latent", exit_usage);
}

}  // namespace attnrun_test
