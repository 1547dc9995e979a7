// TableSpec: what a server holds, read from the job config's [[tables]] entries.
//
// Each entry is one flat TOML table (all keys at one level):
//
//   [[tables]]
//   name = "item"            # required, unique, non-empty
//   dim = 32                 # required, >= 1; for a dense tensor: its element count
//   dense = false            # a dense tensor is one row of `dim` floats under key 0
//   optimizer = "adam"       # sgd | adagrad | adam | ftrl (default sgd)
//   lr = 0.001               # and the optimizer's own hyperparameters (see ps/optimizer.h):
//   beta1 = 0.9              #   adam: beta1, beta2, eps;  adagrad: eps, initial_accumulator;
//   beta2 = 0.999            #   ftrl: l1, l2, beta, lr_power, initial_accumulator
//   eps = 1e-8
//   init = "normal"          # normal | uniform | zeros (default normal)
//   init_scale = 0.01        # normal: stddev; uniform: half-width
//   seed = 0                 # initializer seed (mixed with the table name)
//
// Unknown keys and hyperparameters that the chosen optimizer does not use are errors naming the
// key (e.g. `tables[0].beta1: not a hyperparameter of optimizer "sgd"`), so typos never pass silently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "ps/initializer.h"
#include "ps/optimizer.h"

namespace metaps::ps {

struct TableSpec {
  std::string name;
  uint32_t dim = 0;
  bool dense = false;
  OptimizerSpec optimizer;
  InitSpec init;
};

// Reads root's [[tables]] array (absent: an empty vector).
Result<std::vector<TableSpec>> ParseTableSpecs(const Config& root);
// Reads one entry (a view of one [[tables]] element).
Result<TableSpec> ParseTableSpec(const Config& entry);

}  // namespace metaps::ps
