#include "worker/data/readers.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <string_view>
#include <unordered_map>

#include "worker/data/internal/text.h"

namespace metaps::data {
namespace {

using internal::BadLineTracker;
using internal::LineReader;
using internal::ParseFloat;
using internal::ParseInt;
using internal::ReadWholeFile;
using internal::Split;
using internal::Trim;

// ---------------------------------------------------------------------------------------------
// Shared

uint32_t DimFor(const ReadOptions& options, std::string_view field) {
  auto it = options.dims.find(field);
  return it == options.dims.end() ? options.dim : it->second;
}

float MapLabel(const ReadOptions& options, float label) {
  if (!options.binarize_threshold) return label;
  return label >= *options.binarize_threshold ? 1.0f : 0.0f;
}

void FinishLabels(Dataset* ds) {
  bool binary = !ds->empty();
  for (float y : ds->labels()) {
    if (y != 0.0f && y != 1.0f) {
      binary = false;
      break;
    }
  }
  ds->set_binary_labels(binary);
}

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (std::filesystem::path(dir) / name).string();
}

size_t CountLines(std::string_view text) { return std::count(text.begin(), text.end(), '\n') + 1; }

bool SplitCsv(std::string_view line, std::string_view delim, char quote, std::vector<std::string_view>* out,
              std::string* scratch, std::vector<std::pair<size_t, size_t>>* spans);

// ---------------------------------------------------------------------------------------------
// MovieLens

enum MlField : int { kUser, kAge, kGender, kOccupation, kZip3, kItem, kGenres, kYear, kNumMlFields };

const std::vector<std::string>& MlNames() {
  static const std::vector<std::string> names = {"user", "age",  "gender", "occupation",
                                                 "zip3", "item", "genres", "year"};
  return names;
}

// The 19 genre flags of u.item, in file order (spelled as MovieLens 1M spells them too).
constexpr std::array<std::string_view, 19> kGenres100k = {
    "unknown",     "Action", "Adventure", "Animation", "Children's", "Comedy",  "Crime",
    "Documentary", "Drama",  "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
    "Romance",     "Sci-Fi", "Thriller",  "War",       "Western"};

struct UserAttrs {
  Key user, age, gender, occupation, zip3;
};

struct ItemAttrs {
  Key item, year;
  uint32_t genre_begin = 0, genre_count = 0;  // into MlTables::genre_keys
};

struct MlTables {
  std::unordered_map<int64_t, UserAttrs> users;
  std::unordered_map<int64_t, ItemAttrs> items;
  std::vector<Key> genre_keys;
};

// `with_users`: the set has a users file (100k, 1M), so the user attributes are fields too.
Result<std::vector<int>> SelectMlFields(const ReadOptions& options, bool with_users = true) {
  std::vector<int> sel;
  auto available = [&](int f) { return with_users || f == kUser || f >= kItem; };
  if (options.fields.empty()) {
    for (int i = 0; i < kNumMlFields; ++i) {
      if (available(i)) sel.push_back(i);
    }
    return sel;
  }
  for (size_t i = 0; i < options.fields.size(); ++i) {
    const auto& names = MlNames();
    auto it = std::find(names.begin(), names.end(), options.fields[i]);
    const std::string key = options.key_prefix + ".fields[" + std::to_string(i) + "]";
    if (it == names.end()) {
      return InvalidArgument(
          key + ": unknown field '" + options.fields[i] +
          (with_users ? "' (MovieLens fields: user, age, gender, occupation, zip3, item, genres, year)"
                      : "' (movielens-csv fields: user, item, genres, year)"));
    }
    const int f = static_cast<int>(it - names.begin());
    if (!available(f)) {
      return InvalidArgument(key + ": field '" + options.fields[i] +
                             "' is not in movielens-csv, which has no users file (its fields: user, item, "
                             "genres, year)");
    }
    if (std::find(sel.begin(), sel.end(), f) != sel.end()) {
      return InvalidArgument(key + ": field '" + options.fields[i] + "' listed twice");
    }
    sel.push_back(f);
  }
  return sel;
}

std::vector<FieldSpec> MlSchema(const ReadOptions& options, const std::vector<int>& sel) {
  std::vector<FieldSpec> schema;
  for (int f : sel) {
    FieldSpec s;
    s.name = MlNames()[f];
    s.dim = DimFor(options, s.name);
    s.side = f <= kZip3 ? FieldSpec::Side::kUser : FieldSpec::Side::kItem;
    if (f == kGenres) {
      s.kind = FieldSpec::Kind::kBag;
      s.pooling = FieldSpec::Pooling::kMean;
    }
    schema.push_back(std::move(s));
  }
  return schema;
}

// Columns of a users file: which column holds which attribute.
struct UserColumns {
  std::string_view delim;
  size_t count, age, gender, occupation, zip;
};

Status ReadMlUsers(const std::string& dir, std::string_view file, const UserColumns& cols,
                   const ReadOptions& options, MlTables* tables, BadLineStats* stats) {
  const std::string path = JoinPath(dir, file);
  METAPS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, options.key_prefix + ".dir"));
  BadLineTracker bad(options, stats, path);
  LineReader lines(text);
  std::string_view line;
  std::vector<std::string_view> f;
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    bad.CountLine();
    Split(line, cols.delim, &f);
    if (f.size() != cols.count) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "expected " + std::to_string(cols.count) +
                                                         " columns, got " + std::to_string(f.size())));
      continue;
    }
    int64_t id;
    if (!ParseInt(f[0], &id)) {
      METAPS_RETURN_IF_ERROR(
          bad.Bad(lines.number(), "user id '" + std::string(f[0]) + "' is not an integer"));
      continue;
    }
    UserAttrs a;
    a.user = FeatureKey("user", f[0]);
    a.age = FeatureKey("age", f[cols.age]);
    a.gender = FeatureKey("gender", f[cols.gender]);
    a.occupation = FeatureKey("occupation", f[cols.occupation]);
    a.zip3 = FeatureKey("zip3", f[cols.zip].substr(0, 3));
    if (!tables->users.emplace(id, a).second) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "duplicate user id " + std::to_string(id)));
    }
  }
  return bad.Finish();
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// u.item: id|title|release date|video release date|IMDb URL|19 genre flags.
Status ReadMl100kItems(const std::string& dir, const ReadOptions& options, MlTables* tables,
                       BadLineStats* stats) {
  const std::string path = JoinPath(dir, "u.item");
  METAPS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, options.key_prefix + ".dir"));
  BadLineTracker bad(options, stats, path);
  LineReader lines(text);
  std::string_view line;
  std::vector<std::string_view> f;
  constexpr size_t kColumns = 5 + kGenres100k.size();
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    bad.CountLine();
    Split(line, "|", &f);
    if (f.size() != kColumns) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "expected " + std::to_string(kColumns) +
                                                         " '|'-separated columns, got " +
                                                         std::to_string(f.size())));
      continue;
    }
    int64_t id;
    if (!ParseInt(f[0], &id)) {
      METAPS_RETURN_IF_ERROR(
          bad.Bad(lines.number(), "item id '" + std::string(f[0]) + "' is not an integer"));
      continue;
    }
    ItemAttrs a;
    a.item = FeatureKey("item", f[0]);
    // Release dates look like 01-Jan-1995; a few are empty.
    std::string_view date = Trim(f[2]);
    std::string_view year = date.size() >= 4 ? date.substr(date.size() - 4) : std::string_view();
    a.year = FeatureKey("year", AllDigits(year) ? year : std::string_view("unknown"));
    a.genre_begin = static_cast<uint32_t>(tables->genre_keys.size());
    bool flags_ok = true;
    for (size_t g = 0; g < kGenres100k.size(); ++g) {
      std::string_view flag = f[5 + g];
      if (flag == "1") {
        tables->genre_keys.push_back(FeatureKey("genres", kGenres100k[g]));
      } else if (flag != "0") {
        flags_ok = false;
        break;
      }
    }
    if (!flags_ok) {
      tables->genre_keys.resize(a.genre_begin);
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "genre flags must be 0 or 1"));
      continue;
    }
    a.genre_count = static_cast<uint32_t>(tables->genre_keys.size()) - a.genre_begin;
    if (!tables->items.emplace(id, a).second) {
      tables->genre_keys.resize(a.genre_begin);
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "duplicate item id " + std::to_string(id)));
    }
  }
  return bad.Finish();
}

