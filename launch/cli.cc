#include "launch/cli.h"

#include <iostream>

namespace metaps::launch {

void RegisterVersionCommand(CLI::App& app, Action* action) {
  auto* cmd = app.add_subcommand("version", "Print the metaps version");
  cmd->callback([action] {
    *action = [] {
      std::cout << "metaps 0.1.0\n";
      return 0;
    };
  });
}

void RegisterCommands(CLI::App& app, Action* action) {
  RegisterVersionCommand(app, action);
  RegisterMetaGradCommand(app, action);
  RegisterServerCommand(app, action);
  RegisterSchedulerCommand(app, action);
  RegisterDatagenCommand(app, action);
  RegisterWorkerCommand(app, action);
  RegisterRunCommand(app, action);
  RegisterLaunchCommand(app, action);
  RegisterRetrainCommand(app, action);
  RegisterKeygenCommand(app, action);
  RegisterExportCommand(app, action);
  RegisterServeCommand(app, action);
  auto* bench = app.add_subcommand("bench", "Benchmarks; each ends with one JSON line on stdout");
  bench->require_subcommand(1);
  RegisterBenchPsCommand(*bench, action);
  RegisterBenchWorkerCommand(*bench, action);
  RegisterBenchServeCommand(*bench, action);
}

}  // namespace metaps::launch
