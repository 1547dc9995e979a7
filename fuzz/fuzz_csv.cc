// fuzz_csv: untrusted bytes -> a [data] table (TOML, before the first NUL byte) and the event file
// it describes (after it) -> LoadDataset, which checks the table's keys, reads its options and runs
// ReadEventsCsv. The harness forces format = "csv" and path = the scratch file, so the table can
// never point the reader at another file. Malformed lines must be reported and skipped or stop the
// read with InvalidArgument; configuration errors name their key; never a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/config.h"
#include "fuzz/reader_checks.h"

using namespace metaps;        // NOLINT
using namespace metaps::fuzz;  // NOLINT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = SplitNul(std::string_view(reinterpret_cast<const char*>(data), size), 2);
  // The text continues a [data] table, as in a job config ([[data.columns]] for the columns).
  auto cfg = Config::ParseString("[data]\n" + std::string(parts[0]), "job.toml");
  if (!cfg.ok()) return 0;
  auto table = cfg->GetTable("data", /*required=*/true);
  if (!table.ok()) return 0;  // e.g. the text made `data` something else
  const std::string path = ScratchPath("events.csv");
  WriteFile(path, parts[1]);
  FUZZ_CHECK(table->Set("format=\"csv\"").ok(), "cannot force the format");
  FUZZ_CHECK(table->Set("path=\"" + path + "\"").ok(), "cannot force the path");
  const data::ReadOptions o = FuzzReadOptions(size, ScratchDir());
  auto ds = data::LoadDataset(*table, o.on_bad_line);
  // LoadDataset takes max_bad_ratio from the table; the dataset's own invariants hold regardless.
  data::ReadOptions loose = o;
  loose.max_examples = 20;
  CheckDataset(ds, loose);
  if (!ds.ok()) {
    // Configuration and data errors name a key of the [data] table.
    FUZZ_CHECK(StartsWith(ds.status().message(), "data."), "error without its key: " + ds.status().ToString());
  }
  return 0;
}
