// Private helpers of the readers: whole-file reads, line iteration, splitting, number parsing and
// the bad-line bookkeeping every reader shares. Not part of the data API.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/data/events.h"
#include "worker/data/readers.h"

namespace metaps::data::internal {

// The contents of `path`. NotFound "<key>: file <name> not found in <dir>" when it does not exist
// (`key` names the config key that led here), other failures InvalidArgument naming the key.
Result<std::string> ReadWholeFile(const std::string& path, std::string_view key);

// Iterates the lines of a buffer: strips "\r\n"/"\n"; numbers from 1.
class LineReader {
 public:
  explicit LineReader(std::string_view text) : text_(text) {}
  // False at the end. Blank lines are returned too (callers skip them).
  bool Next(std::string_view* line) {
    if (pos_ >= text_.size()) return false;
    size_t end = text_.find('\n', pos_);
    if (end == std::string_view::npos) end = text_.size();
    *line = text_.substr(pos_, end - pos_);
    if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
    pos_ = end + 1;
    ++number_;
    return true;
  }
  uint64_t number() const { return number_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  uint64_t number_ = 0;
};

// Splits on `delim` (one or more characters) into `out` (cleared first; capacity reused).
inline void Split(std::string_view s, std::string_view delim, std::vector<std::string_view>* out) {
  out->clear();
  size_t start = 0;
  while (true) {
    size_t at = delim.size() == 1 ? s.find(delim[0], start) : s.find(delim, start);
    if (at == std::string_view::npos) {
      out->push_back(s.substr(start));
      return;
    }
    out->push_back(s.substr(start, at - start));
    start = at + delim.size();
  }
}

inline std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

inline bool ParseInt(std::string_view s, int64_t* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

inline bool ParseFloat(std::string_view s, float* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty() && std::isfinite(*out);
}

// Counts a file's lines and bad lines, reports each bad one, and enforces max_bad_ratio.
class BadLineTracker {
 public:
  // `file` is the path as reported; `ratio_key` the config key of the limit ("data.max_bad_ratio").
  BadLineTracker(const ReadOptions& options, BadLineStats* stats, std::string file);

  void CountLine() {
    ++lines_;
    ++stats_->lines;
  }
  // Reports "file:line: reason" and counts it. Non-OK when the limit is passed: stop reading.
  // REQUIRES: CountLine() was called for this line.
  Status Bad(uint64_t line, std::string_view reason);
  // The end-of-file check of the ratio.
  Status Finish() const;

 private:
  Status LimitError() const;

  const ReadOptions& options_;
  BadLineStats* stats_;
  std::string file_;
  std::string first_;
  uint64_t lines_ = 0, bad_ = 0;
};

}  // namespace metaps::data::internal
