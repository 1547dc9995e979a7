#include "worker/data/readers.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "worker/data/internal/test_files.h"
#include "worker/data/split.h"

namespace metaps::data {
namespace {

using testing::TempDir;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<Key> Keys(const Dataset& ds, size_t event, std::string_view field) {
  const int f = ds.FieldIndex(field);
  EXPECT_GE(f, 0) << field;
  auto span = ds.keys(event, static_cast<size_t>(f));
  return {span.begin(), span.end()};
}

std::vector<Key> Genres(std::initializer_list<std::string_view> names) {
  std::vector<Key> out;
  for (auto n : names) out.push_back(FeatureKey("genres", n));
  return out;
}

std::string Flags(std::initializer_list<int> on) {
  std::string s;
  for (int g = 0; g < 19; ++g) {
    bool set = false;
    for (int x : on) set |= x == g;
    s += set ? "|1" : "|0";
  }
  return s;
}

// The exact MovieLens 100k formats, including a latin-1 title (0xE9), an empty release date and two
// malformed rating lines (6: an unknown item, 7: a missing column).
void WriteMl100k(const TempDir& dir) {
  dir.Write("u.user",
            "1|24|M|technician|85711\n"
            "2|53|F|other|94043\n"
            "3|23|M|writer|32067\n");
  dir.Write("u.item",
            "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)" +
                Flags({3, 4, 5}) + "\n" +
                "2|Mis\xE9rables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Miserables" +
                Flags({8}) + "\n" + "3|unknown||||" + Flags({0}).substr(1) + "\n");
  dir.Write("u.data",
            "1\t1\t5\t874965758\n"
            "1\t2\t3\t874965759\n"
            "2\t1\t4\t876893171\n"
            "2\t3\t2\t876893172\n"
            "3\t2\t1\t878542960\n"
            "1\t9\t4\t874965760\n"
            "2\t2\n"
            "3\t1\t4\t878542961\n");
}

TEST(MovieLens100kTest, ReadsUsersItemsAndRatingsAsFields) {
  TempDir dir;
  WriteMl100k(dir);
  ReadOptions options;
  options.max_bad_ratio = 0.5;
  std::vector<std::string> reported;
  options.on_bad_line = [&](const std::string& m) { reported.push_back(m); };
  auto ds = ReadMovieLens100k(dir.path(), options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->size(), 6u);
  std::vector<std::string> names;
  for (const auto& f : ds->schema()) names.push_back(f.name);
  EXPECT_EQ(names, MovieLensFieldNames());
  EXPECT_EQ(ds->schema()[ds->FieldIndex("genres")].kind, FieldSpec::Kind::kBag);
  EXPECT_EQ(ds->schema()[ds->FieldIndex("genres")].pooling, FieldSpec::Pooling::kMean);
  EXPECT_EQ(ds->schema()[ds->FieldIndex("age")].side, FieldSpec::Side::kUser);
  EXPECT_EQ(ds->schema()[ds->FieldIndex("year")].side, FieldSpec::Side::kItem);

  // Event 0: user 1 rates Toy Story 5.
  EXPECT_EQ(ds->user(0), 1u);
  EXPECT_EQ(ds->item(0), 1u);
  EXPECT_EQ(ds->label(0), 5.0f);
  EXPECT_EQ(ds->timestamp(0), 874965758);
  EXPECT_EQ(Keys(*ds, 0, "user"), std::vector<Key>{FeatureKey("user", "1")});
  EXPECT_EQ(Keys(*ds, 0, "age"), std::vector<Key>{FeatureKey("age", "24")});
  EXPECT_EQ(Keys(*ds, 0, "gender"), std::vector<Key>{FeatureKey("gender", "M")});
  EXPECT_EQ(Keys(*ds, 0, "occupation"), std::vector<Key>{FeatureKey("occupation", "technician")});
  EXPECT_EQ(Keys(*ds, 0, "zip3"), std::vector<Key>{FeatureKey("zip3", "857")});
  EXPECT_EQ(Keys(*ds, 0, "item"), std::vector<Key>{FeatureKey("item", "1")});
  EXPECT_EQ(Keys(*ds, 0, "genres"), Genres({"Animation", "Children's", "Comedy"}));
  EXPECT_EQ(Keys(*ds, 0, "year"), std::vector<Key>{FeatureKey("year", "1995")});
  EXPECT_EQ(ds->all_keys(0).size(), 10u);
  // Event 1: the latin-1 title does not disturb the row.
  EXPECT_EQ(Keys(*ds, 1, "genres"), Genres({"Drama"}));
  EXPECT_EQ(Keys(*ds, 1, "year"), std::vector<Key>{FeatureKey("year", "1995")});
  // Event 3: item 3 has no release date and the "unknown" genre.
  EXPECT_EQ(Keys(*ds, 3, "year"), std::vector<Key>{FeatureKey("year", "unknown")});
  EXPECT_EQ(Keys(*ds, 3, "genres"), Genres({"unknown"}));
  EXPECT_EQ(ds->user(5), 3u);
  EXPECT_EQ(ds->label(5), 4.0f);
  EXPECT_FALSE(ds->binary_labels());

  // Both bad lines are reported with file and line, counted, and nothing else is lost.
  const std::string data = dir.File("u.data");
  EXPECT_EQ(ds->bad.bad, 2u);
  EXPECT_EQ(ds->bad.lines, 3u + 3u + 8u);  // u.user + u.item + u.data
  ASSERT_EQ(reported.size(), 2u);
  EXPECT_EQ(reported[0], data + ":6: unknown item 9 (not in u.item)");
  EXPECT_TRUE(Contains(reported[1], data + ":7: expected 4 columns")) << reported[1];
  EXPECT_EQ(ds->bad.examples, reported);
}

TEST(MovieLens100kTest, TooManyBadLinesStopWithAnErrorNamingFileCountsAndKey) {
  TempDir dir;
  WriteMl100k(dir);
  auto ds = ReadMovieLens100k(dir.path(), ReadOptions{});  // default limit 1%
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = ds.status().message();
  EXPECT_TRUE(Contains(m, "data.max_bad_ratio: 2 of 8 lines")) << m;
  EXPECT_TRUE(Contains(m, dir.File("u.data"))) << m;
  EXPECT_TRUE(Contains(m, "u.data:6: unknown item 9")) << m;
}

TEST(MovieLens100kTest, BadRatioStopsEarlyOnceEnoughLinesWereRead) {
  TempDir dir;
  WriteMl100k(dir);
  std::string data;
  for (int i = 0; i < 1000; ++i) data += "1\t1\t4\t" + std::to_string(1000 + i) + "\n";
  for (int i = 0; i < 500; ++i) data += "1\tx\t4\t5\n";
  dir.Write("u.data", data);
  ReadOptions options;
  int reported = 0;
  options.on_bad_line = [&](const std::string&) { ++reported; };
  auto ds = ReadMovieLens100k(dir.path(), options);
  ASSERT_FALSE(ds.ok());
  // 11 bad of 1011 lines is the first point above 1%.
  EXPECT_TRUE(Contains(ds.status().message(), "11 of 1011 lines read so far")) << ds.status();
  EXPECT_EQ(reported, 11);

  options.max_bad_ratio = 0;  // any bad line is fatal
  reported = 0;
  dir.Write("u.data", "1\t1\t4\t5\n1\t1\tfive\t6\n1\t1\t4\t7\n");
  ds = ReadMovieLens100k(dir.path(), options);
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(Contains(ds.status().message(), "u.data:2: rating 'five' is not a number")) << ds.status();
}

TEST(MovieLens100kTest, MissingFileNamesTheKeyAndTheFile) {
  TempDir dir;
  WriteMl100k(dir);
  std::filesystem::remove(dir.File("u.data"));
  auto ds = ReadMovieLens100k(dir.path(), ReadOptions{});
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ds.status().message(), "data.dir: file u.data not found in " + dir.path());
}

TEST(MovieLens1MTest, ReadsTheDoubleColonFormat) {
  TempDir dir;
  dir.Write("users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n");
  dir.Write("movies.dat",
            "1::Toy Story (1995)::Animation|Children's|Comedy\r\n"
            "2::Mis\xE9rables, Les (1995)::Drama|Musical\r\n"
            "3::Dr. Strangelove: or How I Learned to Stop Worrying (1963)::Sci-Fi|War\r\n");
  dir.Write("ratings.dat",
            "1::1::5::978300760\n"
            "1::3::3::978302109\n"
            "2::2::4::978301968\n"
            "2::1::x::978300275\n"
            "2::3::2::978824291\n");
  ReadOptions options;
  options.max_bad_ratio = 0.3;
  options.binarize_threshold = 4;
  auto ds = ReadMovieLens1M(dir.path(), options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->size(), 4u);
  EXPECT_EQ(ds->bad.bad, 1u);
  ASSERT_EQ(ds->bad.examples.size(), 1u);
  EXPECT_EQ(ds->bad.examples[0], dir.File("ratings.dat") + ":4: rating 'x' is not a number");
  // users.dat is UserID::Gender::Age::Occupation::Zip-code.
  EXPECT_EQ(Keys(*ds, 0, "gender"), std::vector<Key>{FeatureKey("gender", "F")});
  EXPECT_EQ(Keys(*ds, 0, "age"), std::vector<Key>{FeatureKey("age", "1")});
  EXPECT_EQ(Keys(*ds, 0, "occupation"), std::vector<Key>{FeatureKey("occupation", "10")});
  EXPECT_EQ(Keys(*ds, 0, "zip3"), std::vector<Key>{FeatureKey("zip3", "480")});
  EXPECT_EQ(Keys(*ds, 0, "genres"), Genres({"Animation", "Children's", "Comedy"}));
  // A title with ':' inside, and the year from the title.
  EXPECT_EQ(Keys(*ds, 1, "item"), std::vector<Key>{FeatureKey("item", "3")});
  EXPECT_EQ(Keys(*ds, 1, "year"), std::vector<Key>{FeatureKey("year", "1963")});
  EXPECT_EQ(Keys(*ds, 1, "genres"), Genres({"Sci-Fi", "War"}));
  EXPECT_EQ(Keys(*ds, 2, "genres"), Genres({"Drama", "Musical"}));  // the latin-1 title
  EXPECT_EQ(Keys(*ds, 2, "age"), std::vector<Key>{FeatureKey("age", "56")});
  // Binarized at 4: 5 -> 1, 3 -> 0, 4 -> 1, 2 -> 0.
  EXPECT_TRUE(ds->binary_labels());
  EXPECT_EQ(ds->labels(), (std::vector<float>{1, 0, 1, 0}));
}

TEST(MovieLens1MTest, FieldSelectionAndDims) {
  TempDir dir;
  dir.Write("users.dat", "1::F::1::10::48067\n");
  dir.Write("movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n");
  dir.Write("ratings.dat", "1::1::5::978300760\n");
  auto cfg =
      Config::ParseString("[data]\nformat = \"movielens-1m\"\ndir = \"" + dir.path() +
                          "\"\nfields = [\"age\", \"item\", \"genres\"]\ndim = 8\n[data.dims]\ngenres = 4\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto ds = LoadDataset(*cfg->GetTable("data"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->num_fields(), 3u);
  EXPECT_EQ(ds->schema()[0].name, "age");
  EXPECT_EQ(ds->schema()[0].dim, 8u);
  EXPECT_EQ(ds->schema()[2].dim, 4u);
  EXPECT_EQ(ds->all_keys(0).size(), 5u);

  auto bad = Config::ParseString("[data]\nformat = \"movielens-1m\"\ndir = \"" + dir.path() +
                                 "\"\nfields = [\"age\", \"genre\"]\n");
  auto err = LoadDataset(*bad->GetTable("data"));
  ASSERT_FALSE(err.ok());
  EXPECT_TRUE(Contains(err.status().message(), "data.fields[1]: unknown field 'genre'")) << err.status();
}

// --- MovieLens in CSV (20M, 25M, 32M, latest) ---

TEST(MovieLensCsvTest, ReadsRatingsAndMoviesWithHeadersAndQuotedTitles) {
  TempDir dir;
  dir.Write("movies.csv",
            "movieId,title,genres\r\n"
            "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\r\n"
            "11,\"American President, The (1995)\",Comedy|Drama|Romance\r\n"
            "2,\"\"\"Great Performances\"\" Cats (1998)\",Musical\r\n"
            "3,Babylon 5 ,(no genres listed)\r\n"
            "4,\"Broken, title,Drama\r\n");
  dir.Write("ratings.csv",
            "userId,movieId,rating,timestamp\n"
            "1,1,4.0,964982703\n"
            "1,11,3.5,964981247\n"
            "7,2,0.5,1100000000\n"
            "7,3,5.0,1100000001\n"
            "7,99,5.0,1100000002\n"
            "7,4,5.0,1100000003\n");
  ReadOptions options;
  options.max_bad_ratio = 0.5;
  std::vector<std::string> reports;
  options.on_bad_line = [&](const std::string& r) { reports.push_back(r); };
  auto ds = ReadMovieLensCsv(dir.path(), options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->num_fields(), 4u);
  EXPECT_EQ(ds->schema()[0].name, "user");
  EXPECT_EQ(ds->schema()[1].name, "item");
  EXPECT_EQ(ds->schema()[2].name, "genres");
  EXPECT_EQ(ds->schema()[3].name, "year");
  EXPECT_EQ(ds->schema()[2].kind, FieldSpec::Kind::kBag);
  ASSERT_EQ(ds->size(), 4u);
  // The broken quote in movies.csv (line 6), and the ratings of movies that are not there: one
  // missing from the file, one whose line was bad.
  EXPECT_EQ(ds->bad.bad, 3u);
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[0], dir.File("movies.csv") + ":6: unbalanced quote");
  EXPECT_EQ(reports[1], dir.File("ratings.csv") + ":6: unknown item 99 (not in movies.csv)");
  EXPECT_EQ(reports[2], dir.File("ratings.csv") + ":7: unknown item 4 (not in movies.csv)");
  // Users are keyed as a users file would key them; half-star ratings are labels as they are.
  EXPECT_EQ(Keys(*ds, 0, "user"), std::vector<Key>{FeatureKey("user", "1")});
  EXPECT_EQ(Keys(*ds, 2, "user"), std::vector<Key>{FeatureKey("user", "7")});
  EXPECT_EQ(ds->labels(), (std::vector<float>{4.0f, 3.5f, 0.5f, 5.0f}));
  EXPECT_EQ(Keys(*ds, 0, "genres"), Genres({"Adventure", "Animation", "Children", "Comedy", "Fantasy"}));
  EXPECT_EQ(Keys(*ds, 0, "year"), std::vector<Key>{FeatureKey("year", "1995")});
  // A quoted title with a comma, and one with doubled quotes.
  EXPECT_EQ(Keys(*ds, 1, "item"), std::vector<Key>{FeatureKey("item", "11")});
  EXPECT_EQ(Keys(*ds, 1, "genres"), Genres({"Comedy", "Drama", "Romance"}));
  EXPECT_EQ(Keys(*ds, 2, "year"), std::vector<Key>{FeatureKey("year", "1998")});
  // No year in the title, and "(no genres listed)" is an empty bag.
  EXPECT_EQ(Keys(*ds, 3, "year"), std::vector<Key>{FeatureKey("year", "unknown")});
  EXPECT_TRUE(Keys(*ds, 3, "genres").empty());
}

TEST(MovieLensCsvTest, ConfigSelectsFieldsAndRefusesUserAttributesAndWrongHeaders) {
  TempDir dir;
  dir.Write("movies.csv", "movieId,title,genres\n1,Toy Story (1995),Animation\n");
  dir.Write("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n");
  auto load = [&](const std::string& more) {
    auto cfg =
        Config::ParseString("[data]\nformat = \"movielens-csv\"\ndir = \"" + dir.path() + "\"\n" + more);
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    return LoadDataset(*cfg->GetTable("data"));
  };
  auto ds = load("fields = [\"item\", \"year\"]\n");
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->num_fields(), 2u);
  EXPECT_EQ(ds->schema()[1].name, "year");

