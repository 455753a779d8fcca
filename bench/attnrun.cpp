// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// attnrun: runs an attention variant on .npy files (DESIGN.md §4).
//
//   attnrun --variant softmax --q Q.npy --k K.npy --v V.npy --out O.npy
//           [--lse L.npy] [--scale F] [--causal] [--sinks S.npy]
//           [--window L,R] [--sink-tokens N] [--softcap F] [--alibi]
//           [--bias B.npy] [--doc D.npy] [--out-dtype float32|float16]
//           [--threads N] [--repeat N]
//   attnrun --variant neighborhood --q Q.npy --k K.npy --v V.npy --out O.npy
//           --kernel K[,K[,K]] [--dilation D,..] [--stride S,..]
//           [--causal-dims C,..] [--lse L.npy] [--scale F]
//           [--out-dtype float32|float16] [--threads N] [--repeat N]
//   attnrun --variant block_sparse --q Q.npy --k K.npy --v V.npy --out O.npy
//           --block BQ,BK|B (--layout LAYOUT.npy | --topk K) [--causal]
//           [--lse L.npy] [--scale F] [--out-dtype float32|float16]
//           [--threads N] [--repeat N]
//   attnrun --variant linear --q Q.npy --k K.npy --v V.npy --out O.npy
//           [--feature identity|elu1|relu] [--normalize] [--causal]
//           [--decay D.npy] [--scale F] [--threads N] [--repeat N]
//   attnrun --variant latent --q Q.npy --k CACHE.npy --out O.npy --dv DC
//           --scale F [--lse L.npy] [--causal] [--threads N] [--repeat N]
//
// Every input is read and every result computed before anything is written;
// the outputs are staged as temporary files and renamed into place together,
// so a failed run leaves no output file. Errors print one line,
// "attnrun: <message>", on stderr: exit 2 for a bad command line, 1 for bad
// input or a failed run.

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "attn/attn.hpp"
#include "flops.hpp"
#include "npy.hpp"

namespace {

constexpr int exit_failure = 1;  // bad input, or the run failed
constexpr int exit_usage = 2;    // bad command line

constexpr std::string_view usage_text =
    R"(usage: attnrun --variant softmax --q Q.npy --k K.npy --v V.npy --out O.npy
               [--lse L.npy] [--scale F] [--causal] [--sinks S.npy]
               [--window L,R] [--sink-tokens N] [--softcap F] [--alibi]
               [--bias B.npy] [--doc D.npy] [--out-dtype float32|float16]
               [--threads N] [--repeat N]
       attnrun --variant neighborhood --q Q.npy --k K.npy --v V.npy --out O.npy
               --kernel K[,K[,K]] [--dilation D,..] [--stride S,..]
               [--causal-dims C,..] [--lse L.npy] [--scale F]
               [--out-dtype float32|float16] [--threads N] [--repeat N]
       attnrun --variant block_sparse --q Q.npy --k K.npy --v V.npy --out O.npy
               --block BQ,BK|B (--layout LAYOUT.npy | --topk K) [--causal]
               [--lse L.npy] [--scale F] [--out-dtype float32|float16]
               [--threads N] [--repeat N]
       attnrun --variant linear --q Q.npy --k K.npy --v V.npy --out O.npy
               [--feature identity|elu1|relu] [--normalize] [--causal]
               [--decay D.npy] [--scale F] [--threads N] [--repeat N]
       attnrun --variant latent --q Q.npy --k CACHE.npy --out O.npy --dv DC
               --scale F [--lse L.npy] [--causal] [--out-dtype float32|float16]
               [--threads N] [--repeat N]

Runs attention on .npy files (float32 '<f4' little-endian, C order; softmax
also reads float16 '<f2' q, k and v, each stored as its file is;
neighborhood, block_sparse and latent read '<f2' too, stored as fp16 when
every input is, else widened; the computation is fp32 in every case, and
every variant but linear writes out as --out-dtype asks):
  q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv)
  -> out (B, Nq, Hq, Dv), lse (B, Nq, Hq) natural-log log-sum-exp.
Hq % Hkv == 0 (GQA/MQA); masks are bottom-right aligned when Nq != Nk.
Neighborhood attention runs on a grid of rank R = 1..3 (the number of values
of --kernel): q (B, X[, Y[, Z]], Hq, Dk), k and v (B, X[, Y[, Z]], Hkv, Dk|Dv)
-> out (B, X[, Y[, Z]], Hq, Dv), lse (B, X[, Y[, Z]], Hq).

  --variant NAME  softmax, neighborhood, block_sparse, linear or latent
  --q/--k/--v F   input tensors (latent: --q and --k only)
  --out F         output tensor, written only when the run succeeds
  --lse F         also write the log-sum-exp of every row (not linear)
  --scale F       score scale (default 1/sqrt(Dk); linear: 1; latent: no
                  default, required)
  --out-dtype T   float32 (default) or float16: the type out is stored and
                  written in (lse stays float32; not linear)
  --threads N     OpenMP threads (default: all cores)
  --repeat N      time N runs after a warm-up and print one JSON line,
                  {"median_s": ..., "gflops": ...}, on stdout; GFLOP/s count
                  only the allowed pairs, 2 * (Dk + Dv) FLOPs per pair and head
                  (linear: see below)
  --help          this text

softmax:
  --causal        key j allowed iff j <= i + Nk - Nq
  --sinks F       (Hq,) float32 per-head sink logits (gpt-oss)
  --window L,R    sliding window: key j allowed iff i+off-L <= j <= i+off+R
                  (off = Nk - Nq; -1 = unbounded on that side)
  --sink-tokens N with --window: keys j < N stay allowed (StreamingLLM)
  --softcap F     score softcap, s = F * tanh(s / F), F > 0 (Gemma 2)
  --alibi         subtract slope_h * |i + off - j| (standard ALiBi slopes)
  --bias F        (B|1, Hq|1, Nq, Nk) float32 additive score bias
  --doc F         (Nk,) int32 document ids, each document contiguous: pairs
                  only within a document (varlen packing; queries take the
                  ids of the last Nq keys, Nq <= Nk); combines with --causal
                  and --window

neighborhood (NATTEN / GNA rule of DESIGN.md §2, one value per grid dimension):
  --kernel K,..   window size per dimension, K >= 2 and K * D <= the length
  --dilation D,.. dilation per dimension, D >= 1 (default 1)
  --stride S,..   stride per dimension, 1 <= S <= K (default 1; S = K is
                  blocked attention)
  --causal-dims C,..
                  1: causal along that dimension, 0: not (default 0)
  --dilation, --stride and --causal-dims, when given, need one value per
  value of --kernel.