// The year of a MovieLens title, "Toy Story (1995)" -> "1995"; "unknown" when it does not end in one.
std::string_view TitleYear(std::string_view title) {
  std::string_view year;
  if (title.size() >= 6 && title.back() == ')' && title[title.size() - 6] == '(') {
    year = title.substr(title.size() - 5, 4);
  }
  return AllDigits(year) ? year : std::string_view("unknown");
}

// Records one movie of movies.dat or movies.csv from its columns: the id, the year ending the
// title, and the '|'-separated genres ("(no genres listed)", the CSV layout's placeholder, is none).
// A bad id or a repeated one is a bad line.
Status AddMovie(std::string_view id_text, std::string_view title, std::string_view genre_text, uint64_t line,
                MlTables* tables, BadLineTracker* bad, std::vector<std::string_view>* genres) {
  int64_t id;
  if (!ParseInt(id_text, &id))
    return bad->Bad(line, "movie id '" + std::string(id_text) + "' is not an integer");
  ItemAttrs a;
  a.item = FeatureKey("item", id_text);
  a.year = FeatureKey("year", TitleYear(title));
  a.genre_begin = static_cast<uint32_t>(tables->genre_keys.size());
  Split(genre_text, "|", genres);
  for (std::string_view g : *genres) {
    g = Trim(g);
    if (!g.empty() && g != "(no genres listed)") tables->genre_keys.push_back(FeatureKey("genres", g));
  }
  a.genre_count = static_cast<uint32_t>(tables->genre_keys.size()) - a.genre_begin;
  if (!tables->items.emplace(id, a).second) {
    tables->genre_keys.resize(a.genre_begin);
    return bad->Bad(line, "duplicate movie id " + std::to_string(id));
  }
  return Status::Ok();
}

