// The evaluation protocol: which users train, which validate and which test, and for the held-out
// users which of their events are the support (adapted on) and which the query (scored).
//
// Users are split either at random by fraction (seeded, exact counts: round(fraction * users)) or
// from files listing the validation and test user ids (one id per line; blank lines and lines
// starting with '#' are ignored; every user not listed trains). A held-out user's events are sorted
// by time (ties keep file order); support = the first `support` events, query = the last `query`.
// Events in between are used by neither. A held-out user with fewer than support + query events
// cannot be evaluated that way: it is skipped and counted (SplitStats), never moved into training,
// so the training set does not depend on `support`/`query`.
//
// The result holds event indices into the Dataset it was made from, which must outlive its use.
// Pure functions; reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/data/events.h"

namespace metaps::data {

struct SplitOptions {
  enum class Mode : uint8_t { kRandom, kFiles };
  Mode mode = Mode::kRandom;
  // kRandom: shares of users held out for validation and test (the rest train). Defaults: 0.1, 0.2.
  double validation_fraction = 0.1;
  double test_fraction = 0.2;
  uint64_t seed = 1;
  // kFiles: files of user ids. validation_users may be empty (no validation set).
  std::string validation_users_file;
  std::string test_users_file;
  // Events per held-out user. Defaults: 10 and 10.
  uint32_t support = 10;
  uint32_t query = 10;
  // nDCG cut-off for metrics (carried here because it is part of the protocol). Default: 10.
  uint32_t ndcg_k = 10;
  std::string key_prefix = "eval";  // for messages
};

// Reads [eval]: split ("random" | "files"), seed, validation_fraction, test_fraction,
// validation_users, test_users, support, query, ndcg_k. Errors name the key.
Result<SplitOptions> SplitOptionsFromConfig(const Config& eval);

// One user's events (indices into the Dataset), sorted by time.
struct UserEvents {
  uint64_t user = 0;
  std::vector<uint32_t> events;
};

// A held-out user: adapt on `support`, score `query`. Both sorted by time.
struct EvalTask {
  uint64_t user = 0;
  std::vector<uint32_t> support;
  std::vector<uint32_t> query;
};

struct SplitStats {
  uint64_t users = 0;                                              // distinct users in the dataset
  uint64_t train_users = 0, validation_users = 0, test_users = 0;  // as assigned, before skipping
  uint64_t validation_skipped = 0, test_skipped = 0;  // held out but with < support + query events
  uint64_t listed_but_absent = 0;  // kFiles: ids in the files that the dataset does not have
};

struct Split {
  std::vector<UserEvents> train;     // every train user, all events; ordered by user id
  std::vector<EvalTask> validation;  // ordered by user id
  std::vector<EvalTask> test;
  SplitStats stats;
};

// Splits `dataset` by `options`. InvalidArgument naming the key for bad fractions, a user listed
// in both files or an unparsable id line; NotFound naming the key for a missing id file.
Result<Split> SplitUsers(const Dataset& dataset, const SplitOptions& options);

}  // namespace metaps::data
