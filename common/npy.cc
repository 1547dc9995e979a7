#include "common/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

namespace metaps {

// The data is read and written as the machine's floats.
static_assert(std::endian::native == std::endian::little, "npy.cc assumes a little-endian machine");

namespace {

constexpr std::string_view kMagic("\x93NUMPY", 6);
constexpr size_t kAlign = 64;                // numpy's ARRAY_ALIGN
constexpr size_t kGrowthAxisMaxDigits = 21;  // numpy's GROWTH_AXIS_MAX_DIGITS

// Product of the dimensions; false on a negative dimension or overflow of int64.
bool ElementCount(const std::vector<int64_t>& shape, uint64_t* count) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d)) {
      return false;
    }
    n *= static_cast<uint64_t>(d);
  }
  *count = n;
  return true;
}

// The header numpy.lib.format writes for a C-order '<f4' array: the dict as Python's repr prints
// it (keys sorted), spaces so that the first axis can grow in place (numpy >= 1.24 adds them, and
// they are only padding to older readers), then spaces and '\n' up to a multiple of 64 bytes.
std::string NpyHeader(const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dict += ',';
  dict += "), }";
  if (!shape.empty()) dict.append(kGrowthAxisMaxDigits - std::to_string(shape[0]).size(), ' ');
  const size_t hlen = dict.size() + 1;  // + '\n'
  for (int major : {1, 2}) {
    const size_t prefix = kMagic.size() + 2 + (major == 1 ? 2 : 4);
    const size_t padded = hlen + (kAlign - (prefix + hlen) % kAlign);
    if (major == 1 && padded > 0xffff) continue;
    std::string out(kMagic);
    out += static_cast<char>(major);
    out += '\0';
    for (size_t b = 0; b < prefix - kMagic.size() - 2; ++b)
      out += static_cast<char>((padded >> (8 * b)) & 0xff);
    out += dict;
    out.append(padded - hlen, ' ');
    out += '\n';
    return out;
  }
  return {};  // unreachable: version 2.0's length field has 32 bits
}

Status WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Internal(std::strerror(w < 0 ? errno : EIO));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status ReadAll(int fd, char* p, size_t n, off_t offset) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Internal(std::strerror(errno));
    if (r == 0) return DataLoss("the file shrank while read");
    p += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
  return Status::Ok();
}

// A Python literal as found in a .npy header: enough of Python's syntax for the dicts numpy (any
// version, Python 2 or 3) writes, so that a header naming another dtype is reported as that rather
// than as unparsable.
struct PyValue {
  enum class Kind { kString, kInt, kBool, kNone, kTuple, kList, kDict } kind = Kind::kNone;
  std::string str;
  int64_t integer = 0;
  bool boolean = false;
  std::vector<PyValue> items;     // tuple, list; a dict's values
  std::vector<std::string> keys;  // a dict's keys (string keys only), keys[i] -> items[i]
  // (Two vectors, not one of pairs: a pair holding the still incomplete PyValue is refused by
  // clang with libstdc++ 12.)
};

class PyParser {
 public:
  explicit PyParser(std::string_view text) : text_(text) {}

  // Parses the whole text as one value followed only by whitespace.
  Status ParseAll(PyValue* v) {
    METAPS_RETURN_IF_ERROR(Parse(v, 0));
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the dict");
    return Status::Ok();
  }

 private:
  static constexpr int kMaxDepth = 16;

