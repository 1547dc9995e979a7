#include "common/config.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

namespace metaps {
namespace {

std::string TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    default: return "date/time";
  }
}

std::string Describe(const toml::node& n) {
  std::ostringstream os;
  os << TypeName(n);
  if (n.is_value()) {
    os << " ";
    n.visit([&](auto&& v) { os << v; });
  }
  return os.str();
}

std::vector<std::string> SplitDots(std::string_view key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.emplace_back(key.substr(start, dot == std::string_view::npos ? key.npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

// A TOML bare key: what an override may name (and what toml++ 3.3 writes back out correctly; it
// prints some quoted keys, e.g. one holding an apostrophe, unquoted, which then does not parse).
bool IsBareKey(std::string_view part) {
  if (part.empty()) return false;
  for (char c : part) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Config::Config() : root_(std::make_shared<toml::table>()) {}

Config::Config(std::shared_ptr<toml::table> root, std::string path, std::shared_ptr<void> keepalive)
    : root_(std::move(root)), path_(std::move(path)), keepalive_(std::move(keepalive)) {}

namespace {

// The first key under `n` that holds a control character (a quoted key may spell a tab or a
// newline), as "source:line:column: ..." naming the key, or "" when there is none. Such keys are
// refused: no job config reads one, and toml++ 3.3 prints them unquoted, so the config that
// `metaps run` writes for its child processes would not parse again.
std::string ControlCharacterKey(const toml::node& n, std::string_view source) {
  if (const toml::table* t = n.as_table()) {
    for (auto&& [k, v] : *t) {
      bool bad = false;
      std::string shown;
      for (unsigned char c : k.str()) {
        if (c < 0x20 || c == 0x7f) {
          bad = true;
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", c);
          shown += hex;
        } else {
          shown += static_cast<char>(c);
        }
      }
      if (bad) {
        std::ostringstream os;
        os << source << ":" << k.source().begin.line << ":" << k.source().begin.column << ": key \"" << shown
           << "\" holds a control character";
        return os.str();
      }
      if (std::string r = ControlCharacterKey(v, source); !r.empty()) return r;
    }
  } else if (const toml::array* a = n.as_array()) {
    for (const toml::node& v : *a) {
      if (std::string r = ControlCharacterKey(v, source); !r.empty()) return r;
    }
  }
  return "";
}

}  // namespace

Result<Config> Config::ParseString(std::string_view text, std::string_view source) {
  try {
    auto tbl = std::make_shared<toml::table>(toml::parse(text, source));
    if (std::string bad = ControlCharacterKey(*tbl, source); !bad.empty()) return InvalidArgument(bad);
    return Config(std::move(tbl), "", nullptr);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return InvalidArgument(os.str());
  }
}

Result<Config> Config::ParseFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseString(ss.str(), path);
}

const toml::table* Config::Table() const {
  if (path_.empty()) return root_.get();
  const toml::node* n = root_->at_path(path_).node();
  return n ? n->as_table() : nullptr;
}

toml::table* Config::MutableTable() {
  if (path_.empty()) return root_.get();
  toml::node* n = root_->at_path(path_).node();
  return n ? n->as_table() : nullptr;
}

std::string Config::Path(std::string_view key) const {
  if (path_.empty()) return std::string(key);
  return path_ + "." + std::string(key);
}

bool Config::Has(std::string_view key) const {
  const toml::table* t = Table();
  return t && t->at_path(key).node() != nullptr;
}

std::vector<std::string> Config::Keys() const {
  std::vector<std::string> keys;
  if (const toml::table* t = Table()) {
    for (auto&& [k, v] : *t) keys.emplace_back(k.str());
  }
  return keys;
}

Status Config::Set(std::string_view assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return InvalidArgument("override '" + std::string(assignment) + "' is not of the form key=value");
  }
  std::string key(assignment.substr(0, eq));
  std::string value(assignment.substr(eq + 1));
  auto parts = SplitDots(key);
  for (const std::string& part : parts) {
    if (!IsBareKey(part)) {
      return InvalidArgument("override '" + std::string(assignment) + "': key '" + key +
                             "' must be dotted names of letters, digits, '_' and '-'");
    }
  }
  toml::table* t = MutableTable();
  if (!t) return InvalidArgument(path_ + ": not a table");
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* n = t->get(parts[i]);
    if (!n) {
      t->insert(parts[i], toml::table{});
      n = t->get(parts[i]);
    }
    if (!n->is_table()) return InvalidArgument(Path(key) + ": " + parts[i] + " is not a table");
    t = n->as_table();
  }
  // Parse the value as TOML by wrapping it as "v = <value>".
  try {
    toml::table parsed = toml::parse("v = " + value);
    t->insert_or_assign(parts.back(), *parsed.get("v"));
  } catch (const toml::parse_error&) {
    t->insert_or_assign(parts.back(), value);
  }
  return Status::Ok();
}

#define METAPS_CONFIG_LOOKUP(key)                                        \
  const toml::table* t = Table();                                        \
  const toml::node* n = t ? t->at_path(key).node() : nullptr;

Result<std::string> Config::GetString(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  if (auto v = n->value<std::string>(); v && n->is_string()) return *v;
  return InvalidArgument(Path(key) + ": expected a string, got " + Describe(*n));
}

Result<int64_t> Config::GetInt(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  if (n->is_integer()) return n->as_integer()->get();
  return InvalidArgument(Path(key) + ": expected an integer, got " + Describe(*n));
}

Result<double> Config::GetDouble(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  if (n->is_floating_point()) return n->as_floating_point()->get();
  if (n->is_integer()) return static_cast<double>(n->as_integer()->get());
  return InvalidArgument(Path(key) + ": expected a number, got " + Describe(*n));
}

Result<bool> Config::GetBool(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  if (n->is_boolean()) return n->as_boolean()->get();
  return InvalidArgument(Path(key) + ": expected true or false, got " + Describe(*n));
}

Result<std::vector<int64_t>> Config::GetIntArray(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  const toml::array* a = n->as_array();
  if (!a) return InvalidArgument(Path(key) + ": expected an array of integers, got " + Describe(*n));
  std::vector<int64_t> out;
  for (size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    if (!e.is_integer()) {
      return InvalidArgument(Path(key) + "[" + std::to_string(i) + "]: expected an integer, got " +
                             Describe(e));
    }
    out.push_back(e.as_integer()->get());
  }
  return out;
}

Result<Config::Floats> Config::GetDoubleArray(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  const toml::array* a = n->as_array();
  if (!a) return InvalidArgument(Path(key) + ": expected an array of numbers, got " + Describe(*n));
  Floats out;
  for (size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    if (e.is_floating_point()) out.push_back(e.as_floating_point()->get());
    else if (e.is_integer()) out.push_back(static_cast<double>(e.as_integer()->get()));
    else return InvalidArgument(Path(key) + "[" + std::to_string(i) + "]: expected a number, got " + Describe(e));
  }
  return out;
}

Result<std::vector<std::string>> Config::GetStringArray(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) return NotFound(Path(key) + ": required key is missing");
  const toml::array* a = n->as_array();
  if (!a) return InvalidArgument(Path(key) + ": expected an array of strings, got " + Describe(*n));
  std::vector<std::string> out;
  for (size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    if (!e.is_string()) {
      return InvalidArgument(Path(key) + "[" + std::to_string(i) + "]: expected a string, got " +
                             Describe(e));
    }
    out.push_back(e.as_string()->get());
  }
  return out;
}