// movies.dat: MovieID::Title (Year)::Genre|Genre. The title may itself contain ':'.
Status ReadMl1mItems(const std::string& dir, const ReadOptions& options, MlTables* tables,
                     BadLineStats* stats) {
  const std::string path = JoinPath(dir, "movies.dat");
  METAPS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, options.key_prefix + ".dir"));
  BadLineTracker bad(options, stats, path);
  LineReader lines(text);
  std::string_view line;
  std::vector<std::string_view> genres;
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    bad.CountLine();
    const size_t first = line.find("::");
    const size_t last = line.rfind("::");
    if (first == std::string_view::npos || last == first) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "expected MovieID::Title::Genres"));
      continue;
    }
    METAPS_RETURN_IF_ERROR(AddMovie(line.substr(0, first), Trim(line.substr(first + 2, last - first - 2)),
                                    line.substr(last + 2), lines.number(), tables, &bad, &genres));
  }
  return bad.Finish();
}

// Checks that the first line of a MovieLens CSV file is the expected header.
Status ExpectHeader(std::string_view line, std::string_view header, uint64_t number,
                    const std::string& path) {
  if (Trim(line) == header) return Status::Ok();
  return InvalidArgument(path + ":" + std::to_string(number) + ": expected the header '" +
                         std::string(header) + "', got '" + std::string(Trim(line).substr(0, 80)) + "'");
}

// movies.csv (MovieLens 20M, 25M, 32M, latest): a header, then movieId,title,genres; titles that
// hold a comma are quoted; genres are '|'-separated, "(no genres listed)" meaning none.
Status ReadMlCsvItems(const std::string& dir, const ReadOptions& options, MlTables* tables,
                      BadLineStats* stats) {
  const std::string path = JoinPath(dir, "movies.csv");
  METAPS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, options.key_prefix + ".dir"));
  BadLineTracker bad(options, stats, path);
  LineReader lines(text);
  std::string_view line;
  std::vector<std::string_view> f, genres;
  std::string scratch;
  std::vector<std::pair<size_t, size_t>> spans;
  bool header = true;
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    if (header) {
      METAPS_RETURN_IF_ERROR(ExpectHeader(line, "movieId,title,genres", lines.number(), path));
      header = false;
      continue;
    }
    bad.CountLine();
    if (!SplitCsv(line, ",", '"', &f, &scratch, &spans)) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "unbalanced quote"));
      continue;
    }
    if (f.size() != 3) {
      METAPS_RETURN_IF_ERROR(bad.Bad(
          lines.number(), "expected 3 columns (movieId, title, genres), got " + std::to_string(f.size())));
      continue;
    }
    METAPS_RETURN_IF_ERROR(AddMovie(f[0], Trim(f[1]), f[2], lines.number(), tables, &bad, &genres));
  }
  if (header) return InvalidArgument(path + ": empty (expected the header 'movieId,title,genres')");
  return bad.Finish();
}

// Where a ratings file's columns and neighbours are.
struct RatingsFile {
  std::string_view file;
  std::string_view delim;
  std::string_view users_file;  // empty: there is none, and any user id is a user
  std::string_view items_file;
  std::string_view header;  // the first line, for files that have one
};

