// Config: typed, read-only access to a TOML document (toml++), with errors that name the key.
//
// A Config is a view of one table of the document, identified by its dotted path ("" for the
// root). Every accessor that fails returns a Status whose message starts with the full dotted key,
// e.g. `server.cache_bytes: expected an integer, got string "lots"`. Views share the document;
// copying a Config is cheap. Thread-safety: const methods may run concurrently; Set may not.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace toml {
inline namespace v3 {
class table;
}
}  // namespace toml

namespace metaps {

class Config {
 public:
  Config();  // an empty root table
  static Result<Config> ParseString(std::string_view text, std::string_view source = "<string>");
  static Result<Config> ParseFile(const std::string& path);

  // Applies an override "a.b.c=value". The value is read as a TOML value when it parses as one
  // (42, 0.5, true, "text", [1, 2]); otherwise as a bare string. Intermediate tables are created.
  Status Set(std::string_view assignment);

  bool Has(std::string_view key) const;
  // Full dotted path of `key` under this view, for messages.
  std::string Path(std::string_view key) const;
  const std::string& path() const { return path_; }
  std::vector<std::string> Keys() const;

  // Required values: NotFound naming the key when absent, InvalidArgument on a wrong type.
  Result<std::string> GetString(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetDouble(std::string_view key) const;  // integers are accepted
  Result<bool> GetBool(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  Result<std::vector<std::string>> GetStringArray(std::string_view key) const;
  using Floats = std::vector<double>;
  Result<Floats> GetDoubleArray(std::string_view key) const;  // integers are accepted

  // Optional values: the fallback when absent, an error only on a wrong type.
  Result<std::string> GetString(std::string_view key, std::string fallback) const;
  Result<int64_t> GetInt(std::string_view key, int64_t fallback) const;
  Result<double> GetDouble(std::string_view key, double fallback) const;
  Result<bool> GetBool(std::string_view key, bool fallback) const;

  // Integer within [lo, hi], with the key named when out of range.
  Result<int64_t> GetIntIn(std::string_view key, int64_t fallback, int64_t lo, int64_t hi) const;

  // A sub-table (absent: an empty view unless required).
  Result<Config> GetTable(std::string_view key, bool required = false) const;
  // An array of tables ([[tables]]); absent gives an empty vector.
  Result<std::vector<Config>> GetTableArray(std::string_view key) const;

  // InvalidArgument naming the first key of this table that is not in `allowed`: catches typos.
  Status CheckKnownKeys(std::initializer_list<std::string_view> allowed) const;

  // TOML text of this view.
  std::string ToToml() const;

 private:
  Config(std::shared_ptr<toml::table> root, std::string path, std::shared_ptr<void> keepalive);
  const toml::table* Table() const;
  toml::table* MutableTable();

  std::shared_ptr<toml::table> root_;
  std::string path_;
  std::shared_ptr<void> keepalive_;
};

}  // namespace metaps