block_sparse (DESIGN.md §2; shapes as softmax), exactly one of --layout and
--topk:
  --layout F      (Hq|1, ceil(Nq/BQ), ceil(Nk/BK)) uint8 '|u1' block layout,
                  one per query head or shared (1): key j is allowed for query
                  i of head h iff layout[h][i / BQ][j / BK] != 0
  --block BQ,BK   with --layout: query and key block sizes, positive; a single
                  value B means BQ = BK = B
  --causal        with --layout: also require j <= i + Nk - Nq
  --topk K        MoBA gating, K >= 1: each query attends to its own key block
                  (causally) and the K - 1 past blocks whose mean key scores
                  highest against it (ties to the lower block)
  --block B       with --topk: the key block size (B, or B,B: MoBA has one
                  block size)
  MoBA is causal by definition: with --topk, --causal is accepted and changes
  nothing. --repeat counts the pairs the layout or the gate selects.

linear (DESIGN.md §2; shapes as softmax; no --lse, as linear attention has no
log-sum-exp): out_i = sum_j w_ij s_ij v_j, s_ij = F * phi(q_i) . phi(k_j)
  --feature NAME  the feature map phi: identity (default), elu1 (elu(x) + 1)
                  or relu
  --normalize     divide out_i by sum_j w_ij s_ij + 1e-6
  --causal        key j allowed iff j <= i + Nk - Nq; runs chunked, linear in N
  --decay F       with --causal: (Hq,) float32 per-head decay lambda_h in
                  (0, 1], w_ij = lambda_h^(i + Nk - Nq - j) (RetNet); w_ij = 1
                  without it
  --scale F       the score scale F (default 1)
  --repeat counts, per batch entry and query head with Df = Dk features,
  2 * Df * Dv per key (state update) and per query that sees a key (state
  read), plus with --causal 2 * (Df + Dv) per allowed pair inside each chunk
  of keys (bench/flops.hpp, linear_flops).

latent (DeepSeek multi-head latent attention, absorbed form; DESIGN.md §2):
every token is one cache row of Dc latent and Dr rope channels, shared by all
heads; the values are the first Dc channels of the same rows, so there is no
--v:
  q (B, Nq, H, Dc+Dr) (already multiplied by W_UK), --k the cache
  (B, Nk, 1, Dc+Dr) -> out (B, Nq, H, Dc), lse (B, Nq, H).
  --dv DC         the latent channels Dc, 1 <= DC <= Dc+Dr (required)
  --scale F       the model's softmax scale (required: the cache row width
                  Dc+Dr is not the head dimension the model was trained with;
                  DeepSeek-V3: 1/sqrt(128 + 64) = 0.0721688 times its YaRN
                  factor)
  --causal        key j allowed iff j <= i + Nk - Nq (chunked prefill,
                  multi-token decode)
  --repeat counts 2 * ((Dc+Dr) + Dc) FLOPs per allowed pair and head.

Flags may be written "--flag value" or "--flag=value"; a flag of another
variant is refused. On error attnrun prints one line on stderr, writes no
output file and exits 1 (bad input) or 2 (bad command line).
)";

// A mistake on the command line (exit 2, as opposed to bad input data).
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Flags of DESIGN §4, each with the variants it applies to. A flag given
// with a variant it does not apply to is refused (no flag is silently
// ignored).
struct flag_info {
  bool takes_value;
  std::string_view variants;  // comma-separated, or "*" for every variant
};

const std::map<std::string, flag_info, std::less<>>& flag_table() {
  static const std::map<std::string, flag_info, std::less<>> table = {
      {"--variant", {true, "*"}},
      {"--q", {true, "*"}},
      {"--k", {true, "*"}},
      {"--v", {true, "softmax,neighborhood,block_sparse,linear"}},  // latent: values from --k
      {"--out", {true, "*"}},
      {"--lse", {true, "softmax,neighborhood,block_sparse,latent"}},
      {"--scale", {true, "softmax,neighborhood,block_sparse,linear,latent"}},
      {"--threads", {true, "*"}},
      {"--repeat", {true, "*"}},
      {"--causal", {false, "softmax,block_sparse,linear,latent"}},
      {"--sinks", {true, "softmax"}},
      {"--window", {true, "softmax"}},
      {"--sink-tokens", {true, "softmax"}},
      {"--softcap", {true, "softmax"}},
      {"--alibi", {false, "softmax"}},
      {"--bias", {true, "softmax"}},
      {"--doc", {true, "softmax"}},
      {"--out-dtype", {true, "softmax,neighborhood,block_sparse,latent"}},
      {"--kernel", {true, "neighborhood"}},
      {"--dilation", {true, "neighborhood"}},
      {"--stride", {true, "neighborhood"}},
      {"--causal-dims", {true, "neighborhood"}},
      {"--block", {true, "block_sparse"}},
      {"--layout", {true, "block_sparse"}},
      {"--topk", {true, "block_sparse"}},
      {"--feature", {true, "linear"}},
      {"--normalize", {false, "linear"}},
      {"--decay", {true, "linear"}},
      {"--dv", {true, "latent"}},
  };
  return table;
}

bool applies_to(const flag_info& flag, std::string_view variant) {
  if (flag.variants == "*") return true;
  std::string_view rest = flag.variants;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    if (rest.substr(0, comma) == variant) return true;
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  }
  return false;
}

constexpr std::string_view variants_implemented[] = {"softmax", "neighborhood", "block_sparse",
                                                     "linear", "latent"};

// The command line, parsed: flag -> value ("" for a boolean flag).
class arguments {
 public:
  arguments(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      std::optional<std::string> inline_value;
      if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
        inline_value = std::string(arg.substr(eq + 1));
        arg = arg.substr(0, eq);
      }
      const auto it = flag_table().find(arg);
      if (it == flag_table().end())
        throw usage_error(arg.starts_with("-")
                              ? "unknown flag " + std::string(arg) + " (see --help)"
                              : "unexpected argument '" + std::string(arg) +
                                    "' (flags take the form --name value)");
      const std::string name(arg);
      if (values_.contains(name)) throw usage_error(name + " is given more than once");
      std::string value;
      if (it->second.takes_value) {
        if (inline_value) {
          value = *inline_value;
        } else {
          if (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--"))
            throw usage_error(name + " needs a value");
          value = argv[++i];
        }
        if (value.empty()) throw usage_error(name + " needs a non-empty value");
      } else if (inline_value) {
        throw usage_error(name + " takes no value");
      }
      values_[name] = value;
      order_.push_back(name);
    }
  }

  bool has(std::string_view flag) const { return values_.contains(std::string(flag)); }
  std::optional<std::string> get(std::string_view flag) const {
    const auto it = values_.find(std::string(flag));
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  std::string required(std::string_view flag) const {
    if (auto v = get(flag)) return *v;
    throw usage_error("missing required flag " + std::string(flag) + " (see --help)");
  }
  const std::vector<std::string>& order() const { return order_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> order_;
};

float parse_float(std::string_view flag, const std::string& text) {
  float x = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(x))
    throw usage_error(std::string(flag) + " expects a finite number, got '" + text + "'");
  return x;
}