// Ratings: user, item, rating, timestamp separated by `delim`.
Status ReadMlRatings(const std::string& dir, const RatingsFile& file, const MlTables& tables,
                     const std::vector<int>& sel, const ReadOptions& options, Dataset* ds) {
  const std::string path = JoinPath(dir, file.file);
  METAPS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, options.key_prefix + ".dir"));
  ds->Reserve(CountLines(text), sel.size() + 2);
  BadLineTracker bad(options, &ds->bad, path);
  LineReader lines(text);
  std::string_view line;
  std::vector<std::string_view> f;
  bool header = !file.header.empty();
  const bool with_users = !file.users_file.empty();
  UserAttrs plain_user{};
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    if (header) {
      METAPS_RETURN_IF_ERROR(ExpectHeader(line, file.header, lines.number(), path));
      header = false;
      continue;
    }
    bad.CountLine();
    Split(line, file.delim, &f);
    if (f.size() != 4) {
      METAPS_RETURN_IF_ERROR(
          bad.Bad(lines.number(),
                  "expected 4 columns (user, item, rating, timestamp), got " + std::to_string(f.size())));
      continue;
    }
    int64_t uid, iid, ts;
    float rating;
    std::string reason;
    if (!ParseInt(f[0], &uid)) {
      reason = "user id '" + std::string(f[0]) + "' is not an integer";
    } else if (!ParseInt(f[1], &iid)) {
      reason = "item id '" + std::string(f[1]) + "' is not an integer";
    } else if (!ParseFloat(f[2], &rating)) {
      reason = "rating '" + std::string(f[2]) + "' is not a number";
    } else if (!ParseInt(f[3], &ts)) {
      reason = "timestamp '" + std::string(f[3]) + "' is not an integer";
    }
    if (!reason.empty()) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), reason));
      continue;
    }
    const UserAttrs* user = &plain_user;
    if (with_users) {
      auto u = tables.users.find(uid);
      if (u == tables.users.end()) {
        METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "unknown user " + std::to_string(uid) + " (not in " +
                                                           std::string(file.users_file) + ")"));
        continue;
      }
      user = &u->second;
    } else {
      plain_user.user = FeatureKey("user", f[0]);  // the same key a users file gives the id
    }
    auto it = tables.items.find(iid);
    if (it == tables.items.end()) {
      METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "unknown item " + std::to_string(iid) + " (not in " +
                                                         std::string(file.items_file) + ")"));
      continue;
    }
    const UserAttrs& ua = *user;
    const ItemAttrs& ia = it->second;
    ds->BeginEvent(static_cast<uint64_t>(uid), static_cast<uint64_t>(iid), MapLabel(options, rating), ts);
    for (int field : sel) {
      switch (field) {
        case kUser:
          ds->AddKey(ua.user);
          break;
        case kAge:
          ds->AddKey(ua.age);
          break;
        case kGender:
          ds->AddKey(ua.gender);
          break;
        case kOccupation:
          ds->AddKey(ua.occupation);
          break;
        case kZip3:
          ds->AddKey(ua.zip3);
          break;
        case kItem:
          ds->AddKey(ia.item);
          break;
        case kGenres:
          for (uint32_t g = 0; g < ia.genre_count; ++g) ds->AddKey(tables.genre_keys[ia.genre_begin + g]);
          break;
        case kYear:
          ds->AddKey(ia.year);
          break;
      }
      ds->EndField();
    }
  }
  return bad.Finish();
}

// ---------------------------------------------------------------------------------------------
// CSV

enum class Role : uint8_t { kUser, kItem, kLabel, kTimestamp, kField };

struct CsvColumn {
  Role role = Role::kField;
  size_t index = 0;  // column position
  int field = -1;    // schema index, or -1 when the column is not a field
  bool bag = false;
  std::string sep;  // bag separator
};

struct CsvSpec {
  std::string path;
  std::string delim;
  char quote = '"';
  bool header = true;
  std::vector<CsvColumn> columns;
  std::vector<FieldSpec> schema;
  size_t header_columns = 0;  // with a header: the exact count every line must have
  size_t min_columns = 0;     // without: one past the largest index used
};

// Splits one CSV line: `delim` separated, fields optionally wrapped in `quote` (a doubled quote
// inside is one quote). Quoted fields cannot span lines. Returns false on a broken quote.
bool SplitCsv(std::string_view line, std::string_view delim, char quote, std::vector<std::string_view>* out,
              std::string* scratch, std::vector<std::pair<size_t, size_t>>* spans) {
  if (quote == 0 || line.find(quote) == std::string_view::npos) {
    Split(line, delim, out);
    for (auto& v : *out) v = Trim(v);
    return true;
  }
  scratch->clear();
  spans->clear();
  size_t pos = 0;
  const size_t n = line.size();
  while (true) {
    while (pos < n && line[pos] == ' ') ++pos;
    const size_t start = scratch->size();
    if (pos < n && line[pos] == quote) {
      ++pos;
      while (true) {
        const size_t q = line.find(quote, pos);
        if (q == std::string_view::npos) return false;
        scratch->append(line.substr(pos, q - pos));
        if (q + 1 < n && line[q + 1] == quote) {
          scratch->push_back(quote);
          pos = q + 2;
        } else {
          pos = q + 1;
          break;
        }
      }
      spans->emplace_back(start, scratch->size() - start);
      while (pos < n && line[pos] == ' ') ++pos;
      if (pos == n) break;
      if (line.substr(pos, delim.size()) != delim) return false;
      pos += delim.size();
    } else {
      const size_t at = line.find(delim, pos);
      std::string_view v = Trim(line.substr(pos, at == std::string_view::npos ? n - pos : at - pos));
      scratch->append(v);
      spans->emplace_back(start, v.size());
      if (at == std::string_view::npos) break;
      pos = at + delim.size();
    }
  }
  out->clear();
  for (auto [s, len] : *spans) out->push_back(std::string_view(*scratch).substr(s, len));
  return true;
}