  Status Error(std::string_view what) const {
    return DataLoss(std::string(what) + " at byte " + std::to_string(pos_) + " of the header");
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  Status Parse(PyValue* v, int depth) {
    if (depth > kMaxDepth) return Error("nested too deeply");
    SkipSpace();
    if (pos_ >= text_.size()) return Error("unexpected end");
    const char c = text_[pos_];
    if (c == '\'' || c == '"') {
      v->kind = PyValue::Kind::kString;
      return ParseString(&v->str);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return ParseInt(v);
    if (c == '(' || c == '[') {
      const char close = c == '(' ? ')' : ']';
      v->kind = c == '(' ? PyValue::Kind::kTuple : PyValue::Kind::kList;
      ++pos_;
      while (!Consume(close)) {
        v->items.emplace_back();
        METAPS_RETURN_IF_ERROR(Parse(&v->items.back(), depth + 1));
        if (!Consume(',')) {
          if (!Consume(close)) return Error("expected ',' or a closing bracket");
          break;
        }
      }
      return Status::Ok();
    }
    if (c == '{') {
      v->kind = PyValue::Kind::kDict;
      ++pos_;
      while (!Consume('}')) {
        SkipSpace();
        if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"'))
          return Error("expected a key");
        std::string key;
        METAPS_RETURN_IF_ERROR(ParseString(&key));
        if (!Consume(':')) return Error("expected ':'");
        PyValue value;
        METAPS_RETURN_IF_ERROR(Parse(&value, depth + 1));
        v->keys.push_back(std::move(key));
        v->items.push_back(std::move(value));
        if (!Consume(',')) {
          if (!Consume('}')) return Error("expected ',' or '}'");
          break;
        }
      }
      return Status::Ok();
    }
    for (std::string_view word : {"True", "False", "None"}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        v->kind = word == "None" ? PyValue::Kind::kNone : PyValue::Kind::kBool;
        v->boolean = word == "True";
        return Status::Ok();
      }
    }
    return Error("unexpected character");
  }

  Status ParseString(std::string* out) {
    const char quote = text_[pos_++];
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
      *out += text_[pos_++];
    }
    if (pos_ >= text_.size()) return Error("unterminated string");
    ++pos_;
    return Status::Ok();
  }