// "L,R" with each an integer >= -1 (-1: unbounded on that side).
std::array<std::int64_t, 2> parse_window(const std::string& text) {
  std::array<std::int64_t, 2> lr{};
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int side = 0; side < 2; ++side) {
    const auto [next, ec] = std::from_chars(p, end, lr[side]);
    const bool separator_ok = side == 0 ? (next != end && *next == ',') : next == end;
    if (ec != std::errc() || !separator_ok || lr[side] < -1)
      throw usage_error("--window expects L,R with integers >= -1 (-1: unbounded), got '" + text +
                        "'");
    p = next + 1;
  }
  return lr;
}

// An integer >= minimum; `expected` says so in the message.
int parse_int(std::string_view flag, const std::string& text, int minimum,
              std::string_view expected) {
  int x = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (ec != std::errc() || end != text.data() + text.size() || x < minimum)
    throw usage_error(std::string(flag) + " expects " + std::string(expected) + ", got '" + text +
                      "'");
  return x;
}

// A finite number > 0 (the softcap c in c * tanh(s / c)).
float parse_positive_float(std::string_view flag, const std::string& text) {
  const float x = parse_float(flag, text);
  if (!(x > 0))
    throw usage_error(std::string(flag) + " expects a finite number > 0, got '" + text + "'");
  return x;
}

int parse_non_negative_int(std::string_view flag, const std::string& text) {
  return parse_int(flag, text, 0, "an integer >= 0");
}

int parse_positive_int(std::string_view flag, const std::string& text) {
  return parse_int(flag, text, 1, "a positive integer");
}

// "a[,b[,c]]": one integer per grid dimension of a neighborhood, at most
// three. The values are int so that the library's K * D cannot overflow; their
// ranges (K >= 2, D >= 1, 1 <= S <= K, K * D <= L) are the library's to check.
std::vector<int> parse_per_dimension(std::string_view flag, const std::string& text) {
  constexpr std::size_t max_rank = 3;
  std::vector<int> values;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (;;) {
    int x = 0;
    const auto [next, ec] = std::from_chars(p, end, x);
    if (ec != std::errc() || (next != end && *next != ','))
      throw usage_error(std::string(flag) + " expects one integer per grid dimension, " +
                        "comma-separated (e.g. 7,7), got '" + text + "'");
    values.push_back(x);
    if (next == end) break;
    p = next + 1;
  }
  if (values.size() > max_rank)
    throw usage_error(std::string(flag) + " expects 1 to 3 values (grid X[, Y[, Z]]), got " +
                      std::to_string(values.size()) + " in '" + text + "'");
  return values;
}

// A float32 (or float16, widened exactly) input tensor of a fixed rank,
// read whole.
struct input {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
  attn::npy::dtype stored = attn::npy::dtype::f32;

  // The view needs a non-null pointer even for an empty tensor.
  const float* data() const {
    static const float none = 0.0f;
    return values.empty() ? &none : values.data();
  }
};

// The .npy file of `flag`, checked to hold `type` at `rank`; every message
// starts with the flag and the path.
attn::npy::array read_npy(std::string_view flag, const std::string& path,
                          std::initializer_list<attn::npy::dtype> types, std::string_view expected_type,
                          std::size_t rank, std::string_view layout) {
  attn::npy::array a;
  try {
    a = attn::npy::read(path);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(flag) + " " + e.what());
  }
  if (std::find(types.begin(), types.end(), a.stored) == types.end())
    throw std::runtime_error(
        std::string(flag) + " " + path + ": dtype '" + std::string(attn::npy::descr(a.stored)) +
        "' is not supported (expected " + std::string(expected_type) + ")");
  if (a.shape.size() != rank)
    throw std::runtime_error(std::string(flag) + " " + path + ": expected rank " +
                             std::to_string(rank) + " " + std::string(layout) + ", got shape " +
                             attn::npy::shape_string(a.shape));
  return a;
}

input read_input(std::string_view flag, const std::string& path, std::size_t rank,
                 std::string_view layout) {
  attn::npy::array a = read_npy(flag, path, {attn::npy::dtype::f32}, "float32 '<f4'", rank, layout);
  return {std::move(a.shape), std::move(a.floats())};
}

// An input that may also be float16 (the variants with 16-bit storage).
input read_float_input(std::string_view flag, const std::string& path, std::size_t rank,
                       std::string_view layout) {
  attn::npy::array a = read_npy(flag, path, {attn::npy::dtype::f32, attn::npy::dtype::f16},
                                "float32 '<f4' or float16 '<f2'", rank, layout);
  return {std::move(a.shape), std::move(a.floats()), a.stored};
}

// f(T{}) with T the library's storage type for a tensor stored as `type`
// (float or attn::float16).
template <class F>
void with_element(attn::npy::dtype type, F&& f) {
  if (type == attn::npy::dtype::f16)
    f(attn::float16{});
  else
    f(float{});
}

// f(T{}) for the variants that take one storage type for all their inputs
// (neighborhood, block-sparse layouts, latent): attn::float16 when every
// input is stored as float16, else float; a float16 input beside float32
// ones was widened exactly, so the result is the fp32 computation on the
// values the files hold.
template <class F>
void with_shared_element(std::initializer_list<const input*> inputs, F&& f) {
  const bool all_half =
      std::all_of(inputs.begin(), inputs.end(), [](const input* t) { return t->stored == attn::npy::dtype::f16; });
  with_element(all_half ? attn::npy::dtype::f16 : attn::npy::dtype::f32, f);
}
// f(T{}, O{}): T as above, O out's storage type (--out-dtype).
template <class F>
void with_shared_element(std::initializer_list<const input*> inputs, attn::npy::dtype out, F&& f) {
  with_shared_element(inputs, [&](auto type) { with_element(out, [&](auto out_type) { f(type, out_type); }); });
}

// The input's values as T: its own floats, or its halves again in
// `storage` (exact: they were widened from halves).
template <class T>
const T* values_as(const input& t, std::vector<T>& storage) {
  if constexpr (std::is_same_v<T, float>) {
    return t.data();
  } else {
    storage.resize(std::max<std::size_t>(t.values.size(), 1));
    for (std::size_t n = 0; n < t.values.size(); ++n) storage[n] = attn::from_float<T>(t.values[n]);
    return storage.data();
  }
}

// --doc: (Nk,) int32 document ids, checked here so that every message names
// the flag. Contiguity and Nq <= Nk are the library's rules, asked of the
// mask the library builds from the ids.
std::vector<std::int32_t> read_document_ids(const std::string& path, std::int64_t nq,
                                            std::int64_t nk) {
  attn::npy::array a = read_npy("--doc", path, {attn::npy::dtype::i32}, "int32 '<i4'", 1, "(Nk,)");
  if (a.shape[0] != nk)
    throw std::runtime_error("--doc " + path + ": expected shape (" + std::to_string(nk) +
                             ",) to match Nk of --k, got " + attn::npy::shape_string(a.shape));
  std::vector<std::int32_t> ids = std::move(std::get<std::vector<std::int32_t>>(a.data));
  try {
    [[maybe_unused]] const attn::document_mask mask(ids, nk - nq);
  } catch (const attn::error& e) {
    throw std::runtime_error("--doc " + path + ": " + e.what());
  }
  return ids;
}