  auto age = load("fields = [\"item\", \"age\"]\n");
  ASSERT_FALSE(age.ok());
  EXPECT_TRUE(Contains(age.status().message(), "data.fields[1]: field 'age' is not in movielens-csv"))
      << age.status();

  dir.Write("ratings.csv", "user,movie,rating,timestamp\n1,1,4.0,964982703\n");
  auto header = load("");
  ASSERT_FALSE(header.ok());
  EXPECT_EQ(header.status().message(), dir.File("ratings.csv") +
                                           ":1: expected the header 'userId,movieId,rating,timestamp', got "
                                           "'user,movie,rating,timestamp'");
  std::filesystem::remove(dir.File("movies.csv"));
  auto missing = load("");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status().message(), "data.dir: file movies.csv not found"))
      << missing.status();
}

// --- generic CSV ---

Result<Dataset> LoadCsv(const std::string& columns_and_more, const std::string& path) {
  auto cfg = Config::ParseString("[data]\nformat = \"csv\"\npath = \"" + path + "\"\n" + columns_and_more);
  if (!cfg.ok()) return cfg.status();
  METAPS_ASSIGN_OR_RETURN(Config data, cfg->GetTable("data"));
  return LoadDataset(data);
}

constexpr char kCsvColumns[] = R"(max_bad_ratio = 0.5
[[data.columns]]
name = "uid"
role = "user"
[[data.columns]]
name = "movie"
role = "item"
[[data.columns]]
name = "stars"
role = "label"
[[data.columns]]
name = "ts"
role = "timestamp"
[[data.columns]]
name = "tags"
role = "field"
kind = "bag"
sep = "|"
pooling = "sum"
dim = 8
[[data.columns]]
name = "city"
role = "field"
side = "user"
)";

