// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// attnrun: runs an attention variant on .npy files (DESIGN.md §4).
//
//   attnrun --variant softmax --q Q.npy --k K.npy --v V.npy --out O.npy
//           [--lse L.npy] [--scale F] [--causal] [--sinks S.npy]
//           [--window L,R] [--sink-tokens N] [--softcap F] [--alibi]
//           [--bias B.npy] [--doc D.npy] [--threads N] [--repeat N]
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
#include <map>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
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
               [--bias B.npy] [--doc D.npy] [--threads N] [--repeat N]

Runs attention on .npy files (float32 little-endian, C order):
  q (B, Nq, Hq, Dk), k (B, Nk, Hkv, Dk), v (B, Nk, Hkv, Dv)
  -> out (B, Nq, Hq, Dv), lse (B, Nq, Hq) natural-log log-sum-exp.
Hq % Hkv == 0 (GQA/MQA); masks are bottom-right aligned when Nq != Nk.

  --variant NAME  softmax (neighborhood, block_sparse, linear and latent are
                  not implemented yet)
  --q/--k/--v F   input tensors
  --out F         output tensor, written only when the run succeeds
  --lse F         also write the log-sum-exp of every row
  --scale F       score scale (default 1/sqrt(Dk))
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
  --threads N     OpenMP threads (default: all cores)
  --repeat N      time N runs after a warm-up and print one JSON line,
                  {"median_s": ..., "gflops": ...}, on stdout
  --help          this text

Flags may be written "--flag value" or "--flag=value". On error attnrun prints
one line on stderr, writes no output file and exits 1 (bad input) or 2 (bad
command line).
)";

// A mistake on the command line (exit 2, as opposed to bad input data).
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Flags of DESIGN §4. Flags of this build are handled; the others are
// recognised (so their values parse) and rejected until their issue lands.
struct flag_info {
  bool takes_value;
  bool implemented;
};
constexpr flag_info with_value{true, true};
constexpr flag_info switch_only{false, true};
constexpr flag_info later_with_value{true, false};
constexpr flag_info later_switch{false, false};

const std::map<std::string, flag_info, std::less<>>& flag_table() {
  static const std::map<std::string, flag_info, std::less<>> table = {
      {"--variant", with_value},
      {"--q", with_value},
      {"--k", with_value},
      {"--v", with_value},
      {"--out", with_value},
      {"--lse", with_value},
      {"--scale", with_value},
      {"--causal", switch_only},
      {"--sinks", with_value},
      {"--threads", with_value},
      {"--repeat", with_value},
      {"--window", with_value},
      {"--sink-tokens", with_value},
      {"--softcap", with_value},
      {"--alibi", switch_only},
      {"--bias", with_value},
      {"--doc", with_value},
      {"--kernel", later_with_value},
      {"--dilation", later_with_value},
      {"--stride", later_with_value},
      {"--causal-dims", later_with_value},
      {"--block", later_with_value},
      {"--layout", later_with_value},
      {"--topk", later_with_value},
      {"--feature", later_with_value},
      {"--normalize", later_switch},
      {"--decay", later_with_value},
      {"--dv", later_with_value},
  };
  return table;
}

constexpr std::string_view variants_implemented[] = {"softmax"};
constexpr std::string_view variants_planned[] = {"neighborhood", "block_sparse", "linear",
                                                 "latent"};

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

// A float32 input tensor of a fixed rank, read whole.
struct input {
  std::vector<std::int64_t> shape;
  std::vector<float> values;

  // The view needs a non-null pointer even for an empty tensor.
  const float* data() const {
    static const float none = 0.0f;
    return values.empty() ? &none : values.data();
  }
};

// The .npy file of `flag`, checked to hold `type` at `rank`; every message
// starts with the flag and the path.
attn::npy::array read_npy(std::string_view flag, const std::string& path, attn::npy::dtype type,
                          std::string_view expected_type, std::size_t rank,
                          std::string_view layout) {
  attn::npy::array a;
  try {
    a = attn::npy::read(path);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(flag) + " " + e.what());
  }
  if (a.stored != type)
    throw std::runtime_error(
        std::string(flag) + " " + path + ": dtype '" + std::string(attn::npy::descr(a.stored)) +
        "' is not supported by --variant softmax (expected " + std::string(expected_type) + ")");
  if (a.shape.size() != rank)
    throw std::runtime_error(std::string(flag) + " " + path + ": expected rank " +
                             std::to_string(rank) + " " + std::string(layout) + ", got shape " +
                             attn::npy::shape_string(a.shape));
  return a;
}

input read_input(std::string_view flag, const std::string& path, std::size_t rank,
                 std::string_view layout) {
  attn::npy::array a = read_npy(flag, path, attn::npy::dtype::f32, "float32 '<f4'", rank, layout);
  return {std::move(a.shape), std::move(a.floats())};
}

// --doc: (Nk,) int32 document ids, checked here so that every message names
// the flag. Contiguity and Nq <= Nk are the library's rules, asked of the
// mask the library builds from the ids.
std::vector<std::int32_t> read_document_ids(const std::string& path, std::int64_t nq,
                                            std::int64_t nk) {
  attn::npy::array a = read_npy("--doc", path, attn::npy::dtype::i32, "int32 '<i4'", 1, "(Nk,)");
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

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  const auto ca = std::filesystem::weakly_canonical(a, ec1);
  const auto cb = std::filesystem::weakly_canonical(b, ec2);
  return (ec1 || ec2) ? a == b : ca == cb;
}