Result<std::string> Config::GetString(std::string_view key, std::string fallback) const {
  if (!Has(key)) return fallback;
  return GetString(key);
}
Result<int64_t> Config::GetInt(std::string_view key, int64_t fallback) const {
  if (!Has(key)) return fallback;
  return GetInt(key);
}
Result<double> Config::GetDouble(std::string_view key, double fallback) const {
  if (!Has(key)) return fallback;
  return GetDouble(key);
}
Result<bool> Config::GetBool(std::string_view key, bool fallback) const {
  if (!Has(key)) return fallback;
  return GetBool(key);
}

Result<int64_t> Config::GetIntIn(std::string_view key, int64_t fallback, int64_t lo, int64_t hi) const {
  METAPS_ASSIGN_OR_RETURN(int64_t v, GetInt(key, fallback));
  if (v < lo || v > hi) {
    return InvalidArgument(Path(key) + ": " + std::to_string(v) + " is outside [" + std::to_string(lo) +
                           ", " + std::to_string(hi) + "]");
  }
  return v;
}

Result<Config> Config::GetTable(std::string_view key, bool required) const {
  METAPS_CONFIG_LOOKUP(key);
  if (!n) {
    if (required) return NotFound(Path(key) + ": required table is missing");
    return Config();  // absent optional table: an empty view
  }
  if (!n->is_table()) return InvalidArgument(Path(key) + ": expected a table, got " + Describe(*n));
  return Config(root_, Path(key), keepalive_);
}

Result<std::vector<Config>> Config::GetTableArray(std::string_view key) const {
  METAPS_CONFIG_LOOKUP(key);
  std::vector<Config> out;
  if (!n) return out;
  const toml::array* a = n->as_array();
  if (!a || !a->is_array_of_tables()) {
    return InvalidArgument(Path(key) + ": expected an array of tables ([[" + Path(key) + "]]), got " +
                           TypeName(*n));
  }
  // Each element is addressed by index in the dotted path toml++ understands: key[i].
  for (size_t i = 0; i < a->size(); ++i) {
    out.push_back(Config(root_, Path(key) + "[" + std::to_string(i) + "]", keepalive_));
  }
  return out;
}

Status Config::CheckKnownKeys(std::initializer_list<std::string_view> allowed) const {
  for (const std::string& k : Keys()) {
    bool known = false;
    for (auto a : allowed) known |= (a == k);
    if (!known) return InvalidArgument(Path(k) + ": unknown key");
  }
  return Status::Ok();
}

std::string Config::ToToml() const {
  std::ostringstream os;
  if (const toml::table* t = Table()) os << *t;
  return os.str();
}

#undef METAPS_CONFIG_LOOKUP

}  // namespace metaps
