#include "worker/data/datagen.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "common/keys.h"

namespace metaps::data {
namespace {

constexpr uint32_t kAgeGroups = 5;
constexpr uint32_t kRegions = 10;
constexpr uint32_t kPriceBuckets = 5;
constexpr double kPi = 3.14159265358979323846;

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(Mix64(seed ^ 0x6a09e667f3bcc909ULL)) {}
  uint64_t Next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return Mix64(state_);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>((Next() >> 32) * n >> 32); }
  double Normal() {                     // Box-Muller
    const double u1 = 1.0 - Uniform();  // (0, 1]
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }

 private:
  uint64_t state_;
};

double Affinity(const SyntheticUser& u, const SyntheticItem& it) {
  double genre = 0;
  for (uint32_t g : it.genres) genre += u.genre_taste[g];
  genre /= static_cast<double>(it.genres.size());
  return genre + 0.5 * u.category_taste[it.category] +
         u.price_sensitivity * (static_cast<double>(it.price_bucket) - 2.0) / 2.0 + u.bias + it.quality;
}

std::string TomlString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

Result<SyntheticSet> GenerateSynthetic(const DatagenOptions& o) {
  if (o.users == 0 || o.items == 0 || o.events_per_user == 0 || o.genres == 0 || o.categories == 0) {
    return InvalidArgument("datagen: users, items, events per user, genres and categories must be positive");
  }
  SyntheticSet set;
  set.options = o;
  Rng rng(o.seed);

  set.items.resize(o.items);
  for (SyntheticItem& it : set.items) {
    it.category = rng.Below(o.categories);
    it.price_bucket = rng.Below(kPriceBuckets);
    const uint32_t n = std::min(o.genres, 1 + rng.Below(3));
    while (it.genres.size() < n) {
      const uint32_t g = rng.Below(o.genres);
      if (std::find(it.genres.begin(), it.genres.end(), g) == it.genres.end()) it.genres.push_back(g);
    }
    std::sort(it.genres.begin(), it.genres.end());
    it.quality = 0.3 * rng.Normal();
  }

  // Part of every taste is shared within an age group (observable); the larger part is the user's own.
  std::vector<std::vector<double>> group_genre(kAgeGroups), group_category(kAgeGroups);
  for (uint32_t a = 0; a < kAgeGroups; ++a) {
    for (uint32_t g = 0; g < o.genres; ++g) group_genre[a].push_back(rng.Normal());
    for (uint32_t c = 0; c < o.categories; ++c) group_category[a].push_back(rng.Normal());
  }
  set.users.resize(o.users);
  for (SyntheticUser& u : set.users) {
    u.age_group = rng.Below(kAgeGroups);
    u.region = rng.Below(kRegions);
    for (uint32_t g = 0; g < o.genres; ++g)
      u.genre_taste.push_back(0.5 * group_genre[u.age_group][g] + rng.Normal());
    for (uint32_t c = 0; c < o.categories; ++c) {
      u.category_taste.push_back(0.5 * group_category[u.age_group][c] + rng.Normal());
    }
    u.price_sensitivity = 0.5 * rng.Normal();
    u.bias = 0.5 * rng.Normal();
  }

  // Zipf-like popularity over a random ranking of the items.
  std::vector<uint32_t> rank(o.items);
  for (uint32_t i = 0; i < o.items; ++i) rank[i] = i;
  for (uint32_t i = o.items; i > 1; --i) std::swap(rank[i - 1], rank[rng.Below(i)]);
  std::vector<double> cumulative(o.items);
  double total = 0;
  for (uint32_t i = 0; i < o.items; ++i) {
    total += 1.0 / std::pow(static_cast<double>(rank[i]) + 10.0, 0.8);
    cumulative[i] = total;
  }

  const uint32_t lo = std::max(1u, o.events_per_user / 2);
  const uint32_t hi = std::max(lo, o.events_per_user * 3 / 2);
  std::vector<uint32_t> used_by(o.items, UINT32_MAX);
  set.events.reserve(static_cast<size_t>(o.users) * o.events_per_user);
  for (uint32_t u = 0; u < o.users; ++u) {
    const uint32_t n = std::min(o.items, lo + rng.Below(hi - lo + 1));
    int64_t t = 978300000 + rng.Below(30 * 86400);
    for (uint32_t e = 0; e < n; ++e) {
      uint32_t item = 0;
      for (int attempt = 0;; ++attempt) {
        const double x = rng.Uniform() * total;
        item = static_cast<uint32_t>(std::upper_bound(cumulative.begin(), cumulative.end(), x) -
                                     cumulative.begin());
        item = std::min(item, o.items - 1);
        if (used_by[item] != u) break;
        if (attempt >= 20) {  // the popular items are taken: scan for the next free one
          while (used_by[item] == u) item = (item + 1) % o.items;
          break;
        }
      }
      used_by[item] = u;
      t += 60 + rng.Below(86400);
      SyntheticEvent ev;
      ev.user = u;
      ev.item = item;
      ev.timestamp = t;
      ev.affinity = Affinity(set.users[u], set.items[item]);
      if (o.binary) {
        const double p = 1.0 / (1.0 + std::exp(-(2.5 * ev.affinity - 0.5)));
        ev.label = rng.Uniform() < p ? 1.0f : 0.0f;
      } else {
        const double r = std::round(3.0 + 1.2 * ev.affinity + o.noise * rng.Normal());
        ev.label = static_cast<float>(std::clamp(r, 1.0, 5.0));
      }
      set.events.push_back(ev);
    }
  }
  return set;
}

