// Synthetic cold-start data: users with latent tastes over item attributes, so that adapting to a
// user's first few events truly helps.
//
// Items have a category, one to three genres and a price bucket, plus a small quality bias. Each
// user has a latent taste per genre and per category, a price sensitivity and a rating bias; a part of the
// taste is shared by users of the same observable age group (so attributes help a global model a
// little) and the larger part is individual (only adaptation recovers it). The affinity of user u
// for item i is
//   a = mean_{g in genres(i)} taste_u[g] + 0.5 * cat_taste_u[category(i)]
//       + price_sens_u * (price(i) - 2) / 2 + bias_u + quality(i)
// A rating is clamp(round(3 + 1.2 a + N(0, noise)), 1, 5); a click (binary) is Bernoulli(sigmoid(2.5 a -
// 0.5)). Items are drawn by Zipf-like popularity without repeats per user; timestamps increase per user.
// Generation uses its own PRNG and samplers (never std:: distributions, whose algorithms differ
// between standard libraries), so a seed always gives the same set; pure and reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace metaps::data {

struct DatagenOptions {
  uint32_t users = 1000;
  uint32_t items = 500;
  // Mean events per user; each user gets uniformly between max(1, E/2) and 3E/2 (capped by items).
  uint32_t events_per_user = 40;
  uint64_t seed = 1;
  bool binary = false;  // clicks instead of 1..5 ratings
  uint32_t genres = 12;
  uint32_t categories = 8;
  double noise = 0.3;  // rating noise std-dev
};

struct SyntheticItem {
  uint32_t category = 0;
  uint32_t price_bucket = 0;  // 0..4
  std::vector<uint32_t> genres;
  double quality = 0;
};

struct SyntheticUser {
  uint32_t age_group = 0;                           // 0..4, observable
  uint32_t region = 0;                              // 0..9, observable (independent of taste)
  std::vector<double> genre_taste, category_taste;  // latent
  double price_sensitivity = 0;                     // latent
  double bias = 0;                                  // latent
};

struct SyntheticEvent {
  uint32_t user = 0, item = 0;
  float label = 0;
  int64_t timestamp = 0;
  double affinity = 0;  // the latent truth behind the label
};

struct SyntheticSet {
  DatagenOptions options;
  std::vector<SyntheticUser> users;
  std::vector<SyntheticItem> items;
  std::vector<SyntheticEvent> events;  // grouped by user, each user's events in time order
};

// InvalidArgument for zero users/items/events.
Result<SyntheticSet> GenerateSynthetic(const DatagenOptions& options);

// Writes `dir`/events.csv (header: user_id,age_group,region,item_id,category,genres,price,label,
// timestamp; genres '|'-separated) and `dir`/data.toml, a [data]/[eval] config that reads it.
// Creates `dir` if needed.
Status WriteSynthetic(const SyntheticSet& set, const std::string& dir);

// The [data] and [eval] tables that read a set written to `dir` (what data.toml holds).
std::string SyntheticConfigToml(const std::string& dir, bool binary);

}  // namespace metaps::data