Result<std::string> OneOf(const Config& c, std::string_view key, std::string fallback,
                          std::initializer_list<std::string_view> allowed) {
  METAPS_ASSIGN_OR_RETURN(std::string v, c.GetString(key, std::move(fallback)));
  std::string list;
  for (auto a : allowed) {
    if (v == a) return v;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  return InvalidArgument(c.Path(key) + ": expected one of " + list + "; got '" + v + "'");
}

// Maps the [[data.columns]] entries onto positions of the file, with errors naming the entry's key.
// `header` holds the header's column names (empty without a header).
Status ResolveColumns(const std::vector<Config>& entries, const std::vector<std::string>& header,
                      const ReadOptions& options, const std::string& key_prefix, CsvSpec* spec) {
  const std::string columns_key = key_prefix + ".columns";
  if (entries.empty()) {
    return NotFound(columns_key + ": required for format = \"csv\" (one [[" + columns_key +
                    "]] per used column)");
  }
  int users = 0, labels = 0, items = 0, timestamps = 0;
  for (const Config& c : entries) {
    METAPS_RETURN_IF_ERROR(
        c.CheckKnownKeys({"name", "index", "role", "field", "kind", "sep", "pooling", "dim", "side"}));
    METAPS_RETURN_IF_ERROR(c.GetString("role").status());  // NotFound naming the key when absent
    METAPS_ASSIGN_OR_RETURN(std::string role,
                            OneOf(c, "role", "", {"user", "item", "label", "timestamp", "field"}));
    METAPS_ASSIGN_OR_RETURN(std::string name, c.GetString("name", ""));
    CsvColumn col;
    // Position: `index` wins; otherwise `name` looked up in the header.
    if (c.Has("index")) {
      METAPS_ASSIGN_OR_RETURN(int64_t index, c.GetIntIn("index", 0, 0, 1 << 20));
      if (spec->header && static_cast<size_t>(index) >= header.size()) {
        return InvalidArgument(c.Path("index") + ": " + std::to_string(index) +
                               " is past the last column (the header of " + spec->path + " has " +
                               std::to_string(header.size()) + ")");
      }
      col.index = static_cast<size_t>(index);
      if (name.empty() && spec->header) name = header[col.index];
    } else if (!spec->header) {
      return InvalidArgument(c.Path("index") + ": required when " + key_prefix + ".header = false");
    } else if (name.empty()) {
      return NotFound(c.Path("name") + ": required (a column of the header, or give index)");
    } else {
      auto it = std::find(header.begin(), header.end(), name);
      if (it == header.end()) {
        std::string list;
        for (const auto& h : header) list += (list.empty() ? "" : ", ") + h;
        return InvalidArgument(c.Path("name") + ": no column '" + name + "' in header of " + spec->path +
                               " (columns: " + list + ")");
      }
      col.index = static_cast<size_t>(it - header.begin());
    }
    spec->min_columns = std::max(spec->min_columns, col.index + 1);

    std::string default_field;
    FieldSpec fs;
    if (role == "user") {
      col.role = Role::kUser;
      default_field = "user";
      fs.side = FieldSpec::Side::kUser;
      if (++users > 1) return InvalidArgument(c.Path("role") + ": a second \"user\" column");
    } else if (role == "item") {
      col.role = Role::kItem;
      default_field = "item";
      fs.side = FieldSpec::Side::kItem;
      if (++items > 1) return InvalidArgument(c.Path("role") + ": a second \"item\" column");
    } else if (role == "label") {
      col.role = Role::kLabel;
      if (++labels > 1) return InvalidArgument(c.Path("role") + ": a second \"label\" column");
    } else if (role == "timestamp") {
      col.role = Role::kTimestamp;
      if (++timestamps > 1) return InvalidArgument(c.Path("role") + ": a second \"timestamp\" column");
    } else {
      col.role = Role::kField;
      default_field = name;
    }
    const bool may_be_field = col.role == Role::kUser || col.role == Role::kItem || col.role == Role::kField;
    if (!may_be_field) {
      for (std::string_view k : {"field", "kind", "sep", "pooling", "dim", "side"}) {
        if (c.Has(k)) return InvalidArgument(c.Path(k) + ": not used for role = \"" + role + "\"");
      }
      spec->columns.push_back(std::move(col));
      continue;
    }
    METAPS_ASSIGN_OR_RETURN(fs.name, c.GetString("field", default_field));
    if (fs.name.empty()) {
      if (col.role == Role::kField) return InvalidArgument(c.Path("field") + ": a field needs a name");
      spec->columns.push_back(std::move(col));  // an id column that is not also a field
      continue;
    }
    for (const FieldSpec& other : spec->schema) {
      if (other.name == fs.name) {
        return InvalidArgument(c.Path("field") + ": field '" + fs.name + "' is defined twice");
      }
    }
    if (col.role == Role::kField) {
      METAPS_ASSIGN_OR_RETURN(std::string kind, OneOf(c, "kind", "onehot", {"onehot", "bag"}));
      METAPS_ASSIGN_OR_RETURN(std::string side, OneOf(c, "side", "context", {"user", "item", "context"}));
      fs.side = side == "user"   ? FieldSpec::Side::kUser
                : side == "item" ? FieldSpec::Side::kItem
                                 : FieldSpec::Side::kContext;
      col.bag = kind == "bag";
    } else {
      for (std::string_view k : {"kind", "sep", "pooling", "side"}) {
        if (c.Has(k))
          return InvalidArgument(c.Path(k) + ": not used for role = \"" + role + "\" (always one-hot)");
      }
    }
    if (col.bag) {
      fs.kind = FieldSpec::Kind::kBag;
      METAPS_ASSIGN_OR_RETURN(col.sep, c.GetString("sep", "|"));
      if (col.sep.empty()) return InvalidArgument(c.Path("sep") + ": must not be empty");
      METAPS_ASSIGN_OR_RETURN(std::string pooling, OneOf(c, "pooling", "mean", {"sum", "mean"}));
      fs.pooling = pooling == "sum" ? FieldSpec::Pooling::kSum : FieldSpec::Pooling::kMean;
    } else {
      for (std::string_view k : {"sep", "pooling"}) {
        if (c.Has(k)) return InvalidArgument(c.Path(k) + ": only for kind = \"bag\"");
      }
    }
    METAPS_ASSIGN_OR_RETURN(int64_t dim, c.GetIntIn("dim", DimFor(options, fs.name), 1, 1 << 16));
    fs.dim = static_cast<uint32_t>(dim);
    col.field = static_cast<int>(spec->schema.size());
    spec->schema.push_back(std::move(fs));
    spec->columns.push_back(std::move(col));
  }
  if (users == 0) return InvalidArgument(columns_key + ": no column has role = \"user\"");
  if (labels == 0) return InvalidArgument(columns_key + ": no column has role = \"label\"");
  return Status::Ok();
}

Status CheckDataKeys(const Config& data) {
  return data.CheckKnownKeys({"format", "dir", "path", "delimiter", "header", "quote", "max_bad_ratio", "dim",
                              "dims", "fields", "binarize_threshold", "columns"});
}

}  // namespace

