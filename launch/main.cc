#include <CLI/CLI.hpp>

#include "launch/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"metaps: a parameter server for meta-learned recommenders"};
  app.require_subcommand(1);
  metaps::launch::Action action;
  metaps::launch::RegisterCommands(app, &action);
  CLI11_PARSE(app, argc, argv);
  return action ? action() : 0;
}