  Status ParseInt(PyValue* v) {
    v->kind = PyValue::Kind::kInt;
    const bool negative = text_[pos_] == '-';
    if (negative) ++pos_;
    const size_t start = pos_;
    uint64_t n = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      n = n * 10 + static_cast<uint64_t>(text_[pos_++] - '0');
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return Error("integer too large");
    }
    if (pos_ == start) return Error("expected digits");
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2's long
    v->integer = negative ? -static_cast<int64_t>(n) : static_cast<int64_t>(n);
    return Status::Ok();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// Checks the header dict and returns the shape; errors say what is wrong, not where.
Status InterpretHeader(const PyValue& dict, std::vector<int64_t>* shape) {
  if (dict.kind != PyValue::Kind::kDict) return DataLoss("the header is not a dict");
  const PyValue* descr = nullptr;
  const PyValue* fortran = nullptr;
  const PyValue* shp = nullptr;
  for (size_t i = 0; i < dict.keys.size(); ++i) {
    const std::string& key = dict.keys[i];
    const PyValue& value = dict.items[i];
    if (key == "descr") {
      descr = &value;
    } else if (key == "fortran_order") {
      fortran = &value;
    } else if (key == "shape") {
      shp = &value;
    } else {
      return DataLoss("unexpected header key '" + key + "'");
    }
  }
  if (!descr || !fortran || !shp)
    return DataLoss("the header lacks one of 'descr', 'fortran_order', 'shape'");
  if (descr->kind != PyValue::Kind::kString) return InvalidArgument("a structured dtype, not float32 '<f4'");
  if (descr->str != "<f4") return InvalidArgument("dtype '" + descr->str + "', not float32 '<f4'");
  if (fortran->kind != PyValue::Kind::kBool) return DataLoss("'fortran_order' is not True or False");
  if (fortran->boolean) return InvalidArgument("fortran_order True (column-major); only C order is read");
  if (shp->kind != PyValue::Kind::kTuple) return DataLoss("'shape' is not a tuple");
  shape->clear();
  for (const auto& d : shp->items) {
    if (d.kind != PyValue::Kind::kInt || d.integer < 0) return DataLoss("'shape' holds a non-count");
    shape->push_back(d.integer);
  }
  return Status::Ok();
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace

Status WriteNpyF32(const std::string& path, std::span<const float> data, const std::vector<int64_t>& shape) {
  uint64_t count = 0;
  if (!ElementCount(shape, &count))
    return InvalidArgument("npy " + path + ": shape has a negative dimension or overflows");
  if (count != data.size()) {
    return InvalidArgument("npy " + path + ": shape holds " + std::to_string(count) + " elements, data " +
                           std::to_string(data.size()));
  }
  const std::string header = NpyHeader(shape);
  static std::atomic<uint64_t> next_tmp{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(next_tmp.fetch_add(1));
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (fd.get() < 0) return Internal("npy: cannot create " + tmp + ": " + std::strerror(errno));
  Status s = WriteAll(fd.get(), header.data(), header.size());
  if (s.ok()) s = WriteAll(fd.get(), reinterpret_cast<const char*>(data.data()), data.size_bytes());
  if (s.ok() && ::fsync(fd.get()) != 0) s = Internal(std::strerror(errno));
  if (s.ok() && ::close(fd.Release()) != 0) s = Internal(std::strerror(errno));
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Internal(std::strerror(errno));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return Internal("npy: cannot write " + path + ": " + s.message());
  }
  return Status::Ok();
}

Result<NpyArray> ReadNpyF32(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return NotFound("npy: no file " + path);
    return Internal("npy: cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Internal("npy: cannot stat " + path + ": " + std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  auto with_path = [&](const Status& s) { return s.WithContext("npy " + path); };

  char prefix[12] = {};
  const size_t have = static_cast<size_t>(std::min<uint64_t>(size, sizeof(prefix)));
  METAPS_RETURN_IF_ERROR(with_path(ReadAll(fd.get(), prefix, have, 0)));
  const size_t magic_have = std::min(have, kMagic.size());
  if (std::string_view(prefix, magic_have) != kMagic.substr(0, magic_have) || size == 0) {
    return InvalidArgument("npy " + path + ": not a .npy file (bad magic)");
  }
  if (have < kMagic.size() + 2) return DataLoss("npy " + path + ": truncated in the header");
  const int major = static_cast<unsigned char>(prefix[6]);
  const int minor = static_cast<unsigned char>(prefix[7]);
  if ((major != 1 && major != 2) || minor != 0) {
    return InvalidArgument("npy " + path + ": format version " + std::to_string(major) + "." +
                           std::to_string(minor) + " (only 1.0 and 2.0 are read)");
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (have < kMagic.size() + 2 + len_bytes) return DataLoss("npy " + path + ": truncated in the header");
  uint64_t header_len = 0;
  for (size_t b = 0; b < len_bytes; ++b) {
    header_len |= static_cast<uint64_t>(static_cast<unsigned char>(prefix[8 + b])) << (8 * b);
  }
  const uint64_t data_offset = kMagic.size() + 2 + len_bytes + header_len;
  if (data_offset > size) return DataLoss("npy " + path + ": truncated in the header");
  std::string header(header_len, '\0');
  METAPS_RETURN_IF_ERROR(with_path(
      ReadAll(fd.get(), header.data(), header.size(), static_cast<off_t>(data_offset - header_len))));
  PyValue dict;
  METAPS_RETURN_IF_ERROR(with_path(PyParser(header).ParseAll(&dict)));
  NpyArray out;
  METAPS_RETURN_IF_ERROR(with_path(InterpretHeader(dict, &out.shape)));
  uint64_t count = 0;
  if (!ElementCount(out.shape, &count) || count > std::numeric_limits<uint64_t>::max() / sizeof(float)) {
    return DataLoss("npy " + path + ": the shape's element count overflows");
  }
  const uint64_t want = count * sizeof(float);
  const uint64_t got = size - data_offset;
  if (got != want) {
    return DataLoss("npy " + path + ": " + std::to_string(got) + " bytes of data where the shape needs " +
                    std::to_string(want) + (got < want ? " (truncated)" : " (trailing bytes)"));
  }
  out.data.resize(count);
  METAPS_RETURN_IF_ERROR(with_path(
      ReadAll(fd.get(), reinterpret_cast<char*>(out.data.data()), want, static_cast<off_t>(data_offset))));
  return out;
}

}  // namespace metaps