const std::vector<std::string>& MovieLensFieldNames() { return MlNames(); }

Result<Dataset> ReadMovieLens100k(const std::string& dir, const ReadOptions& options) {
  METAPS_ASSIGN_OR_RETURN(std::vector<int> sel, SelectMlFields(options));
  Dataset ds(MlSchema(options, sel));
  MlTables tables;
  METAPS_RETURN_IF_ERROR(ReadMlUsers(dir, "u.user", {"|", 5, 1, 2, 3, 4}, options, &tables, &ds.bad));
  METAPS_RETURN_IF_ERROR(ReadMl100kItems(dir, options, &tables, &ds.bad));
  METAPS_RETURN_IF_ERROR(
      ReadMlRatings(dir, {"u.data", "\t", "u.user", "u.item", ""}, tables, sel, options, &ds));
  FinishLabels(&ds);
  return ds;
}

Result<Dataset> ReadMovieLens1M(const std::string& dir, const ReadOptions& options) {
  METAPS_ASSIGN_OR_RETURN(std::vector<int> sel, SelectMlFields(options));
  Dataset ds(MlSchema(options, sel));
  MlTables tables;
  METAPS_RETURN_IF_ERROR(ReadMlUsers(dir, "users.dat", {"::", 5, 2, 1, 3, 4}, options, &tables, &ds.bad));
  METAPS_RETURN_IF_ERROR(ReadMl1mItems(dir, options, &tables, &ds.bad));
  METAPS_RETURN_IF_ERROR(
      ReadMlRatings(dir, {"ratings.dat", "::", "users.dat", "movies.dat", ""}, tables, sel, options, &ds));
  FinishLabels(&ds);
  return ds;
}

Result<Dataset> ReadMovieLensCsv(const std::string& dir, const ReadOptions& options) {
  METAPS_ASSIGN_OR_RETURN(std::vector<int> sel, SelectMlFields(options, /*with_users=*/false));
  Dataset ds(MlSchema(options, sel));
  MlTables tables;
  METAPS_RETURN_IF_ERROR(ReadMlCsvItems(dir, options, &tables, &ds.bad));
  METAPS_RETURN_IF_ERROR(
      ReadMlRatings(dir, {"ratings.csv", ",", "", "movies.csv", "userId,movieId,rating,timestamp"}, tables,
                    sel, options, &ds));
  FinishLabels(&ds);
  return ds;
}