void check_variant(const arguments& args) {
  const std::string variant = args.required("--variant");
  for (std::string_view v : variants_implemented)
    if (variant == v) return;
  for (std::string_view v : variants_planned)
    if (variant == v) throw usage_error("--variant " + variant + " is not implemented yet");
  throw usage_error("--variant " + variant +
                    ": expected one of softmax, neighborhood, block_sparse, linear, latent");
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
  check_variant(args);
  for (const std::string& flag : args.order())
    if (!flag_table().find(flag)->second.implemented)
      throw usage_error(flag + " is not supported yet");

  const std::string q_path = args.required("--q"), k_path = args.required("--k"),
                    v_path = args.required("--v"), out_path = args.required("--out");
  const std::optional<std::string> lse_path = args.get("--lse");
  attn::softmax_options opt;
  if (auto s = args.get("--scale")) opt.scale = parse_float("--scale", *s);
  opt.causal = args.has("--causal");
  if (auto w = args.get("--window")) opt.window = parse_window(*w);
  if (auto n = args.get("--sink-tokens"))
    opt.sink_tokens = parse_non_negative_int("--sink-tokens", *n);
  if (auto c = args.get("--softcap")) opt.softcap = parse_positive_float("--softcap", *c);
  opt.alibi = args.has("--alibi");
  const int threads =
      args.has("--threads") ? parse_positive_int("--threads", *args.get("--threads")) : 0;
  const int repeat =
      args.has("--repeat") ? parse_positive_int("--repeat", *args.get("--repeat")) : 0;
  if (lse_path && same_file(*lse_path, out_path))
    throw usage_error("--out and --lse name the same file '" + out_path + "'");

  const input q = read_input("--q", q_path, 4, "(B, Nq, Hq, Dk)");
  const input k = read_input("--k", k_path, 4, "(B, Nk, Hkv, Dk)");
  const input v = read_input("--v", v_path, 4, "(B, Nk, Hkv, Dv)");
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

  // The library checks every shape. Buffers are sized only for a problem it
  // can accept (Hq, Dk, Dv >= 1, so B * Nq * Hq <= the size of q); otherwise
  // a single element stands in and the library reports what is wrong.
  const std::vector<std::int64_t> out_shape{batch, nq, hq, dv}, lse_shape{batch, nq, hq};
  std::int64_t out_count = 0, lse_count = 0;
  if (hq >= 1 && dk >= 1 && dv >= 1) {
    lse_count = batch * nq * hq;
    if (__builtin_mul_overflow(lse_count, dv, &out_count))
      throw std::runtime_error("out: shape " + attn::npy::shape_string(out_shape) +
                               " overflows: its element count exceeds int64");
  }
  std::vector<float> out(static_cast<std::size_t>(std::max<std::int64_t>(out_count, 1)));
  std::vector<float> lse(lse_path ? static_cast<std::size_t>(std::max<std::int64_t>(lse_count, 1))
                                  : 0);
  const attn::view4<float> out_view = attn::bshd(out.data(), batch, nq, hq, dv);
  const attn::view3<float> lse_view =
      lse_path ? attn::bsh(lse.data(), batch, nq, hq) : attn::view3<float>{};

  const attn::openmp exec{threads};
  const auto once = [&] {
    attn::attention<attn::default_backend>(view_of(q), view_of(k), view_of(v), out_view, lse_view,
                                           opt, exec);
  };
  once();  // also the warm-up of a timed run
  std::optional<double> median_s;
  if (repeat > 0) {
    std::vector<double> seconds;
    for (int r = 0; r < repeat; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      once();
      const auto t1 = std::chrono::steady_clock::now();
      seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    std::sort(seconds.begin(), seconds.end());
    const std::size_t mid = seconds.size() / 2;
    median_s = seconds.size() % 2 ? seconds[mid] : 0.5 * (seconds[mid - 1] + seconds[mid]);
  }

  // Stage both outputs, then move them into place together.
  std::optional<attn::npy::staged_file> out_file, lse_file;
  out_file.emplace(out_path, out_shape,
                   std::span<const float>(out.data(), static_cast<std::size_t>(out_count)));
  if (lse_path)
    lse_file.emplace(*lse_path, lse_shape,
                     std::span<const float>(lse.data(), static_cast<std::size_t>(lse_count)));
  out_file->commit();
  if (lse_file) lse_file->commit();

  if (median_s) {
    // A run never takes zero time; the clamp to one clock tick only keeps
    // the JSON finite on a coarse clock.
    const double tick =
        std::chrono::duration<double>(std::chrono::steady_clock::duration(1)).count();
    const double t = std::max(*median_s, tick);
    const double flops = attn::bench::attention_flops(batch, nq, nk, hq, dk, dv, opt);
    std::printf("{\"median_s\": %.9g, \"gflops\": %.9g}\n", t, flops / t * 1e-9);
    std::fflush(stdout);
  }
  return 0;
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