TEST(CsvReaderTest, MapsHeaderColumnsAndMultiValuedFields) {
  TempDir dir;
  const std::string path = dir.Write("events.csv",
                                     "ts,uid,movie,stars,tags,city\n"
                                     "100,u1,m1,4.5,\"a|b\",Paris\n"
                                     "200, u1 ,m2,3,b,\"Lyon, FR\"\n"
                                     "50,u2,m1,1,,Paris\n"
                                     "bad,u2,m2,2,a,Paris\n"
                                     "300,u2,m3,2,a|a|c\n");
  std::vector<std::string> reported;
  auto cfg = Config::ParseString("[data]\nformat = \"csv\"\npath = \"" + path + "\"\n" + kCsvColumns);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto ds = LoadDataset(*cfg->GetTable("data"), [&](const std::string& m) { reported.push_back(m); });
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->size(), 3u);
  ASSERT_EQ(ds->num_fields(), 4u);  // user, item, tags, city
  EXPECT_EQ(ds->schema()[0].name, "user");
  EXPECT_EQ(ds->schema()[1].name, "item");
  EXPECT_EQ(ds->schema()[2].name, "tags");
  EXPECT_EQ(ds->schema()[2].kind, FieldSpec::Kind::kBag);
  EXPECT_EQ(ds->schema()[2].pooling, FieldSpec::Pooling::kSum);
  EXPECT_EQ(ds->schema()[2].dim, 8u);
  EXPECT_EQ(ds->schema()[3].side, FieldSpec::Side::kUser);
  EXPECT_EQ(ds->schema()[3].dim, 16u);

  EXPECT_EQ(ds->user(0), Hash64("u1"));
  EXPECT_EQ(ds->user(1), Hash64("u1"));  // spaces around a value are trimmed
  EXPECT_EQ(ds->label(0), 4.5f);
  EXPECT_EQ(ds->timestamp(2), 50);
  EXPECT_EQ(Keys(*ds, 0, "user"), std::vector<Key>{FeatureKey("user", "u1")});
  EXPECT_EQ(Keys(*ds, 0, "tags"), (std::vector<Key>{FeatureKey("tags", "a"), FeatureKey("tags", "b")}));
  EXPECT_EQ(Keys(*ds, 1, "city"), std::vector<Key>{FeatureKey("city", "Lyon, FR")});  // quoted delimiter
  EXPECT_TRUE(Keys(*ds, 2, "tags").empty());                                          // an empty bag

  ASSERT_EQ(reported.size(), 2u);
  EXPECT_EQ(reported[0], path + ":5: timestamp 'bad' is not an integer");
  EXPECT_EQ(reported[1], path + ":6: expected 6 columns, got 5");
  EXPECT_EQ(ds->bad.bad, 2u);
}