attn::view4<const float> view_of(const input& t) {
  return attn::bshd(t.data(), t.shape[0], t.shape[1], t.shape[2], t.shape[3]);
}

// A C-order view of rank N over `shape` (the layout of a .npy file).
template <std::size_t N, class T>
attn::strided_view<T, N> c_order_view(T* data, std::span<const std::int64_t> shape) {
  attn::strided_view<T, N> view{data, {}, {}};
  attn::index_t pitch = 1;
  for (std::size_t d = N; d-- > 0;) {
    view.extent[d] = shape[d];
    view.stride[d] = pitch;
    pitch *= shape[d];
  }
  return view;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  const auto ca = std::filesystem::weakly_canonical(a, ec1);
  const auto cb = std::filesystem::weakly_canonical(b, ec2);
  return (ec1 || ec2) ? a == b : ca == cb;
}

// The variant named by --variant; every flag given must apply to it.
std::string checked_variant(const arguments& args) {
  const std::string variant = args.required("--variant");
  bool implemented = false;
  for (std::string_view v : variants_implemented) implemented = implemented || variant == v;
  if (!implemented)
    throw usage_error("--variant " + variant +
                      ": expected one of softmax, neighborhood, block_sparse, linear, latent");
  for (const std::string& flag : args.order()) {
    const flag_info& info = flag_table().find(flag)->second;
    if (applies_to(info, variant)) continue;
    std::string variants(info.variants);
    for (std::size_t c = variants.find(','); c != std::string::npos; c = variants.find(',', c + 2))
      variants.replace(c, 1, ", ");
    std::string message =
        flag + " does not apply to --variant " + variant + " (only to " + variants + ")";
    if (flag == "--causal" && variant == "neighborhood")
      message += "; neighborhood is causal per dimension with --causal-dims";
    if (flag == "--lse" && variant == "linear")
      message += "; linear attention has no softmax, hence no log-sum-exp";
    if (flag == "--v" && variant == "latent")
      message += "; latent reads its values from --k (the first --dv channels of each cache row)";
    throw usage_error(message);
  }
  return variant;
}

// The flags every variant takes (latent: all but --v).
struct common_flags {
  std::string q, k, v, out;  // v: empty for latent
  std::optional<std::string> lse;
  std::optional<float> scale;
  int threads = 0;  // 0: all cores
  int repeat = 0;   // 0: no timing
  attn::npy::dtype out_type = attn::npy::dtype::f32;  // --out-dtype
};

common_flags parse_common(const arguments& args, bool with_v = true) {
  common_flags c;
  c.q = args.required("--q");
  c.k = args.required("--k");
  if (with_v) c.v = args.required("--v");
  c.out = args.required("--out");
  c.lse = args.get("--lse");
  if (auto s = args.get("--scale")) c.scale = parse_float("--scale", *s);
  if (auto t = args.get("--threads")) c.threads = parse_positive_int("--threads", *t);
  if (auto r = args.get("--repeat")) c.repeat = parse_positive_int("--repeat", *r);
  if (auto t = args.get("--out-dtype")) {
    if (*t == "float16")
      c.out_type = attn::npy::dtype::f16;
    else if (*t != "float32")
      throw usage_error("--out-dtype must be float32 or float16, got '" + std::string(*t) + "'");
  }
  if (c.lse && same_file(*c.lse, c.out))
    throw usage_error("--out and --lse name the same file '" + c.out + "'");
  return c;
}

// Output buffers of a run: out (shape out_shape) and, with --lse, lse. They
// are sized only for a problem the library can accept (Hq, Dk, Dv >= 1, so
// B * grid * Hq <= the size of q); otherwise a single element stands in and
// the library reports what is wrong.
struct outputs {
  std::vector<std::int64_t> out_shape, lse_shape;
  std::int64_t out_count = 0, lse_count = 0;
  std::vector<float> out, lse;
  std::vector<attn::float16> out_half;  // --out-dtype float16: out is stored here instead

  // Where out is stored as T (float or attn::float16).
  template <class T>
  T* out_as() {
    if constexpr (std::is_same_v<T, float>) {
      return out.data();
    } else {
      out_half.resize(out.size());
      return out_half.data();
    }
  }

  outputs(std::vector<std::int64_t> out_shape_, bool with_lse, bool sizes_valid)
      : out_shape(std::move(out_shape_)), lse_shape(out_shape.begin(), out_shape.end() - 1) {
    if (sizes_valid) {
      lse_count = 1;
      for (std::int64_t e : lse_shape) lse_count *= e;
      if (__builtin_mul_overflow(lse_count, out_shape.back(), &out_count))
        throw std::runtime_error("out: shape " + attn::npy::shape_string(out_shape) +
                                 " overflows: its element count exceeds int64");
    }
    out.resize(static_cast<std::size_t>(std::max<std::int64_t>(out_count, 1)));
    if (with_lse) lse.resize(static_cast<std::size_t>(std::max<std::int64_t>(lse_count, 1)));
  }

  // Stages both files, then moves them into place together.
  void write(const common_flags& c) const {
    std::optional<attn::npy::staged_file> out_file, lse_file;
    if (out_half.empty()) {
      out_file.emplace(c.out, out_shape, std::span<const float>(out.data(), static_cast<std::size_t>(out_count)));
    } else {
      std::vector<std::uint16_t> bits(static_cast<std::size_t>(out_count));
      for (std::size_t n = 0; n < bits.size(); ++n) bits[n] = out_half[n].bits;
      out_file.emplace(c.out, out_shape, std::span<const std::uint16_t>(bits));
    }
    if (c.lse)
      lse_file.emplace(*c.lse, lse_shape,
                       std::span<const float>(lse.data(), static_cast<std::size_t>(lse_count)));
    out_file->commit();
    if (lse_file) lse_file->commit();
  }
};

// Runs `once` (the warm-up of a timed run), then `repeat` timed runs; the
// median seconds of those, or nothing without --repeat.
template <class F>
std::optional<double> run_and_time(const F& once, int repeat) {
  once();
  if (repeat <= 0) return std::nullopt;
  std::vector<double> seconds;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    const auto t1 = std::chrono::steady_clock::now();
    seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const std::size_t mid = seconds.size() / 2;
  return seconds.size() % 2 ? seconds[mid] : 0.5 * (seconds[mid - 1] + seconds[mid]);
}

