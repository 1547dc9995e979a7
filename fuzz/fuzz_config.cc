// fuzz_config: untrusted text -> Config::ParseString -> overrides (Set) -> every typed getter on
// every key -> the table and data parsers.
//
// Input: a TOML document, then optionally a NUL byte and override lines ("a.b=value", one a line),
// applied in order with Config::Set as `metaps run --set` does.
//
// Properties checked (a violation aborts): nothing crashes; a parse error names the source and a
// line:column; an error from a typed getter starts with the full dotted key it was asked for
// (the promise of common/config.h); a document (after overrides) written by ToToml parses again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/config.h"
#include "fuzz/fuzz_util.h"
#include "ps/table_spec.h"
#include "worker/data/readers.h"

namespace metaps::fuzz {
namespace {

constexpr int kMaxDepth = 6;
constexpr int kMaxVisits = 256;

template <typename R>
void CheckNamesKey(const R& r, const Config& c, std::string_view key) {
  if (r.ok()) return;
  const std::string& m = r.status().message();
  FUZZ_CHECK(StartsWith(m, c.Path(key)), "error '" + m + "' does not name key '" + c.Path(key) + "'");
}

void Walk(const Config& c, int depth, int* visits) {
  if (depth > kMaxDepth) return;
  for (const std::string& k : c.Keys()) {
    if (++*visits > kMaxVisits) return;
    (void)c.Has(k);
    CheckNamesKey(c.GetString(k), c, k);
    CheckNamesKey(c.GetInt(k), c, k);
    CheckNamesKey(c.GetDouble(k), c, k);
    CheckNamesKey(c.GetBool(k), c, k);
    CheckNamesKey(c.GetIntArray(k), c, k);
    CheckNamesKey(c.GetDoubleArray(k), c, k);
    CheckNamesKey(c.GetStringArray(k), c, k);
    CheckNamesKey(c.GetString(k, "x"), c, k);
    CheckNamesKey(c.GetInt(k, 1), c, k);
    CheckNamesKey(c.GetDouble(k, 1.0), c, k);
    CheckNamesKey(c.GetBool(k, true), c, k);
    CheckNamesKey(c.GetIntIn(k, 1, -5, 5), c, k);
    auto sub = c.GetTable(k);
    CheckNamesKey(sub, c, k);
    if (sub.ok()) Walk(*sub, depth + 1, visits);
    auto arr = c.GetTableArray(k);
    CheckNamesKey(arr, c, k);
    if (arr.ok()) {
      for (const Config& e : *arr) Walk(e, depth + 1, visits);
    }
  }
  (void)c.CheckKnownKeys({"tables", "data", "server", "job"});
  (void)c.ToToml();
}

// Whether the document may spell a key holding an apostrophe (directly or as \u0027): the one
// shape toml++ 3.3 writes back out as invalid TOML (see the round-trip check below).
bool MaySpellApostropheKey(std::string_view doc) {
  return doc.find('\'') != std::string_view::npos || doc.find("0027") != std::string_view::npos;
}

}  // namespace
}  // namespace metaps::fuzz

using namespace metaps;        // NOLINT
using namespace metaps::fuzz;  // NOLINT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = SplitNul(std::string_view(reinterpret_cast<const char*>(data), size), 2);
  auto parsed = Config::ParseString(parts[0], "fuzz.toml");
  if (!parsed.ok()) {
    FUZZ_CHECK(StartsWith(parsed.status().message(), "fuzz.toml:"), parsed.status().message());
    return 0;
  }
  Config root = *parsed;

  std::string_view overrides = parts[1];
  while (!overrides.empty()) {
    const size_t nl = overrides.find('\n');
    (void)root.Set(overrides.substr(0, nl));
    overrides.remove_prefix(nl == std::string_view::npos ? overrides.size() : nl + 1);
  }

  int visits = 0;
  Walk(root, 0, &visits);

  // The parsers of the job config's sections.
  (void)ps::ParseTableSpecs(root);
  auto data_table = root.GetTable("data");
  if (data_table.ok()) (void)data::ReadOptionsFromConfig(*data_table);

  // What `metaps run` writes out for its child processes must read back. Known toml++ 3.3 printer
  // defect (docs/fuzzing.md): a quoted key holding an apostrophe is written unquoted; overrides can
  // no longer create one (Config::Set takes bare keys only), a document may still spell one.
  const std::string text = root.ToToml();
  if (MaySpellApostropheKey(parts[0])) return 0;
  auto again = Config::ParseString(text, "roundtrip.toml");
  FUZZ_CHECK(again.ok(), "ToToml output does not parse: " + again.status().message() + "\n--- text ---\n" + text);
  return 0;
}