TEST(CsvReaderTest, TsvWithoutHeaderUsesIndices) {
  TempDir dir;
  const std::string path = dir.Write("e.tsv", "7\t70\t1\tx y\n8\t80\t0\ty\n");
  auto ds = LoadCsv(R"(delimiter = "\t"
header = false
[[data.columns]]
index = 0
role = "user"
field = ""
[[data.columns]]
index = 1
role = "item"
[[data.columns]]
index = 2
role = "label"
[[data.columns]]
index = 3
name = "words"
role = "field"
kind = "bag"
sep = " "
)",
                    path);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->size(), 2u);
  ASSERT_EQ(ds->num_fields(), 2u);  // item and words; the user id is not a field
  EXPECT_EQ(ds->user(1), 8u);
  EXPECT_EQ(ds->item(1), 80u);
  EXPECT_EQ(ds->timestamp(0), 1);  // file order without a timestamp column
  EXPECT_EQ(ds->timestamp(1), 2);
  EXPECT_EQ(Keys(*ds, 0, "words"), (std::vector<Key>{FeatureKey("words", "x"), FeatureKey("words", "y")}));
  EXPECT_TRUE(ds->binary_labels());
}

// A click stream arrives as files: data.path may list them, read in order as one stream, each
// line reported against its own file.
TEST(CsvReaderTest, AListOfFilesIsReadInOrderWithEachFilesLines) {
  TempDir dir;
  const std::string a = dir.Write("part-1.csv", "ts,uid,movie,stars,tags,city\n100,u1,m1,4,a,Paris\n");
  const std::string b = dir.Write("part-2.csv",
                                  "ts,uid,movie,stars,tags,city\n"
                                  "200,u1,m2,3,b,Paris\n"
                                  "x,u2,m1,1,,Lyon\n"
                                  "300,u2,m3,2,a,Lyon\n");
  std::vector<std::string> reported;
  auto cfg =
      Config::ParseString("[data]\nformat = \"csv\"\npath = [\"" + a + "\", \"" + b + "\"]\n" + kCsvColumns);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto ds = LoadDataset(*cfg->GetTable("data"), [&](const std::string& m) { reported.push_back(m); });
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->timestamp(0), 100);
  EXPECT_EQ(ds->timestamp(1), 200);
  EXPECT_EQ(ds->user(2), Hash64("u2"));
  EXPECT_EQ(Keys(*ds, 2, "item"), std::vector<Key>{FeatureKey("item", "m3")});
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0], b + ":3: timestamp 'x' is not an integer");
  EXPECT_EQ(ds->bad.lines, 4u);

  // Files with other columns are refused, naming the list entry.
  const std::string c = dir.Write("part-3.csv", "uid,movie,stars,ts,tags,city\n");
  auto other =
      Config::ParseString("[data]\nformat = \"csv\"\npath = [\"" + a + "\", \"" + c + "\"]\n" + kCsvColumns);
  ASSERT_TRUE(other.ok());
  auto refused = LoadDataset(*other->GetTable("data"));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.status().message(), "data.path[1]: the header of " + c + " differs"))
      << refused.status();
  auto empty = Config::ParseString("[data]\nformat = \"csv\"\npath = []\n" + std::string(kCsvColumns));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(Contains(LoadDataset(*empty->GetTable("data")).status().message(), "data.path: an empty list"));
  auto number = Config::ParseString("[data]\nformat = \"csv\"\npath = 3\n" + std::string(kCsvColumns));
  ASSERT_TRUE(number.ok());
  EXPECT_TRUE(
      Contains(LoadDataset(*number->GetTable("data")).status().message(), "data.path: expected a file name"));

  // Without a timestamp column, events keep their order across the files.
  const std::string n1 = dir.Write("n1.tsv", "7\t70\t1\n7\t71\t0\n");
  const std::string n2 = dir.Write("n2.tsv", "7\t72\t1\n");
  auto order = Config::ParseString(
      "[data]\nformat = \"csv\"\ndelimiter = \"tab\"\nheader = false\npath = [\"" + n1 + "\", \"" + n2 + R"("]