// The --repeat JSON line; `flops` counts the allowed pairs only (DESIGN §4).
void print_timing(double median_s, double flops) {
  // A run never takes zero time; the clamp to one clock tick only keeps the
  // JSON finite on a coarse clock.
  const double tick = std::chrono::duration<double>(std::chrono::steady_clock::duration(1)).count();
  const double t = std::max(median_s, tick);
  std::printf("{\"median_s\": %.9g, \"gflops\": %.9g}\n", t, flops / t * 1e-9);
  std::fflush(stdout);
}

int run_softmax(const arguments& args, const common_flags& c) {
  attn::softmax_options opt;
  opt.scale = c.scale;
  opt.causal = args.has("--causal");
  if (auto w = args.get("--window")) opt.window = parse_window(*w);
  if (auto n = args.get("--sink-tokens"))
    opt.sink_tokens = parse_non_negative_int("--sink-tokens", *n);
  if (auto s = args.get("--softcap")) opt.softcap = parse_positive_float("--softcap", *s);
  opt.alibi = args.has("--alibi");

  const input q = read_float_input("--q", c.q, 4, "(B, Nq, Hq, Dk)");
  const input k = read_float_input("--k", c.k, 4, "(B, Nk, Hkv, Dk)");
  const input v = read_float_input("--v", c.v, 4, "(B, Nk, Hkv, Dv)");
  if (v.stored != k.stored)
    throw std::runtime_error("--v " + c.v + ": dtype '" + std::string(attn::npy::descr(v.stored)) +
                             "' differs from --k's '" + std::string(attn::npy::descr(k.stored)) +
                             "' (k and v are stored alike)");
  const std::int64_t batch = q.shape[0], nq = q.shape[1], hq = q.shape[2], dk = q.shape[3];
  const std::int64_t nk = k.shape[1], dv = v.shape[3];

  std::optional<input> sinks;
  if (auto s = args.get("--sinks")) {
    sinks = read_input("--sinks", *s, 1, "(Hq,)");
    if (sinks->shape[0] != hq)
      throw std::runtime_error("--sinks " + *s + ": expected shape (" + std::to_string(hq) +
                               ",) to match Hq of --q, got " +
                               attn::npy::shape_string(sinks->shape));
    opt.sinks = sinks->data();
  }
  std::optional<input> bias;
  if (auto path = args.get("--bias")) {
    bias = read_input("--bias", *path, 4, "(B|1, Hq|1, Nq, Nk)");
    const std::vector<std::int64_t>& e = bias->shape;
    if ((e[0] != batch && e[0] != 1) || (e[1] != hq && e[1] != 1) || e[2] != nq || e[3] != nk)
      throw std::runtime_error("--bias " + *path + ": expected shape (B|1, Hq|1, Nq, Nk) = (" +
                               std::to_string(batch) + "|1, " + std::to_string(hq) + "|1, " +
                               std::to_string(nq) + ", " + std::to_string(nk) +
                               ") to match --q and --k, got " + attn::npy::shape_string(e));
    opt.bias = view_of(*bias);
  }
  std::vector<std::int32_t> document_ids;
  if (auto path = args.get("--doc")) {
    document_ids = read_document_ids(*path, nq, nk);
    opt.document_ids = document_ids;
  }

  // The library checks every shape.
  outputs result({batch, nq, hq, dv}, c.lse.has_value(), hq >= 1 && dk >= 1 && dv >= 1);
  const attn::view3<float> lse_view =
      c.lse ? attn::bsh(result.lse.data(), batch, nq, hq) : attn::view3<float>{};

  // Each tensor in its stored type (k and v alike), out in --out-dtype's.
  const attn::openmp exec{c.threads};
  std::optional<double> median_s;
  with_element(q.stored, [&](auto q_type) {
    with_element(k.stored, [&](auto kv_type) {
      with_element(c.out_type, [&](auto out_type_tag) {
        using Q = decltype(q_type);
        using KV = decltype(kv_type);
        using O = decltype(out_type_tag);
        std::vector<Q> q_store;
        std::vector<KV> k_store, v_store;
        const auto qv = attn::bshd<const Q>(values_as(q, q_store), batch, nq, hq, dk);
        const auto kv = attn::bshd<const KV>(values_as(k, k_store), k.shape[0], nk, k.shape[2], k.shape[3]);
        const auto vv = attn::bshd<const KV>(values_as(v, v_store), v.shape[0], v.shape[1], v.shape[2], dv);
        const auto out_view = attn::bshd(result.out_as<O>(), batch, nq, hq, dv);
        median_s = run_and_time(
            [&] { attn::attention<attn::default_backend>(qv, kv, vv, out_view, lse_view, opt, exec); },
            c.repeat);
      });
    });
  });
  result.write(c);
  if (median_s)
    print_timing(*median_s, attn::bench::attention_flops(batch, nq, nk, hq, dk, dv, opt));
  return 0;
}

// --kernel, --dilation, --stride and --causal-dims as one neighborhood_dim
// per grid dimension; the flags other than --kernel default per dimension
// (dilation 1, stride 1, not causal) but, when given, need one value per
// dimension of --kernel.
std::vector<attn::neighborhood_dim> parse_neighborhood_dims(const arguments& args) {
  const std::string kernel_text = args.required("--kernel");
  const std::vector<int> kernel = parse_per_dimension("--kernel", kernel_text);
  std::vector<attn::neighborhood_dim> dims(kernel.size());
  for (std::size_t d = 0; d < dims.size(); ++d) dims[d].kernel = kernel[d];
  const auto per_dimension = [&](std::string_view flag) -> std::vector<int> {
    const std::optional<std::string> text = args.get(flag);
    if (!text) return {};
    std::vector<int> values = parse_per_dimension(flag, *text);
    if (values.size() != kernel.size())
      throw usage_error(std::string(flag) + " expects " + std::to_string(kernel.size()) +
                        (kernel.size() == 1 ? " value" : " values") +
                        ", one per value of --kernel " + kernel_text + ", got " +
                        std::to_string(values.size()) + " in '" + *text + "'");
    return values;
  };
  const std::vector<int> dilation = per_dimension("--dilation");
  const std::vector<int> stride = per_dimension("--stride");
  const std::vector<int> causal = per_dimension("--causal-dims");
  for (std::size_t d = 0; d < dims.size(); ++d) {
    if (!dilation.empty()) dims[d].dilation = dilation[d];
    if (!stride.empty()) dims[d].stride = stride[d];
    if (!causal.empty()) {
      if (causal[d] != 0 && causal[d] != 1)
        throw usage_error("--causal-dims expects 0 or 1 per dimension, got '" +
                          *args.get("--causal-dims") + "'");
      dims[d].causal = causal[d] == 1;
    }
  }
  return dims;
}

// "--kernel 3,5 --dilation 1,2 --stride 1,1 --causal-dims 0,1": the values a
// run used, defaults included, for messages.
std::string neighborhood_flags_string(std::span<const attn::neighborhood_dim> dims) {
  std::string kernel, dilation, stride, causal;
  for (std::size_t d = 0; d < dims.size(); ++d) {
    const std::string sep = d ? "," : "";
    kernel += sep + std::to_string(dims[d].kernel);
    dilation += sep + std::to_string(dims[d].dilation);
    stride += sep + std::to_string(dims[d].stride);
    causal += sep + (dims[d].causal ? "1" : "0");
  }
  return "--kernel " + kernel + " --dilation " + dilation + " --stride " + stride +
         " --causal-dims " + causal;
}