Result<Dataset> ReadEventsCsv(const Config& data, const ReadOptions& options) {
  METAPS_RETURN_IF_ERROR(CheckDataKeys(data));
  const std::string prefix = data.path().empty() ? options.key_prefix : data.path();
  CsvSpec spec;
  // data.path: one file, or a list of files read in order as one stream (the same columns in
  // each; with a header, the same header).
  std::vector<std::string> paths;
  std::vector<std::string> path_keys;
  if (auto one = data.GetString("path"); one.ok()) {
    paths.push_back(*one);
    path_keys.push_back(data.Path("path"));
  } else if (auto many = data.GetStringArray("path"); many.ok()) {
    if (many->empty()) return InvalidArgument(data.Path("path") + ": an empty list of files");
    paths = *many;
    for (size_t i = 0; i < paths.size(); ++i)
      path_keys.push_back(data.Path("path") + "[" + std::to_string(i) + "]");
  } else {
    return one.status().code() == StatusCode::kNotFound
               ? one.status()
               : InvalidArgument(data.Path("path") + ": expected a file name or a list of file names");
  }
  METAPS_ASSIGN_OR_RETURN(std::string dir, data.GetString("dir", ""));
  for (auto& p : paths) {
    if (!dir.empty() && std::filesystem::path(p).is_relative()) p = JoinPath(dir, p);
  }
  spec.path = paths[0];
  METAPS_ASSIGN_OR_RETURN(spec.delim, data.GetString("delimiter", ","));
  if (spec.delim == "tab" || spec.delim == "\\t") spec.delim = "\t";
  if (spec.delim.empty()) return InvalidArgument(data.Path("delimiter") + ": must not be empty");
  METAPS_ASSIGN_OR_RETURN(spec.header, data.GetBool("header", true));
  METAPS_ASSIGN_OR_RETURN(std::string quote, data.GetString("quote", "\""));
  if (quote.size() > 1) return InvalidArgument(data.Path("quote") + ": one character, or \"\" for none");
  spec.quote = quote.empty() ? 0 : quote[0];
  METAPS_ASSIGN_OR_RETURN(std::vector<Config> entries, data.GetTableArray("columns"));

  std::vector<std::string> texts(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    METAPS_ASSIGN_OR_RETURN(texts[i], ReadWholeFile(paths[i], path_keys[i]));
  }
  std::string_view line;
  std::vector<std::string_view> f;
  std::string scratch;
  std::vector<std::pair<size_t, size_t>> spans;
  // Reads the header of file i (leaving `lines` after it) into *names.
  auto read_header = [&](size_t i, LineReader& lines, std::vector<std::string>* names) -> Status {
    while (lines.Next(&line)) {
      if (line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);  // UTF-8 byte-order mark
      if (Trim(line).empty()) continue;
      if (!SplitCsv(line, spec.delim, spec.quote, &f, &scratch, &spans)) {
        return InvalidArgument(data.Path("header") + ": the header of " + paths[i] + " has a broken quote");
      }
      for (auto v : f) names->emplace_back(v);
      return Status::Ok();
    }
    return InvalidArgument(data.Path("header") + ": " + paths[i] + " is empty, no header line");
  };
  std::vector<std::string> header;
  if (spec.header) {
    LineReader first(texts[0]);
    METAPS_RETURN_IF_ERROR(read_header(0, first, &header));
    spec.header_columns = header.size();
  }
  METAPS_RETURN_IF_ERROR(ResolveColumns(entries, header, options, prefix, &spec));

  Dataset ds(spec.schema);
  size_t total_lines = 0;
  for (const auto& t : texts) total_lines += CountLines(t);
  ds.Reserve(total_lines, spec.schema.size() + 2);
  const size_t expected = spec.header ? spec.header_columns : spec.min_columns;
  int64_t line_base = 0;  // without a timestamp column, events are ordered by line across the files
  for (size_t file = 0; file < paths.size(); ++file) {
    LineReader lines(texts[file]);
    if (spec.header) {
      std::vector<std::string> names;
      METAPS_RETURN_IF_ERROR(read_header(file, lines, &names));
      if (names != header) {
        return InvalidArgument(path_keys[file] + ": the header of " + paths[file] + " differs from that of " +
                               paths[0] + " (every file of data.path has the same columns)");
      }
    }
    BadLineTracker bad(options, &ds.bad, paths[file]);
    while (lines.Next(&line)) {
      if (Trim(line).empty()) continue;
      bad.CountLine();
      if (!SplitCsv(line, spec.delim, spec.quote, &f, &scratch, &spans)) {
        METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), "unbalanced quote"));
        continue;
      }
      if (spec.header ? f.size() != expected : f.size() < expected) {
        METAPS_RETURN_IF_ERROR(bad.Bad(
            lines.number(), "expected " + std::string(spec.header ? "" : "at least ") +
                                std::to_string(expected) + " columns, got " + std::to_string(f.size())));
        continue;
      }
      uint64_t user = 0, item = 0;
      float label = 0;
      int64_t ts =
          line_base + static_cast<int64_t>(lines.number());  // file order when there is no timestamp column
      std::string reason;
      for (const CsvColumn& col : spec.columns) {
        std::string_view v = f[col.index];
        switch (col.role) {
          case Role::kUser:
            if (v.empty()) reason = "empty user id";
            user = IdFromString(v);
            break;
          case Role::kItem:
            if (v.empty()) reason = "empty item id";
            item = IdFromString(v);
            break;
          case Role::kLabel:
            if (!ParseFloat(v, &label)) reason = "label '" + std::string(v) + "' is not a number";
            break;
          case Role::kTimestamp:
            if (!ParseInt(v, &ts)) reason = "timestamp '" + std::string(v) + "' is not an integer";
            break;
          case Role::kField:
            break;
        }
        if (!reason.empty()) break;
      }
      if (!reason.empty()) {
        METAPS_RETURN_IF_ERROR(bad.Bad(lines.number(), reason));
        continue;
      }
      ds.BeginEvent(user, item, MapLabel(options, label), ts);
      // Columns are in schema order among those that are fields.
      for (const CsvColumn& col : spec.columns) {
        if (col.field < 0) continue;
        const std::string& name = spec.schema[col.field].name;
        std::string_view v = f[col.index];
        if (!col.bag) {
          ds.AddKey(FeatureKey(name, v));
        } else if (!v.empty()) {
          size_t start = 0;
          while (true) {
            size_t at = v.find(col.sep, start);
            std::string_view part =
                Trim(v.substr(start, at == std::string_view::npos ? v.size() - start : at - start));
            if (!part.empty()) ds.AddKey(FeatureKey(name, part));
            if (at == std::string_view::npos) break;
            start = at + col.sep.size();
          }
        }
        ds.EndField();
      }
    }
    METAPS_RETURN_IF_ERROR(bad.Finish());
    line_base += static_cast<int64_t>(lines.number());
  }
  FinishLabels(&ds);
  return ds;
}