[[data.columns]]
index = 0
role = "user"
[[data.columns]]
index = 1
role = "item"
[[data.columns]]
index = 2
role = "label"
)");
  ASSERT_TRUE(order.ok()) << order.status();
  auto ordered = LoadDataset(*order->GetTable("data"));
  ASSERT_TRUE(ordered.ok()) << ordered.status();
  ASSERT_EQ(ordered->size(), 3u);
  EXPECT_LT(ordered->timestamp(0), ordered->timestamp(1));
  EXPECT_LT(ordered->timestamp(1), ordered->timestamp(2));
}

TEST(CsvReaderTest, ConfigErrorsNameTheKey) {
  TempDir dir;
  const std::string path = dir.Write("events.csv", "ts,uid,movie,stars,tags,city\n1,u,m,1,a,b\n");
  std::string columns = kCsvColumns;
  auto unknown_column = LoadCsv(columns + "[[data.columns]]\nname = \"genre\"\nrole = \"field\"\n", path);
  ASSERT_FALSE(unknown_column.ok());
  EXPECT_TRUE(Contains(unknown_column.status().message(),
                       "data.columns[6].name: no column 'genre' in header of " + path))
      << unknown_column.status();

  auto missing = LoadCsv(columns, dir.File("nope.csv"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "data.path: file nope.csv not found in " + dir.path());

  auto bad_role = LoadCsv("[[data.columns]]\nname = \"uid\"\nrole = \"usr\"\n", path);
  EXPECT_TRUE(Contains(bad_role.status().message(), "data.columns[0].role: expected one of"))
      << bad_role.status();

  auto no_role = LoadCsv("[[data.columns]]\nname = \"uid\"\n", path);
  EXPECT_EQ(no_role.status().message(), "data.columns[0].role: required key is missing");

  auto no_user = LoadCsv("[[data.columns]]\nname = \"stars\"\nrole = \"label\"\n", path);
  EXPECT_TRUE(Contains(no_user.status().message(), "data.columns: no column has role = \"user\""))
      << no_user.status();

  auto typo = LoadCsv("colums = 1\n", path);
  EXPECT_TRUE(Contains(typo.status().message(), "data.colums: unknown key")) << typo.status();

  auto dup = LoadCsv(columns + "[[data.columns]]\nname = \"city\"\nrole = \"field\"\n", path);
  EXPECT_TRUE(Contains(dup.status().message(), "data.columns[6].field: field 'city' is defined twice"))
      << dup.status();

  auto no_index = LoadCsv("header = false\n[[data.columns]]\nname = \"uid\"\nrole = \"user\"\n", path);
  EXPECT_TRUE(
      Contains(no_index.status().message(), "data.columns[0].index: required when data.header = false"))
      << no_index.status();

  auto no_format = Config::ParseString("[data]\ndir = \"/x\"\n");
  auto nf = LoadDataset(*no_format->GetTable("data"));
  EXPECT_EQ(nf.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Contains(nf.status().message(), "data.format")) << nf.status();

  auto ml_no_dir = Config::ParseString("[data]\nformat = \"movielens-100k\"\n");
  auto nd = LoadDataset(*ml_no_dir->GetTable("data"));
  EXPECT_TRUE(Contains(nd.status().message(), "data.dir: required key is missing")) << nd.status();

  auto ratio = LoadCsv("max_bad_ratio = 2\n[[data.columns]]\nname = \"uid\"\nrole = \"user\"\n", path);
  EXPECT_TRUE(Contains(ratio.status().message(), "data.max_bad_ratio: 2.000000 is outside [0, 1]"))
      << ratio.status();
}

TEST(CsvReaderTest, BadRatioStopNamesTheKey) {
  TempDir dir;
  const std::string path = dir.Write("events.csv", "u,i,y\n1,1,1\n1,2,x\n1,3,1\n");
  auto ds = LoadCsv(
      "[[data.columns]]\nname = \"u\"\nrole = \"user\"\n[[data.columns]]\nname = \"y\"\nrole = \"label\"\n",
      path);
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(Contains(ds.status().message(), "data.max_bad_ratio: 1 of 3 lines read so far of " + path))
      << ds.status();
}

// The shipped examples parse and follow the issue's protocol.
TEST(ExamplesTest, MovieLensExamplesUseTheProtocol) {
  const char* src = std::getenv("METAPS_SOURCE");  // set by ctest
  if (src == nullptr) src = METAPS_SOURCE_DIR;
  for (const char* name : {"movielens-100k.toml", "movielens-1m.toml", "movielens-csv.toml"}) {
    auto cfg = Config::ParseFile(std::string(src) + "/examples/" + name);
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto data = cfg->GetTable("data", true);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_TRUE(ReadOptionsFromConfig(*data).ok());
    auto format = data->GetString("format");
    ASSERT_TRUE(format.ok());
    EXPECT_EQ(*format, std::string(name).substr(0, std::string(name).size() - 5));
    auto split = SplitOptionsFromConfig(*cfg->GetTable("eval", true));
    ASSERT_TRUE(split.ok()) << split.status();
    EXPECT_EQ(split->mode, SplitOptions::Mode::kRandom);
    EXPECT_DOUBLE_EQ(split->test_fraction, 0.2);
    EXPECT_EQ(split->support, 10u);
    EXPECT_EQ(split->query, 10u);
  }
}

// Run by hand: data_test --gtest_also_run_disabled_tests --gtest_filter='*Million*'
TEST(MovieLens1MTest, DISABLED_LoadsAMillionRatingsQuickly) {
  TempDir dir;
  std::string users, movies, ratings;
  for (int u = 1; u <= 6040; ++u)
    users += std::to_string(u) + "::M::25::" + std::to_string(u % 21) + "::55455\n";
  for (int m = 1; m <= 3952; ++m)
    movies += std::to_string(m) + "::Movie " + std::to_string(m) + " (1995)::Drama|Comedy\n";
  ratings.reserve(25'000'000);
  for (int i = 0; i < 1'000'209; ++i) {
    ratings += std::to_string(1 + i % 6040) + "::" + std::to_string(1 + (i * 7) % 3952) +
               "::" + std::to_string(1 + i % 5) + "::" + std::to_string(978300760 + i) + "\n";
  }
  dir.Write("users.dat", users);
  dir.Write("movies.dat", movies);
  dir.Write("ratings.dat", ratings);
  const auto start = std::chrono::steady_clock::now();
  auto ds = ReadMovieLens1M(dir.path(), ReadOptions{});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 1'000'209u);
  std::printf("loaded %zu events in %.3f s\n", ds->size(), s);
  EXPECT_LT(s, 5.0);
}