// Neighborhood attention of rank R: q/k/v (B, X[, Y[, Z]], H, D) in C order.
template <std::size_t R>
int run_neighborhood(const common_flags& c, std::span<const attn::neighborhood_dim> parsed) {
  constexpr std::size_t N = R + 3;
  attn::neighborhood_options<R> opt;
  std::copy(parsed.begin(), parsed.end(), opt.dims.begin());
  opt.scale = c.scale;

  // "(B, X, Y, Hq, Dk) as --kernel has 2 values"
  const auto layout = [](std::string_view heads_and_dim) {
    constexpr std::string_view axes[] = {"X", "Y", "Z"};
    std::string s = "(B";
    for (std::size_t d = 0; d < R; ++d) s += ", " + std::string(axes[d]);
    s += ", " + std::string(heads_and_dim) + ") as --kernel has " + std::to_string(R) +
         (R == 1 ? " value" : " values");
    return s;
  };
  const input q = read_float_input("--q", c.q, N, layout("Hq, Dk"));
  const input k = read_float_input("--k", c.k, N, layout("Hkv, Dk"));
  const input v = read_float_input("--v", c.v, N, layout("Hkv, Dv"));
  // The batch and grid of k and v must be those of q; the library checks the
  // rest (Dk, Hkv, GQA).
  const std::span<const std::int64_t> batch_and_grid(q.shape.data(), R + 1);
  for (const auto& [flag, path, t] : {std::tuple{"--k", &c.k, &k}, std::tuple{"--v", &c.v, &v}}) {
    if (!std::equal(batch_and_grid.begin(), batch_and_grid.end(), t->shape.begin()))
      throw std::runtime_error(std::string(flag) + " " + *path + ": expected the batch and grid " +
                               attn::npy::shape_string(batch_and_grid) +
                               " of --q in front of (H, D), got shape " +
                               attn::npy::shape_string(t->shape));
  }
  const std::int64_t hq = q.shape[N - 2], dk = q.shape[N - 1], dv = v.shape[N - 1];

  std::vector<std::int64_t> out_shape(q.shape);
  out_shape[N - 1] = dv;
  outputs result(std::move(out_shape), c.lse.has_value(), hq >= 1 && dk >= 1 && dv >= 1);
  const auto lse_view = c.lse ? c_order_view<N - 1>(result.lse.data(), result.lse_shape)
                              : attn::strided_view<float, N - 1>{};
  const attn::openmp exec{c.threads};
  std::optional<double> median_s;
  try {
    with_shared_element({&q, &k, &v}, c.out_type, [&](auto type, auto out_type) {
      using T = decltype(type);
      const auto out_view = c_order_view<N>(result.out_as<decltype(out_type)>(), result.out_shape);
      std::vector<T> q_store, k_store, v_store;
      const auto q_view = c_order_view<N>(values_as(q, q_store), q.shape);
      const auto k_view = c_order_view<N>(values_as(k, k_store), k.shape);
      const auto v_view = c_order_view<N>(values_as(v, v_store), v.shape);
      median_s = run_and_time(
          [&] {
            attn::neighborhood_attention<attn::default_backend>(q_view, k_view, v_view, out_view, lse_view, opt,
                                                                exec);
          },
          c.repeat);
    });
  } catch (const attn::error& e) {
    // The library names the dimension and parameter; add the flags' values
    // (defaults included) that it checked.
    const std::string message = e.what();
    if (message.find("neighborhood dimension") == std::string::npos) throw;
    throw std::runtime_error(message + " (" + neighborhood_flags_string(parsed) + ")");
  }
  result.write(c);
  if (median_s) {
    std::array<attn::index_t, R> length{};
    std::copy_n(q.shape.begin() + 1, R, length.begin());
    print_timing(*median_s, attn::bench::attention_flops(q.shape[0], length, hq, dk, dv, opt.dims));
  }
  return 0;
}

// --block, --layout, --topk and --causal of --variant block_sparse: an
// explicit layout with query and key blocks, or MoBA gating with one key
// block size.
struct block_sparse_flags {
  std::optional<std::string> layout;  // the layout file, or nothing with --topk
  int topk = 0;                       // MoBA: blocks per query, own block included
  int block_q = 0, block_k = 0;
  bool causal = false;  // with --layout only; MoBA is causal by definition
};

// "BQ,BK" or "B" (BQ = BK = B), each a positive integer.
std::array<int, 2> parse_block(const std::string& text) {
  std::array<int, 2> sizes{};
  std::size_t count = 0;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (;;) {
    int x = 0;
    const auto [next, ec] = std::from_chars(p, end, x);
    if (ec != std::errc() || x < 1 || count == sizes.size() || (next != end && *next != ','))
      throw usage_error(
          "--block expects BQ,BK or B (positive integers; B alone means BQ = BK = B), got '" +
          text + "'");
    sizes[count++] = x;
    if (next == end) break;
    p = next + 1;
  }
  if (count == 1) sizes[1] = sizes[0];
  return sizes;
}

block_sparse_flags parse_block_sparse(const arguments& args) {
  block_sparse_flags f;
  f.layout = args.get("--layout");
  const std::optional<std::string> topk = args.get("--topk");
  if (f.layout && topk)
    throw usage_error(
        "--layout and --topk exclude each other: give --layout (an explicit block layout) or "
        "--topk (MoBA gating chooses the blocks), not both");
  if (!f.layout && !topk)
    throw usage_error(
        "--variant block_sparse needs --layout LAYOUT.npy (an explicit block layout) or --topk K "
        "(MoBA gating)");
  const std::optional<std::string> block = args.get("--block");
  if (!block)
    throw usage_error(topk ? "missing required flag --block (with --topk: the key block size B)"
                           : "missing required flag --block (with --layout: BQ,BK or B)");
  const std::array<int, 2> sizes = parse_block(*block);
  f.block_q = sizes[0];
  f.block_k = sizes[1];
  if (topk) {
    if (f.block_q != f.block_k)
      throw usage_error(
          "--block with --topk (MoBA) takes one block size, B or B,B, as MoBA "
          "blocks only the keys; got BQ = " +
          std::to_string(f.block_q) + " != BK = " + std::to_string(f.block_k));
    f.topk = parse_positive_int("--topk", *topk);
  }
  f.causal = args.has("--causal");
  return f;
}

// A block layout as read from --layout.
struct layout_input {
  std::vector<std::int64_t> shape;  // (Hq|1, nbq, nbk)
  std::vector<std::uint8_t> blocks;
};

