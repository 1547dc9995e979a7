#include "worker/data/internal/text.h"

#include <cstdio>
#include <filesystem>
#include <memory>

namespace metaps::data::internal {
namespace {

// Early stops need enough lines for the ratio to mean something.
constexpr uint64_t kMinLinesForEarlyStop = 1000;

std::string Percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", share * 100);
  return buf;
}

}  // namespace

Result<std::string> ReadWholeFile(const std::string& path, std::string_view key) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) {
    std::string dir = p.parent_path().string();
    return NotFound(std::string(key) + ": file " + p.filename().string() + " not found in " +
                    (dir.empty() ? "." : dir));
  }
  if (fs::is_directory(p, ec)) return InvalidArgument(std::string(key) + ": " + path + " is a directory");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return InvalidArgument(std::string(key) + ": cannot open " + path);
  std::string out;
  const auto size = fs::file_size(p, ec);
  if (!ec) out.reserve(size);
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f.get())) > 0) out.append(buf, n);
  if (std::ferror(f.get())) return InvalidArgument(std::string(key) + ": read error on " + path);
  return out;
}

BadLineTracker::BadLineTracker(const ReadOptions& options, BadLineStats* stats, std::string file)
    : options_(options), stats_(stats), file_(std::move(file)) {}

Status BadLineTracker::Bad(uint64_t line, std::string_view reason) {
  ++bad_;
  ++stats_->bad;
  std::string msg = file_ + ":" + std::to_string(line) + ": " + std::string(reason);
  if (options_.on_bad_line) options_.on_bad_line(msg);
  if (first_.empty()) first_ = msg;
  if (stats_->examples.size() < options_.max_examples) stats_->examples.push_back(std::move(msg));
  if (options_.max_bad_ratio <= 0) return LimitError();
  if (lines_ >= kMinLinesForEarlyStop &&
      static_cast<double>(bad_) > options_.max_bad_ratio * static_cast<double>(lines_)) {
    return LimitError();
  }
  return Status::Ok();
}

Status BadLineTracker::Finish() const {
  if (bad_ > 0 && static_cast<double>(bad_) > options_.max_bad_ratio * static_cast<double>(lines_)) {
    return LimitError();
  }
  return Status::Ok();
}

Status BadLineTracker::LimitError() const {
  const double share = lines_ ? static_cast<double>(bad_) / static_cast<double>(lines_) : 1.0;
  return InvalidArgument(options_.key_prefix + ".max_bad_ratio: " + std::to_string(bad_) + " of " +
                         std::to_string(lines_) + " lines read so far of " + file_ + " are malformed (" +
                         Percent(share) + ", limit " + Percent(options_.max_bad_ratio) +
                         "); first: " + first_);
}

}  // namespace metaps::data::internal
