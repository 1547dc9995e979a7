#include "worker/data/split.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "worker/data/internal/text.h"

namespace metaps::data {
namespace {

// A tiny portable PRNG (SplitMix64): std::shuffle's algorithm differs between standard libraries,
// and a split must be the same everywhere for a seed.
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return Mix64(state_++ * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL); }
  // Uniform in [0, n). REQUIRES: n > 0.
  uint64_t Below(uint64_t n) {
    // Rejection keeps it exactly uniform.
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
    uint64_t x;
    do x = Next();
    while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

Result<std::vector<uint64_t>> ReadIdFile(const std::string& path, const std::string& key) {
  METAPS_ASSIGN_OR_RETURN(std::string text, internal::ReadWholeFile(path, key));
  std::vector<uint64_t> ids;
  internal::LineReader lines(text);
  std::string_view line;
  while (lines.Next(&line)) {
    line = internal::Trim(line);
    if (line.empty() || line.front() == '#') continue;
    // Ids may also be given as the first column of a CSV/TSV file.
    const size_t cut = line.find_first_of(",\t ");
    if (cut != std::string_view::npos) line = line.substr(0, cut);
    ids.push_back(IdFromString(line));
  }
  return ids;
}

EvalTask MakeTask(uint64_t user, const std::vector<uint32_t>& events, uint32_t support, uint32_t query) {
  EvalTask t;
  t.user = user;
  t.support.assign(events.begin(), events.begin() + support);
  t.query.assign(events.end() - query, events.end());
  return t;
}

}  // namespace

Result<SplitOptions> SplitOptionsFromConfig(const Config& eval) {
  SplitOptions o;
  if (!eval.path().empty()) o.key_prefix = eval.path();
  METAPS_RETURN_IF_ERROR(
      eval.CheckKnownKeys({"split", "seed", "validation_fraction", "test_fraction", "validation_users",
                           "test_users", "support", "query", "ndcg_k"}));
  METAPS_ASSIGN_OR_RETURN(std::string mode, eval.GetString("split", "random"));
  if (mode == "random") {
    o.mode = SplitOptions::Mode::kRandom;
    for (std::string_view k : {"validation_users", "test_users"}) {
      if (eval.Has(k)) return InvalidArgument(eval.Path(k) + ": only for split = \"files\"");
    }
  } else if (mode == "files") {
    o.mode = SplitOptions::Mode::kFiles;
    for (std::string_view k : {"validation_fraction", "test_fraction", "seed"}) {
      if (eval.Has(k)) return InvalidArgument(eval.Path(k) + ": only for split = \"random\"");
    }
    METAPS_ASSIGN_OR_RETURN(o.test_users_file, eval.GetString("test_users"));
    METAPS_ASSIGN_OR_RETURN(o.validation_users_file, eval.GetString("validation_users", ""));
  } else {
    return InvalidArgument(eval.Path("split") + ": expected one of random, files; got '" + mode + "'");
  }
  METAPS_ASSIGN_OR_RETURN(int64_t seed, eval.GetInt("seed", 1));
  o.seed = static_cast<uint64_t>(seed);
  METAPS_ASSIGN_OR_RETURN(o.validation_fraction, eval.GetDouble("validation_fraction", 0.1));
  METAPS_ASSIGN_OR_RETURN(o.test_fraction, eval.GetDouble("test_fraction", 0.2));
  METAPS_ASSIGN_OR_RETURN(int64_t support, eval.GetIntIn("support", 10, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(int64_t query, eval.GetIntIn("query", 10, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(int64_t k, eval.GetIntIn("ndcg_k", 10, 1, 1 << 20));
  o.support = static_cast<uint32_t>(support);
  o.query = static_cast<uint32_t>(query);
  o.ndcg_k = static_cast<uint32_t>(k);
  if (o.mode == SplitOptions::Mode::kRandom) {
    auto bad = [](double f) { return !(f >= 0 && f <= 1); };
    if (bad(o.validation_fraction)) {
      return InvalidArgument(eval.Path("validation_fraction") + ": must be within [0, 1]");
    }
    if (bad(o.test_fraction)) return InvalidArgument(eval.Path("test_fraction") + ": must be within [0, 1]");
    if (o.validation_fraction + o.test_fraction > 1) {
      return InvalidArgument(eval.Path("test_fraction") + ": validation_fraction + test_fraction exceeds 1");
    }
  }
  return o;
}

Result<Split> SplitUsers(const Dataset& dataset, const SplitOptions& options) {
  if (dataset.size() > UINT32_MAX) return InvalidArgument("dataset too large for 32-bit event indices");
  // Group event indices by user, each user's events stably sorted by time.
  std::unordered_map<uint64_t, uint32_t> slot;
  std::vector<UserEvents> users;
  for (size_t e = 0; e < dataset.size(); ++e) {
    auto [it, fresh] = slot.emplace(dataset.user(e), static_cast<uint32_t>(users.size()));
    if (fresh) users.push_back({dataset.user(e), {}});
    users[it->second].events.push_back(static_cast<uint32_t>(e));
  }
  std::sort(users.begin(), users.end(),
            [](const UserEvents& a, const UserEvents& b) { return a.user < b.user; });
  for (UserEvents& u : users) {
    std::stable_sort(u.events.begin(), u.events.end(),
                     [&](uint32_t a, uint32_t b) { return dataset.timestamp(a) < dataset.timestamp(b); });
  }

  Split split;
  split.stats.users = users.size();
  enum Part : uint8_t { kTrain, kValidation, kTest };
  std::vector<Part> part(users.size(), kTrain);
  if (options.mode == SplitOptions::Mode::kRandom) {
    const double fv = options.validation_fraction, ft = options.test_fraction;
    if (!(fv >= 0 && ft >= 0 && fv + ft <= 1)) {
      return InvalidArgument(options.key_prefix +
                             ".test_fraction: fractions must be within [0, 1] and sum to at most 1");
    }
    // Fisher-Yates over users sorted by id: the first n_test go to test, the next n_val to validation.
    std::vector<uint32_t> order(users.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    SplitMix rng(options.seed);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
    const size_t n = users.size();
    const size_t n_test = static_cast<size_t>(std::llround(ft * static_cast<double>(n)));
    const size_t n_val = std::min(n - n_test, static_cast<size_t>(std::llround(fv * static_cast<double>(n))));
    for (size_t i = 0; i < n_test; ++i) part[order[i]] = kTest;
    for (size_t i = n_test; i < n_test + n_val; ++i) part[order[i]] = kValidation;
  } else {
    METAPS_ASSIGN_OR_RETURN(std::vector<uint64_t> test_ids,
                            ReadIdFile(options.test_users_file, options.key_prefix + ".test_users"));
    std::vector<uint64_t> val_ids;
    if (!options.validation_users_file.empty()) {
      METAPS_ASSIGN_OR_RETURN(
          val_ids, ReadIdFile(options.validation_users_file, options.key_prefix + ".validation_users"));
    }
    std::unordered_set<uint64_t> test_set(test_ids.begin(), test_ids.end());
    for (uint64_t id : val_ids) {
      if (test_set.count(id)) {
        return InvalidArgument(options.key_prefix + ".validation_users: user " + std::to_string(id) +
                               " is also listed in " + options.key_prefix + ".test_users");
      }
    }
    std::unordered_set<uint64_t> val_set(val_ids.begin(), val_ids.end());
    for (const auto* set : {&test_set, &val_set}) {
      for (uint64_t id : *set) split.stats.listed_but_absent += slot.count(id) == 0;
    }
    for (size_t i = 0; i < users.size(); ++i) {
      if (test_set.count(users[i].user)) part[i] = kTest;
      if (val_set.count(users[i].user)) part[i] = kValidation;
    }
  }

  const uint32_t need = options.support + options.query;
  for (size_t i = 0; i < users.size(); ++i) {
    UserEvents& u = users[i];
    switch (part[i]) {
      case kTrain:
        ++split.stats.train_users;
        split.train.push_back(std::move(u));
        break;
      case kValidation:
        ++split.stats.validation_users;
        if (u.events.size() < need) {
          ++split.stats.validation_skipped;
        } else {
          split.validation.push_back(MakeTask(u.user, u.events, options.support, options.query));
        }
        break;
      case kTest:
        ++split.stats.test_users;
        if (u.events.size() < need) {
          ++split.stats.test_skipped;
        } else {
          split.test.push_back(MakeTask(u.user, u.events, options.support, options.query));
        }
        break;
    }
  }
  return split;
}

}  // namespace metaps::data