// --layout: (Hq|1, ceil(Nq / BQ), ceil(Nk / BK)) uint8, checked here so that
// the message names the flag and the file (the library checks it again).
layout_input read_layout(const std::string& path, const block_sparse_flags& f, std::int64_t hq,
                         std::int64_t nq, std::int64_t nk) {
  attn::npy::array a =
      read_npy("--layout", path, {attn::npy::dtype::u8}, "uint8 '|u1'", 3, "(Hq|1, nbq, nbk)");
  const std::int64_t nbq = (nq + f.block_q - 1) / f.block_q;
  const std::int64_t nbk = (nk + f.block_k - 1) / f.block_k;
  if ((a.shape[0] != hq && a.shape[0] != 1) || a.shape[1] != nbq || a.shape[2] != nbk)
    throw std::runtime_error(
        "--layout " + path + ": expected shape (Hq|1, ceil(Nq/BQ), ceil(Nk/BK)) = (" +
        std::to_string(hq) + "|1, " + std::to_string(nbq) + ", " + std::to_string(nbk) +
        ") for Hq = " + std::to_string(hq) + ", Nq = " + std::to_string(nq) +
        ", Nk = " + std::to_string(nk) + " and --block " + std::to_string(f.block_q) + "," +
        std::to_string(f.block_k) + ", got " + attn::npy::shape_string(a.shape));
  return {std::move(a.shape), std::move(std::get<std::vector<std::uint8_t>>(a.data))};
}

// Block-sparse attention: an explicit layout, or MoBA gating with --topk.
// Shapes as softmax; the library checks q, k and v.
int run_block_sparse(const common_flags& c, const block_sparse_flags& f) {
  const input q = read_float_input("--q", c.q, 4, "(B, Nq, Hq, Dk)");
  const input k = read_float_input("--k", c.k, 4, "(B, Nk, Hkv, Dk)");
  const input v = read_float_input("--v", c.v, 4, "(B, Nk, Hkv, Dv)");
  const std::int64_t batch = q.shape[0], nq = q.shape[1], hq = q.shape[2], dk = q.shape[3];
  const std::int64_t nk = k.shape[1], dv = v.shape[3];

  // --layout, read and checked before anything runs; none with --topk (MoBA).
  const std::optional<layout_input> layout =
      f.layout ? std::optional(read_layout(*f.layout, f, hq, nq, nk)) : std::nullopt;

  outputs result({batch, nq, hq, dv}, c.lse.has_value(), hq >= 1 && dk >= 1 && dv >= 1);
  const attn::view3<float> lse_view =
      c.lse ? attn::bsh(result.lse.data(), batch, nq, hq) : attn::view3<float>{};

  const attn::openmp exec{c.threads};
  std::optional<double> median_s;
  double flops = 0;
  const attn::block_sparse_options layout_opt{f.block_q, f.block_k, f.causal, c.scale};
  const attn::moba_options moba_opt{f.block_k, f.topk, c.scale};
  with_shared_element({&q, &k, &v}, c.out_type, [&](auto type, auto out_type) {
    using T = decltype(type);
    const auto out_view = attn::bshd(result.out_as<decltype(out_type)>(), batch, nq, hq, dv);
    std::vector<T> q_store, k_store, v_store;
    const auto q_view = c_order_view<4>(values_as(q, q_store), q.shape);
    const auto k_view = c_order_view<4>(values_as(k, k_store), k.shape);
    const auto v_view = c_order_view<4>(values_as(v, v_store), v.shape);
    if (layout) {
      // The view needs a non-null pointer even for an empty layout (Nq = 0).
      static const std::uint8_t no_blocks = 0;
      const auto layout_view = c_order_view<3>(layout->blocks.empty() ? &no_blocks : layout->blocks.data(),
                                               std::span<const std::int64_t>(layout->shape));
      median_s = run_and_time(
          [&] {
            attn::block_sparse_attention<attn::default_backend>(q_view, k_view, v_view, out_view, lse_view,
                                                                attn::block_layout::dense(layout_view), layout_opt,
                                                                exec);
          },
          c.repeat);
      if (median_s) flops = attn::bench::attention_flops(batch, layout_view, nq, nk, hq, dk, dv, layout_opt);
    } else {
      median_s = run_and_time(
          [&] {
            attn::moba_attention<attn::default_backend>(q_view, k_view, v_view, out_view, lse_view, moba_opt, exec);
          },
          c.repeat);
      // The pairs come from the gate run once more: it is deterministic, so
      // this is the selection the timed runs attended to.
      if (median_s)
        flops = attn::bench::attention_flops(attn::moba_gate<attn::default_backend>(q_view, k_view, moba_opt, exec),
                                             nk, dk, dv, moba_opt);
    }
  });
  result.write(c);
  if (median_s) print_timing(*median_s, flops);
  return 0;
}

// --feature, --normalize, --causal and --decay of --variant linear.
struct linear_flags {
  attn::feature_kind feature = attn::feature_kind::identity;
  bool normalize = false;
  bool causal = false;
  std::optional<std::string> decay;  // the (Hq,) decay file
};

linear_flags parse_linear(const arguments& args) {
  linear_flags f;
  if (auto name = args.get("--feature")) {
    if (*name == "identity") {
      f.feature = attn::feature_kind::identity;
    } else if (*name == "elu1") {
      f.feature = attn::feature_kind::elu_plus_one;
    } else if (*name == "relu") {
      f.feature = attn::feature_kind::relu;
    } else {
      throw usage_error("--feature expects identity, elu1 or relu, got '" + *name + "'");
    }
  }
  f.normalize = args.has("--normalize");
  f.causal = args.has("--causal");
  f.decay = args.get("--decay");
  if (f.decay && !f.causal)
    throw usage_error(
        "--decay needs --causal: a decay weighs each key by its distance back from the query, "
        "which only causal attention defines");
  return f;
}

// --decay: (Hq,) float32 with every lambda_h in (0, 1], checked here so that
// the message names the flag and the file (the library checks it again).
std::vector<float> read_decay(const std::string& path, std::int64_t hq) {
  input decay = read_input("--decay", path, 1, "(Hq,)");
  if (decay.shape[0] != hq)
    throw std::runtime_error("--decay " + path + ": expected shape (" + std::to_string(hq) +
                             ",) to match Hq of --q, got " + attn::npy::shape_string(decay.shape));
  for (std::size_t h = 0; h < decay.values.size(); ++h) {
    const float lambda = decay.values[h];
    if (!(lambda > 0.0f && lambda <= 1.0f))
      throw std::runtime_error("--decay " + path + ": expected every lambda_h in (0, 1], got " +
                               "decay[" + std::to_string(h) + "] = " + std::to_string(lambda));
  }
  return std::move(decay.values);
}

