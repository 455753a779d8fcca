// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0),
// for attnrun and the tests. No dependencies beyond the standard library.
//
//   read:  '<f4', '<f2' (widened to float in software), '|u1', '<i4'; C order.
//   write: '<f4' or '<f2' (from fp16 bit patterns), C order, version 1.0
//          (2.0 when the header needs it), the
//          header padded so the data starts on a 64-byte boundary, written to
//          a temporary file beside the target and renamed into place.
//
// Every malformed file is a format_error whose message starts with the file's
// path and names the problem; failing to open, read or write is an io_error.
// Bytes after the data are ignored, as NumPy does.

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace attn::npy {

// The file is not a valid .npy file, or uses a feature this reader lacks.
class format_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The file could not be opened, read, written or renamed.
class io_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Element types this reader understands (the dtype stored in the file).
enum class dtype { f32, f16, u8, i32 };

constexpr std::string_view descr(dtype t) {
  switch (t) {
    case dtype::f32:
      return "<f4";
    case dtype::f16:
      return "<f2";
    case dtype::u8:
      return "|u1";
    case dtype::i32:
      return "<i4";
  }
  return "?";
}

constexpr std::size_t itemsize(dtype t) {
  switch (t) {
    case dtype::f32:
      return 4;
    case dtype::f16:
      return 2;
    case dtype::u8:
      return 1;
    case dtype::i32:
      return 4;
  }
  return 0;
}

// IEEE 754 binary16 -> binary32, exact for every input (NaN payloads kept).
constexpr float half_to_float(std::uint16_t h) {
  constexpr std::uint32_t half_exp_max = 0x1f;
  constexpr std::uint32_t exp_rebias = 127 - 15;
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & half_exp_max;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits = sign;
  if (exp == half_exp_max) {
    bits |= 0x7f800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    bits |= ((exp + exp_rebias) << 23) | (mant << 13);
  } else if (mant != 0) {
    // Subnormal half: mant * 2^-24. Shift the leading one into the implicit
    // bit position; every half subnormal is a normal float.
    std::uint32_t e = exp_rebias + 1;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits |= (e << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// An array read from a .npy file. '<f2' data is widened to float, so `data`
// holds std::vector<float> for f32 and f16, and the stored type otherwise.
struct array {
  using buffer =
      std::variant<std::vector<float>, std::vector<std::uint8_t>, std::vector<std::int32_t>>;

  std::vector<std::int64_t> shape;  // C order, outermost first; () is a scalar
  dtype stored = dtype::f32;        // the dtype in the file
  buffer data;

  std::int64_t size() const {
    return std::visit([](const auto& v) { return static_cast<std::int64_t>(v.size()); }, data);
  }
  bool is_float() const { return std::holds_alternative<std::vector<float>>(data); }
  const std::vector<float>& floats() const { return std::get<std::vector<float>>(data); }
  std::vector<float>& floats() { return std::get<std::vector<float>>(data); }
};

// "(2, 3)", "(5,)", "()": the shape as NumPy prints it.
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

namespace detail {

inline constexpr std::string_view magic = "\x93NUMPY";
inline constexpr std::size_t magic_size = 6;
inline constexpr std::size_t data_alignment = 64;  // NumPy's ARRAY_ALIGN

struct file_closer {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

inline std::string errno_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

[[noreturn]] inline void fail(const std::filesystem::path& path, const std::string& problem) {
  throw format_error(path.string() + ": " + problem);
}

// The dictionary of a .npy header, as far as this reader needs it.
struct header_dict {
  std::string descr;
  bool structured_descr = false;  // descr was a list: a record dtype
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  bool has_descr = false, has_fortran = false, has_shape = false;
};

// A recursive-descent parser for the Python literal NumPy writes:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class header_parser {
 public:
  header_parser(std::string_view text, const std::filesystem::path& path)
      : text_(text), path_(path) {}

  header_dict parse() {
    header_dict d;
    skip_space();
    if (!consume('{'))
      bad("header is not a Python dict literal (expected '{', got " + describe_next() + ")");
    for (;;) {
      skip_space();
      if (consume('}')) break;
      const std::string key = string_literal("a dict key");
      skip_space();
      if (!consume(':')) bad("expected ':' after key '" + key + "' in the header");
      skip_space();
      if (key == "descr") {
        once(d.has_descr, key);
        if (peek() == '[') {
          skip_bracketed();
          d.structured_descr = true;
        } else {
          d.descr = string_literal("the value of 'descr'");
        }
      } else if (key == "fortran_order") {
        once(d.has_fortran, key);
        d.fortran_order = boolean_literal();
      } else if (key == "shape") {
        once(d.has_shape, key);
        d.shape = shape_tuple();
      } else {
        bad("unexpected key '" + key +
            "' in the header (expected 'descr', 'fortran_order', 'shape')");
      }
      skip_space();
      if (consume(',')) continue;
      skip_space();
      if (consume('}')) break;
      bad("expected ',' or '}' in the header dict, got " + describe_next());
    }
    skip_space();
    if (pos_ < text_.size()) bad("unexpected text after the header dict: " + describe_next());
    if (!d.has_descr) bad("header is missing key 'descr'");
    if (!d.has_fortran) bad("header is missing key 'fortran_order'");
    if (!d.has_shape) bad("header is missing key 'shape'");
    return d;
  }

 private:
  std::string_view text_;
  const std::filesystem::path& path_;
  std::size_t pos_ = 0;

  [[noreturn]] void bad(const std::string& problem) const { fail(path_, problem); }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool consume(char c) {
    if (peek() != c || pos_ >= text_.size()) return false;
    ++pos_;
    return true;
  }
  bool consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  std::string describe_next() const {
    if (pos_ >= text_.size()) return "end of header";
    std::string s(text_.substr(pos_, 16));
    for (char& c : s)
      if (c == '\n' || c == '\r' || static_cast<unsigned char>(c) < 0x20) c = ' ';
    return "'" + s + "'";
  }
  void once(bool& seen, const std::string& key) {
    if (seen) bad("key '" + key + "' appears twice in the header");
    seen = true;
  }

  std::string string_literal(const char* what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"')
      bad("expected a string for " + std::string(what) + ", got " + describe_next());
    ++pos_;
    std::string s;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
      s += text_[pos_++];
    }
    if (!consume(quote)) bad("unterminated string in the header");
    return s;
  }

  bool boolean_literal() {
    if (consume(std::string_view("True"))) return true;
    if (consume(std::string_view("False"))) return false;
    bad("expected True or False for 'fortran_order', got " + describe_next());
  }

  // A list such as [('a', '<f4'), ('b', '<i4')]; skipped, strings respected.
  void skip_bracketed() {
    int depth = 0;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\'' || c == '"') {
        string_literal("a record field");
        continue;
      }
      ++pos_;
      if (c == '[' || c == '(') ++depth;
      if ((c == ']' || c == ')') && --depth == 0) return;
    }
    bad("unterminated list in the header");
  }

  // A Python tuple of integers: (), (n,), (a, b, ...) with an optional
  // trailing comma; 'L' suffixes (Python 2 longs) are accepted.
  std::vector<std::int64_t> shape_tuple() {
    if (!consume('(')) bad("expected a tuple for 'shape', got " + describe_next());
    std::vector<std::int64_t> shape;
    bool trailing_comma = false;
    for (;;) {
      skip_space();
      if (consume(')')) break;
      shape.push_back(integer());
      skip_space();
      trailing_comma = consume(',');
      if (trailing_comma) continue;
      skip_space();
      if (consume(')')) break;
      bad("expected ',' or ')' in 'shape', got " + describe_next());
    }
    if (shape.size() == 1 && !trailing_comma)
      bad("'shape' is a parenthesised integer, not a tuple (expected (" + std::to_string(shape[0]) +
          ",))");
    return shape;
  }

  std::int64_t integer() {
    const bool negative = consume('-');
    if (!negative) consume('+');
    if (peek() < '0' || peek() > '9') bad("expected an integer in 'shape', got " + describe_next());
    std::int64_t n = 0;
    bool overflow = false;
    const std::size_t start = pos_;
    while (peek() >= '0' && peek() <= '9') {
      overflow |= __builtin_mul_overflow(n, 10, &n);
      overflow |= __builtin_add_overflow(n, peek() - '0', &n);
      ++pos_;
    }
    if (peek() == 'L' || peek() == 'l') ++pos_;
    const std::string digits(text_.substr(start, pos_ - start));
    if (negative) bad("negative dimension -" + digits + " in 'shape'");
    if (overflow) bad("dimension " + digits + " in 'shape' overflows int64");
    return n;
  }
};

// Maps a descr string to a dtype, or explains why not.
inline dtype parse_descr(const header_dict& d, const std::filesystem::path& path) {
  if (d.structured_descr)
    fail(path,
         "unsupported dtype: a structured (record) dtype; expected one of '<f4', '<f2', '|u1', "
         "'<i4'");
  const std::string& s = d.descr;
  if (s == "<f4") return dtype::f32;
  if (s == "<f2") return dtype::f16;
  if (s == "<i4") return dtype::i32;
  if (s == "|u1" || s == "<u1" || s == ">u1" || s == "=u1") return dtype::u8;
  if (s == ">f4" || s == ">f2" || s == ">i4" || s == "!f4" || s == "!f2" || s == "!i4")
    fail(path, "big-endian dtype '" + s + "' is not supported (expected little-endian '<" +
                   s.substr(1) + "')");
  fail(path, "unsupported dtype '" + s + "' (expected one of '<f4', '<f2', '|u1', '<i4')");
}

template <class T>
void byteswap_in_place(std::span<T> values) {
  for (T& v : values) {
    auto bytes = std::bit_cast<std::array<unsigned char, sizeof(T)>>(v);
    std::reverse(bytes.begin(), bytes.end());
    v = std::bit_cast<T>(bytes);
  }
}

inline void read_exact(std::FILE* f, void* dst, std::size_t bytes,
                       const std::filesystem::path& path) {
  if (bytes == 0) return;
  if (std::fread(dst, 1, bytes, f) != bytes) {
    if (std::ferror(f)) throw io_error(path.string() + ": read error: " + errno_text(errno));
    fail(path, "truncated data: the file ended early while reading");
  }
}

// Reads n little-endian elements of T into a new vector.
template <class T>
std::vector<T> read_elements(std::FILE* f, std::size_t n, const std::filesystem::path& path) {
  std::vector<T> out(n);
  read_exact(f, out.data(), n * sizeof(T), path);
  if constexpr (sizeof(T) > 1)
    if (std::endian::native == std::endian::big) byteswap_in_place(std::span<T>(out));
  return out;
}

inline std::vector<float> read_halves(std::FILE* f, std::size_t n,
                                      const std::filesystem::path& path) {
  std::vector<float> out(n);
  constexpr std::size_t chunk = 1 << 16;
  std::vector<std::uint16_t> raw(std::min(n, chunk));
  for (std::size_t done = 0; done < n;) {
    const std::size_t m = std::min(n - done, chunk);
    read_exact(f, raw.data(), m * sizeof(std::uint16_t), path);
    if (std::endian::native == std::endian::big) byteswap_in_place(std::span(raw.data(), m));
    for (std::size_t i = 0; i < m; ++i) out[done + i] = half_to_float(raw[i]);
    done += m;
  }
  return out;
}

inline std::uint32_t little_endian(const unsigned char* p, std::size_t bytes) {
  std::uint32_t v = 0;
  for (std::size_t i = bytes; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

}  // namespace detail

// Reads a .npy file. Throws format_error (malformed or unsupported file) or
// io_error (cannot open or read); either message starts with the path.
inline array read(const std::filesystem::path& path) {
  using detail::fail;
  errno = 0;
  detail::file_ptr f(std::fopen(path.string().c_str(), "rb"));
  if (!f) throw io_error(path.string() + ": cannot open: " + detail::errno_text(errno));
  std::error_code ec;
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) throw io_error(path.string() + ": cannot read the file size: " + ec.message());

  // Preamble: magic (6), version (2), header length (2 in v1, 4 in v2/v3).
  std::array<unsigned char, 12> pre{};
  const std::size_t got = std::fread(pre.data(), 1, 8, f.get());
  if (got < detail::magic_size ||
      std::memcmp(pre.data(), detail::magic.data(), detail::magic_size) != 0)
    fail(path, "bad magic: not a .npy file (expected the bytes \\x93NUMPY at the start)");
  if (got < 8) fail(path, "truncated header: the file ends inside the version bytes");
  const int major = pre[6], minor = pre[7];
  if (major < 1 || major > 3 || minor != 0)
    fail(path, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (std::fread(pre.data() + 8, 1, len_bytes, f.get()) != len_bytes)
    fail(path, "truncated header: the file ends inside the header length");
  const std::uint64_t header_len = detail::little_endian(pre.data() + 8, len_bytes);
  const std::uint64_t data_offset = 8 + len_bytes + header_len;
  if (data_offset > file_size)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(file_size) + " bytes)");

  std::string text(header_len, '\0');
  detail::read_exact(f.get(), text.data(), text.size(), path);
  const detail::header_dict d = detail::header_parser(text, path).parse();
  const dtype type = detail::parse_descr(d, path);
  if (d.fortran_order)
    fail(path,
         "fortran_order is True; only C-order arrays are supported (use np.ascontiguousarray)");

  std::int64_t count = 1;
  for (std::int64_t e : d.shape)
    if (__builtin_mul_overflow(count, e, &count))
      fail(path, "shape " + shape_string(d.shape) + " overflows: its element count exceeds int64");
  std::size_t bytes = 0;
  if (count > 0 &&
      (static_cast<std::uint64_t>(count) > SIZE_MAX ||
       __builtin_mul_overflow(static_cast<std::size_t>(count), itemsize(type), &bytes)))
    fail(path, "shape " + shape_string(d.shape) + " of dtype " + std::string(descr(type)) +
                   " overflows: its size in bytes exceeds size_t");
  if (bytes > file_size - data_offset)
    fail(path, "truncated data: shape " + shape_string(d.shape) + " of dtype " +
                   std::string(descr(type)) + " needs " + std::to_string(bytes) +
                   " bytes, the file has " + std::to_string(file_size - data_offset) +
                   " after the header");

  array a;
  a.shape = d.shape;
  a.stored = type;
  const auto n = static_cast<std::size_t>(count);
  switch (type) {
    case dtype::f32:
      a.data = detail::read_elements<float>(f.get(), n, path);
      break;
    case dtype::f16:
      a.data = detail::read_halves(f.get(), n, path);
      break;
    case dtype::u8:
      a.data = detail::read_elements<std::uint8_t>(f.get(), n, path);
      break;
    case dtype::i32:
      a.data = detail::read_elements<std::int32_t>(f.get(), n, path);
      break;
  }
  return a;
}

// The complete bytes of a C-order .npy header of `type` ('<f4' or '<f2')
// for `shape`: version 1.0 when the header fits its 16-bit length, else 2.0;
// padded with spaces and a final newline so the data starts on a 64-byte
// boundary.
inline std::string header(dtype type, std::span<const std::int64_t> shape) {
  const std::string dict = "{'descr': '" + std::string(descr(type)) +
                           "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
  for (const int major : {1, 2}) {
    const std::size_t preamble = major == 1 ? 10 : 12;
    const std::size_t unpadded = preamble + dict.size() + 1;  // + '\n'
    const std::size_t total =
        (unpadded + detail::data_alignment - 1) / detail::data_alignment * detail::data_alignment;
    const std::size_t header_len = total - preamble;
    if (major == 1 && header_len > 0xffff) continue;
    std::string out(detail::magic);
    out += static_cast<char>(major);
    out += '\0';
    for (std::size_t i = 0; i < preamble - 8; ++i)
      out += static_cast<char>((header_len >> (8 * i)) & 0xff);
    out += dict;
    out.append(total - unpadded, ' ');
    out += '\n';
    return out;
  }
  throw std::length_error("npy: header too long");
}
inline std::string f32_header(std::span<const std::int64_t> shape) { return header(dtype::f32, shape); }

// A '<f4' .npy file (or '<f2' from the bit patterns of fp16 values) written
// to a temporary file beside `target`; commit() renames it into place
// (atomically on POSIX), and destruction without commit() removes it. Stage
// every output first and commit them together, so a failure never leaves a
// partial or stale-looking result.
class staged_file {
 public:
  staged_file(std::filesystem::path target, std::span<const std::int64_t> shape,
              std::span<const float> data)
      : target_(std::move(target)) {
    stage(shape, data, dtype::f32);
  }
  staged_file(std::filesystem::path target, std::span<const std::int64_t> shape,
              std::span<const std::uint16_t> half_bits)
      : target_(std::move(target)) {
    stage(shape, half_bits, dtype::f16);
  }

  staged_file(const staged_file&) = delete;
  staged_file& operator=(const staged_file&) = delete;
  ~staged_file() { discard(); }

  void commit() {
    std::error_code ec;
    std::filesystem::rename(temporary_, target_, ec);
    if (ec) {
      discard();
      throw io_error(target_.string() +
                     ": cannot move the finished file into place: " + ec.message());
    }
    temporary_.clear();
  }

  const std::filesystem::path& target() const { return target_; }

 private:
  std::filesystem::path target_;
  std::filesystem::path temporary_;

  template <class T>
  void stage(std::span<const std::int64_t> shape, std::span<const T> data, dtype type) {
    std::int64_t count = 1;
    for (std::int64_t e : shape)
      if (e < 0 || __builtin_mul_overflow(count, e, &count))
        throw std::invalid_argument("npy: invalid shape " + shape_string(shape) + " for " +
                                    target_.string());
    if (static_cast<std::uint64_t>(count) != data.size())
      throw std::invalid_argument("npy: shape " + shape_string(shape) + " needs " +
                                  std::to_string(count) + " values, got " +
                                  std::to_string(data.size()) + " for " + target_.string());
    detail::file_ptr f = create_temporary();
    try {
      write_all(f.get(), header(type, shape));
      write_elements(f.get(), data);
      if (std::fflush(f.get()) != 0) throw_write_error(errno);
      std::FILE* raw = f.release();
      if (std::fclose(raw) != 0) throw_write_error(errno);
    } catch (...) {
      f.reset();
      discard();
      throw;
    }
  }

  void discard() noexcept {
    if (temporary_.empty()) return;
    std::error_code ec;
    std::filesystem::remove(temporary_, ec);
    temporary_.clear();
  }

  [[noreturn]] void throw_write_error(int err) const {
    throw io_error(target_.string() + ": write failed: " + detail::errno_text(err));
  }

  // "<dir>/.<name>.tmp-<random hex>", created exclusively ("x" mode) with the
  // usual permissions of a new file.
  detail::file_ptr create_temporary() {
    std::random_device entropy;
    std::mt19937_64 rng((static_cast<std::uint64_t>(entropy()) << 32) ^ entropy() ^
                        reinterpret_cast<std::uintptr_t>(this));
    const std::filesystem::path dir = target_.parent_path();
    int err = 0;
    for (int attempt = 0; attempt < 16; ++attempt) {
      char suffix[17];
      std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
      const std::filesystem::path candidate =
          dir / ("." + target_.filename().string() + ".tmp-" + suffix);
      errno = 0;
      if (std::FILE* f = std::fopen(candidate.string().c_str(), "wbx")) {
        temporary_ = candidate;
        return detail::file_ptr(f);
      }
      err = errno;
      if (err != EEXIST) break;
    }
    throw io_error(target_.string() + ": cannot create a temporary file in " +
                   (dir.empty() ? std::string(".") : dir.string()) + ": " +
                   detail::errno_text(err));
  }

  void write_all(std::FILE* f, std::string_view bytes) const {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) throw_write_error(errno);
  }

  template <class T>
  void write_elements(std::FILE* f, std::span<const T> data) const {
    if constexpr (std::endian::native == std::endian::little) {
      if (!data.empty() && std::fwrite(data.data(), sizeof(T), data.size(), f) != data.size())
        throw_write_error(errno);
    } else {
      constexpr std::size_t chunk = 1 << 14;
      std::vector<T> swapped;
      for (std::size_t done = 0; done < data.size(); done += chunk) {
        const auto part = data.subspan(done, std::min(chunk, data.size() - done));
        swapped.assign(part.begin(), part.end());
        detail::byteswap_in_place(std::span<T>(swapped));
        if (std::fwrite(swapped.data(), sizeof(T), swapped.size(), f) != swapped.size())
          throw_write_error(errno);
      }
    }
  }
};

// Writes a '<f4' C-order .npy file atomically (see staged_file).
inline void write_f32(const std::filesystem::path& path, std::span<const std::int64_t> shape,
                      std::span<const float> data) {
  staged_file(path, shape, data).commit();
}

}  // namespace attn::npy
