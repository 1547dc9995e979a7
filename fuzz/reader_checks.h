// Properties every data-reader fuzz target checks on what a reader returned.
#pragma once

#include <string>

#include "fuzz/fuzz_util.h"
#include "worker/data/events.h"
#include "worker/data/readers.h"

namespace metaps::fuzz {

// Read options for an input: every other input size stops at the first bad lines (the default
// max_bad_ratio path), the rest read to the end so the later lines are parsed too.
inline data::ReadOptions FuzzReadOptions(size_t input_size, const std::string& dir) {
  data::ReadOptions o;
  o.max_bad_ratio = (input_size % 2) ? 1.0 : 0.01;
  o.max_examples = 4;
  // Every report is "file:line: reason" with the file inside the scratch directory.
  o.on_bad_line = [dir](const std::string& report) {
    FUZZ_CHECK(StartsWith(report, dir + "/"), "bad-line report without its file: " + report);
    const size_t colon = report.find(':', dir.size());
    FUZZ_CHECK(colon != std::string::npos && colon + 1 < report.size() && report[colon + 1] >= '1' &&
                   report[colon + 1] <= '9',
               "bad-line report without a line number: " + report);
  };
  return o;
}

inline void CheckDataset(const Result<data::Dataset>& ds, const data::ReadOptions& o) {
  if (!ds.ok()) {
    const StatusCode code = ds.status().code();
    FUZZ_CHECK(code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound, ds.status().ToString());
    return;
  }
  FUZZ_CHECK(ds->bad.bad <= ds->bad.lines, "more bad lines than lines");
  FUZZ_CHECK(ds->bad.examples.size() <= o.max_examples, "kept more examples than asked");
  FUZZ_CHECK(ds->size() + ds->bad.bad <= ds->bad.lines, "more events than good lines");
  for (size_t e = 0; e < ds->size(); ++e) {
    for (size_t f = 0; f < ds->num_fields(); ++f) {
      auto keys = ds->keys(e, f);
      if (ds->schema()[f].kind == data::FieldSpec::Kind::kOneHot) {
        FUZZ_CHECK(keys.size() == 1, "one-hot field '" + ds->schema()[f].name + "' without exactly one key");
      }
    }
  }
}

}  // namespace metaps::fuzz