// MovieLens 25M's shape in its CSV layout (162,541 users, 62,423 movies, 25,000,095 ratings).
// Run by hand: data_test --gtest_also_run_disabled_tests --gtest_filter='*TwentyFive*'
TEST(MovieLensCsvTest, DISABLED_LoadsTwentyFiveMillionRatings) {
  TempDir dir;
  std::string movies = "movieId,title,genres\n", ratings = "userId,movieId,rating,timestamp\n";
  for (int m = 1; m <= 62'423; ++m)
    movies += std::to_string(m) + ",\"Movie, " + std::to_string(m) + " (1995)\",Drama|Comedy\n";
  const size_t n = 25'000'095;
  ratings.reserve(n * 28);
  for (size_t i = 0; i < n; ++i) {
    ratings += std::to_string(1 + i % 162'541) + "," + std::to_string(1 + (i * 7) % 62'423) + "," +
               std::to_string(1 + i % 5) + ".5," + std::to_string(978300760 + i) + "\n";
  }
  dir.Write("movies.csv", movies);
  dir.Write("ratings.csv", ratings);
  std::string().swap(ratings);
  const auto start = std::chrono::steady_clock::now();
  auto ds = ReadMovieLensCsv(dir.path(), ReadOptions{});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), n);
  std::printf("loaded %zu events in %.3f s\n", ds->size(), s);
}

}  // namespace
}  // namespace metaps::data