Result<ReadOptions> ReadOptionsFromConfig(const Config& data) {
  ReadOptions o;
  if (!data.path().empty()) o.key_prefix = data.path();
  METAPS_ASSIGN_OR_RETURN(o.max_bad_ratio, data.GetDouble("max_bad_ratio", 0.01));
  if (!(o.max_bad_ratio >= 0 && o.max_bad_ratio <= 1)) {
    return InvalidArgument(data.Path("max_bad_ratio") + ": " + std::to_string(o.max_bad_ratio) +
                           " is outside [0, 1]");
  }
  METAPS_ASSIGN_OR_RETURN(int64_t dim, data.GetIntIn("dim", 16, 1, 1 << 16));
  o.dim = static_cast<uint32_t>(dim);
  METAPS_ASSIGN_OR_RETURN(Config dims, data.GetTable("dims"));
  for (const std::string& k : dims.Keys()) {
    METAPS_ASSIGN_OR_RETURN(int64_t d, dims.GetIntIn(k, 16, 1, 1 << 16));
    o.dims[k] = static_cast<uint32_t>(d);
  }
  if (data.Has("fields")) {
    METAPS_ASSIGN_OR_RETURN(o.fields, data.GetStringArray("fields"));
  }
  if (data.Has("binarize_threshold")) {
    METAPS_ASSIGN_OR_RETURN(double t, data.GetDouble("binarize_threshold"));
    o.binarize_threshold = t;
  }
  return o;
}

Result<Dataset> LoadDataset(const Config& data, std::function<void(const std::string&)> on_bad_line) {
  METAPS_RETURN_IF_ERROR(CheckDataKeys(data));
  METAPS_ASSIGN_OR_RETURN(ReadOptions options, ReadOptionsFromConfig(data));
  options.on_bad_line = std::move(on_bad_line);
  METAPS_RETURN_IF_ERROR(data.GetString("format").status());  // NotFound naming data.format
  METAPS_ASSIGN_OR_RETURN(
      std::string format,
      OneOf(data, "format", "", {"movielens-100k", "movielens-1m", "movielens-csv", "csv"}));
  Result<Dataset> ds = Status(InvalidArgument("unreachable"));
  if (format == "csv") {
    if (data.Has("fields")) {
      return InvalidArgument(data.Path("fields") + ": only for the MovieLens formats; with csv the [[" +
                             data.Path("columns") + "]] entries are the fields");
    }
    ds = ReadEventsCsv(data, options);
  } else {
    for (std::string_view k : {"path", "delimiter", "header", "quote", "columns"}) {
      if (data.Has(k)) return InvalidArgument(data.Path(k) + ": only for format = \"csv\"");
    }
    METAPS_ASSIGN_OR_RETURN(std::string dir, data.GetString("dir"));
    ds = format == "movielens-100k" ? ReadMovieLens100k(dir, options)
         : format == "movielens-1m" ? ReadMovieLens1M(dir, options)
                                    : ReadMovieLensCsv(dir, options);
  }
  if (!ds.ok()) return ds;
  for (const auto& [name, dim] : options.dims) {
    if (ds->FieldIndex(name) < 0)
      return InvalidArgument(data.Path("dims") + "." + name + ": no field '" + name + "'");
  }
  if (ds->empty()) {
    return InvalidArgument(data.Path(format == "csv" ? "path" : "dir") + ": no events were read (" +
                           std::to_string(ds->bad.bad) + " malformed lines)");
  }
  return ds;
}

}  // namespace metaps::data
