// Readers: MovieLens 100k, 1M and the CSV layout (20M, 25M, ...), and a generic CSV/TSV event file,
// each into a Dataset.
//
// Every reader reads whole files into memory and parses them with std::from_chars (MovieLens 1M
// loads in well under a second). A malformed line (wrong column count, a number that does not
// parse, a rating of an unknown user or item) is reported as "file:line: reason", counted in
// Dataset::bad and skipped; nothing else is dropped. When the share of bad lines in one file
// exceeds ReadOptions::max_bad_ratio the read stops with InvalidArgument naming the file, the counts
// and the config key. Errors about configuration name the key ("data.dir: ...",
// "data.columns[3].name: ..."). Functions are reentrant; nothing is shared between calls.
//
// The [data] table is documented in docs/data.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/data/events.h"

namespace metaps::data {

// Options common to every format.
struct ReadOptions {
  // Stop once more than this share of a file's data lines is malformed (checked after each bad
  // line once 1000 lines were read, and at the end of each file). 0 makes any bad line fatal.
  // Default: 0.01. Config: data.max_bad_ratio.
  double max_bad_ratio = 0.01;
  // Called with each "file:line: reason" (all of them, not only the kept examples). May be empty.
  std::function<void(const std::string&)> on_bad_line;
  // How many reports Dataset::bad.examples keeps. Default: 20.
  size_t max_examples = 20;
  // Embedding width of every field unless `dims` names it. Config: data.dim (default 16), data.dims.
  uint32_t dim = 16;
  std::map<std::string, uint32_t, std::less<>> dims;
  // MovieLens only: keep these fields, in this order (empty: all). Config: data.fields.
  std::vector<std::string> fields;
  // When set, label = (label >= threshold) ? 1 : 0. Config: data.binarize_threshold.
  std::optional<double> binarize_threshold;
  // Prefix of config keys in messages ("data" -> "data.dir: ...").
  std::string key_prefix = "data";
};

// Field names the MovieLens readers produce, in schema order:
//   user (one-hot, user side), age, gender, occupation, zip3 (first 3 characters of the zip code),
//   item (one-hot, item side), genres (bag, mean pooling), year (from the release date / title).
const std::vector<std::string>& MovieLensFieldNames();

// MovieLens 100k from `dir`: u.data (user \t item \t rating \t timestamp), u.user
// (id|age|gender|occupation|zip), u.item (id|title|release date|video release date|IMDb URL|19 genre
// flags). Text is latin-1; titles are not used, so bytes pass through untouched.
Result<Dataset> ReadMovieLens100k(const std::string& dir, const ReadOptions& options);

// MovieLens 1M from `dir`: ratings.dat (UserID::MovieID::Rating::Timestamp), users.dat
// (UserID::Gender::Age::Occupation::Zip-code), movies.dat (MovieID::Title (Year)::Genre|Genre...).
Result<Dataset> ReadMovieLens1M(const std::string& dir, const ReadOptions& options);

// MovieLens in its CSV layout (20M, 25M, 32M, latest, latest-small) from `dir`: ratings.csv
// (userId,movieId,rating,timestamp) and movies.csv (movieId,title,genres; quoted titles; genres
// '|'-separated, "(no genres listed)" for none), each with its header line. There is no users file:
// the fields are user, item, genres and year, keyed as the other MovieLens readers key them.
Result<Dataset> ReadMovieLensCsv(const std::string& dir, const ReadOptions& options);

// A generic CSV/TSV event file described by the [data] table `data` (format = "csv"): path,
// delimiter, header, quote handling and [[data.columns]] mapping columns to the user, item, label,
// timestamp and extra one-hot or multi-valued fields. `options` supplies the limits; the table's
// own max_bad_ratio/dim/dims/binarize_threshold are applied by LoadDataset, not here.
Result<Dataset> ReadEventsCsv(const Config& data, const ReadOptions& options);

// Reads ReadOptions from the [data] table `data` (max_bad_ratio, dim, dims, fields,
// binarize_threshold), with errors naming the key.
Result<ReadOptions> ReadOptionsFromConfig(const Config& data);

// The whole [data] table: checks its keys, picks the reader by data.format ("movielens-100k",
// "movielens-1m", "movielens-csv", "csv") and applies the options. `on_bad_line` receives each bad-line
// report.
Result<Dataset> LoadDataset(const Config& data, std::function<void(const std::string&)> on_bad_line = {});

}  // namespace metaps::data