std::string SyntheticConfigToml(const std::string& dir, bool binary) {
  std::error_code ec;
  std::filesystem::path events = std::filesystem::absolute(std::filesystem::path(dir) / "events.csv", ec);
  std::string t;
  t += "# Reads the set written by `metaps datagen`; see docs/data.md.\n";
  t += "[data]\nformat = \"csv\"\npath = " + TomlString(events.string()) + "\n";
  t += "delimiter = \",\"\nheader = true\nmax_bad_ratio = 0.01\ndim = 16\n";
  auto column = [&t](const char* name, const char* role, const char* extra) {
    t += "\n[[data.columns]]\nname = \"";
    t += name;
    t += "\"\nrole = \"";
    t += role;
    t += "\"\n";
    t += extra;
  };
  column("user_id", "user", "");
  column("age_group", "field", "side = \"user\"\n");
  column("region", "field", "side = \"user\"\n");
  column("item_id", "item", "");
  column("category", "field", "side = \"item\"\n");
  column("genres", "field", "side = \"item\"\nkind = \"bag\"\nsep = \"|\"\npooling = \"mean\"\n");
  column("price", "field", "side = \"item\"\n");
  column("label", "label", "");
  column("timestamp", "timestamp", "");
  t += "\n[eval]\nsplit = \"random\"\nseed = 1\nvalidation_fraction = 0.1\ntest_fraction = 0.2\n";
  t += "support = 10\nquery = 10\nndcg_k = 10\n";
  if (binary) t += "# Labels are clicks (0/1): AUC and logloss are reported too.\n";
  return t;
}

Status WriteSynthetic(const SyntheticSet& set, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InvalidArgument("--out: cannot create " + dir + ": " + ec.message());
  const std::string path = (std::filesystem::path(dir) / "events.csv").string();
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return InvalidArgument("--out: cannot write " + path);
  std::fputs("user_id,age_group,region,item_id,category,genres,price,label,timestamp\n", f.get());
  std::string genres;
  for (const SyntheticEvent& ev : set.events) {
    const SyntheticUser& u = set.users[ev.user];
    const SyntheticItem& it = set.items[ev.item];
    genres.clear();
    for (uint32_t g : it.genres) genres += (genres.empty() ? "g" : "|g") + std::to_string(g);
    std::fprintf(f.get(), "%u,a%u,r%u,%u,c%u,%s,p%u,%d,%lld\n", ev.user + 1, u.age_group, u.region,
                 ev.item + 1, it.category, genres.c_str(), it.price_bucket, static_cast<int>(ev.label),
                 static_cast<long long>(ev.timestamp));
  }
  if (std::ferror(f.get())) return InvalidArgument("--out: write error on " + path);
  FILE* raw = f.release();
  if (std::fclose(raw) != 0) return InvalidArgument("--out: write error on " + path);

  const std::string cfg_path = (std::filesystem::path(dir) / "data.toml").string();
  std::unique_ptr<FILE, int (*)(FILE*)> cfg(std::fopen(cfg_path.c_str(), "wb"), &std::fclose);
  if (!cfg) return InvalidArgument("--out: cannot write " + cfg_path);
  const std::string toml = SyntheticConfigToml(dir, set.options.binary);
  if (std::fwrite(toml.data(), 1, toml.size(), cfg.get()) != toml.size()) {
    return InvalidArgument("--out: write error on " + cfg_path);
  }
  return Status::Ok();
}

}  // namespace metaps::data
