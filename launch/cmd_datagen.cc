// `metaps datagen`: writes a synthetic cold-start data set (events.csv in the generic CSV format)
// and a [data]/[eval] config that reads it (data.toml). See docs/data.md.
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>

#include "launch/cli.h"
#include "worker/data/datagen.h"

namespace metaps::launch {
namespace {

struct DatagenFlags {
  std::string out;
  data::DatagenOptions options;
};

int RunDatagen(const DatagenFlags& f) {
  auto set = data::GenerateSynthetic(f.options);
  if (!set.ok()) {
    std::cerr << "metaps datagen: " << set.status().message() << "\n";
    return 2;
  }
  if (Status s = data::WriteSynthetic(*set, f.out); !s.ok()) {
    std::cerr << "metaps datagen: " << s.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << set->events.size() << " " << (f.options.binary ? "clicks" : "ratings") << " of "
            << f.options.users << " users on " << f.options.items << " items to " << f.out
            << "/events.csv; config: " << f.out << "/data.toml\n";
  return 0;
}

}  // namespace

void RegisterDatagenCommand(CLI::App& app, Action* action) {
  auto flags = std::make_shared<DatagenFlags>();
  auto* cmd = app.add_subcommand("datagen", "Write a synthetic cold-start data set (CSV) and its config");
  cmd->add_option("--out", flags->out, "Output directory (created if needed)")->required();
  cmd->add_option("--users", flags->options.users, "Number of users")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--items", flags->options.items, "Number of items")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--events-per-user", flags->options.events_per_user,
                  "Mean events per user (each user gets between half and 1.5 times this)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", flags->options.seed, "Random seed; the same seed writes the same files")
      ->capture_default_str();
  cmd->add_option("--genres", flags->options.genres, "Number of item genres")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--noise", flags->options.noise, "Rating noise standard deviation")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--binary", flags->options.binary, "Write 0/1 clicks instead of 1..5 ratings");
  cmd->callback([flags, action] { *action = [flags] { return RunDatagen(*flags); }; });
}

}  // namespace metaps::launch