// Linear attention: shapes as softmax, no lse; the library checks q, k, v.
int run_linear(const common_flags& c, const linear_flags& f) {
  attn::linear_options opt;
  opt.causal = f.causal;
  opt.normalize = f.normalize;
  opt.feature = f.feature;
  if (c.scale) opt.scale = *c.scale;

  const input q = read_input("--q", c.q, 4, "(B, Nq, Hq, Dk)");
  const input k = read_input("--k", c.k, 4, "(B, Nk, Hkv, Dk)");
  const input v = read_input("--v", c.v, 4, "(B, Nk, Hkv, Dv)");
  const std::int64_t batch = q.shape[0], nq = q.shape[1], hq = q.shape[2], dk = q.shape[3];
  const std::int64_t nk = k.shape[1], dv = v.shape[3];

  std::vector<float> decay;
  if (f.decay) {
    decay = read_decay(*f.decay, hq);
    opt.decay = decay;
  }

  outputs result({batch, nq, hq, dv}, false, hq >= 1 && dk >= 1 && dv >= 1);
  const attn::view4<float> out_view = attn::bshd(result.out.data(), batch, nq, hq, dv);

  const attn::openmp exec{c.threads};
  const std::optional<double> median_s = run_and_time(
      [&] {
        attn::linear_attention<attn::default_backend>(view_of(q), view_of(k), view_of(v), out_view,
                                                      opt, exec);
      },
      c.repeat);
  result.write(c);
  if (median_s) {
    // The features and the chunk the run used, from the library's own rules.
    attn::index_t features = 0;
    attn::detail::with_feature(opt.feature, [&](const auto& phi) { features = phi.features(dk); });
    const attn::index_t chunk = attn::detail::linear_chunk(attn::detail::make_linear_problem(
        view_of(q), view_of(k), view_of(v), out_view, features, opt));
    print_timing(*median_s,
                 attn::bench::linear_flops(batch, nq, nk, hq, features, dv, opt.causal, chunk));
  }
  return 0;
}

// --dv and --scale of --variant latent, both required.
struct latent_flags {
  int dc = 0;  // latent channels: values are the first dc of each cache row
  float scale = 0;
  bool causal = false;
};

latent_flags parse_latent(const arguments& args) {
  latent_flags f;
  const std::optional<std::string> dc = args.get("--dv");
  if (!dc)
    throw usage_error(
        "--variant latent needs --dv DC, the latent channels: the values are the first DC "
        "channels of each cache row of --k");
  f.dc = parse_positive_int("--dv", *dc);
  const std::optional<std::string> scale = args.get("--scale");
  if (!scale)
    throw usage_error(
        "--variant latent needs --scale F, the model's softmax scale (e.g. 1/sqrt(192) = "
        "0.0721688 for DeepSeek-V3): the cache row width Dc+Dr is not the head dimension, so "
        "there is no default");
  f.scale = parse_float("--scale", *scale);
  f.causal = args.has("--causal");
  return f;
}

// Latent attention over a contiguous cache: q (B, Nq, H, Dc+Dr) and the
// cache (B, Nk, 1, Dc+Dr) of --k -> out (B, Nq, H, Dc). The cache's shape and
// --dv are checked here so that the messages name the flags and the file
// (the library checks them again, and q, out and lse).
int run_latent(const common_flags& c, const latent_flags& f) {
  const input q = read_float_input("--q", c.q, 4, "(B, Nq, H, Dc+Dr)");
  const input cache = read_float_input("--k", c.k, 4, "(B, Nk, 1, Dc+Dr), the latent cache");
  const std::int64_t batch = q.shape[0], nq = q.shape[1], heads = q.shape[2], width = q.shape[3];
  const std::int64_t nk = cache.shape[1];
  if (cache.shape[0] != batch || cache.shape[2] != 1 || cache.shape[3] != width)
    throw std::runtime_error("--k " + c.k + ": expected the latent cache (B, Nk, 1, Dc+Dr) = (" +
                             std::to_string(batch) + ", Nk, 1, " + std::to_string(width) +
                             ") to match --q, one row per token shared by every head, got " +
                             attn::npy::shape_string(cache.shape));
  if (f.dc > width)
    throw std::runtime_error("--dv " + std::to_string(f.dc) + ": expected at most Dc+Dr = " +
                             std::to_string(width) + ", the row width of --k " + c.k);

  attn::latent_options opt;
  opt.scale = f.scale;
  opt.dc = f.dc;
  opt.causal = f.causal;

  outputs result({batch, nq, heads, f.dc}, c.lse.has_value(), heads >= 1 && width >= 1);
  const attn::view3<float> lse_view =
      c.lse ? attn::bsh(result.lse.data(), batch, nq, heads) : attn::view3<float>{};

  const attn::openmp exec{c.threads};
  std::optional<double> median_s;
  with_shared_element({&q, &cache}, c.out_type, [&](auto type, auto out_type) {
    using T = decltype(type);
    const auto out_view = attn::bshd(result.out_as<decltype(out_type)>(), batch, nq, heads, f.dc);
    std::vector<T> q_store, cache_store;
    const auto q_view = c_order_view<4>(values_as(q, q_store), q.shape);
    const auto cache_view = c_order_view<4>(values_as(cache, cache_store), cache.shape);
    median_s = run_and_time(
        [&] { attn::latent_attention<attn::default_backend>(q_view, cache_view, out_view, lse_view, opt, exec); },
        c.repeat);
  });
  result.write(c);
  if (median_s)
    print_timing(*median_s,
                 attn::bench::attention_flops(batch, nq, nk, heads, width, f.dc, f.causal));
  return 0;
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fwrite(usage_text.data(), 1, usage_text.size(), stdout);
      return 0;
    }
  }
  const arguments args(argc, argv);
  const std::string variant = checked_variant(args);
  if (variant == "neighborhood") {
    const std::vector<attn::neighborhood_dim> dims = parse_neighborhood_dims(args);
    const common_flags c = parse_common(args);
    switch (dims.size()) {
      case 1:
        return run_neighborhood<1>(c, dims);
      case 2:
        return run_neighborhood<2>(c, dims);
      default:
        return run_neighborhood<3>(c, dims);
    }
  }
  if (variant == "block_sparse") {
    const block_sparse_flags f = parse_block_sparse(args);
    return run_block_sparse(parse_common(args), f);
  }
  if (variant == "linear") {
    const linear_flags f = parse_linear(args);
    return run_linear(parse_common(args), f);
  }
  if (variant == "latent") {
    const latent_flags f = parse_latent(args);
    return run_latent(parse_common(args, /*with_v=*/false), f);
  }
  return run_softmax(args, parse_common(args));
}

// One line on stderr, whatever the message holds.
void report(std::string_view message) {
  std::string line = "attnrun: ";
  for (char c : message) line += (c == '\n' || c == '\r') ? ' ' : c;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const usage_error& e) {
    report(e.what());
    return exit_usage;
  } catch (const std::bad_alloc&) {
    report("out of memory");
    return exit_failure;
  } catch (const std::exception& e) {  // attn::error, npy errors, I/O
    report(e.what());
    return exit_failure;
  }
}
