// The `metaps` command: each subcommand registers itself on the CLI11 app here.
// This is the only layer that picks concrete classes (ZmqTransport, RocksDB storage, oneDNN kernels).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace metaps::launch {

// A subcommand's body: runs after parsing, returns the process exit code.
using Action = std::function<int()>;

// Adds every subcommand to `app`; the one the user picked stores its body in `*action`.
void RegisterCommands(CLI::App& app, Action* action);

// Per-subcommand registration, one per file under launch/.
void RegisterVersionCommand(CLI::App& app, Action* action);
void RegisterMetaGradCommand(CLI::App& app, Action* action);      // cmd_meta_grad.cc
void RegisterServerCommand(CLI::App& app, Action* action);
void RegisterSchedulerCommand(CLI::App& app, Action* action);  // also `metaps status`
void RegisterDatagenCommand(CLI::App& app, Action* action);
void RegisterWorkerCommand(CLI::App& app, Action* action);
void RegisterRunCommand(CLI::App& app, Action* action);
void RegisterLaunchCommand(CLI::App& app, Action* action);     // cmd_launch.cc
void RegisterRetrainCommand(CLI::App& app, Action* action);    // cmd_retrain.cc
void RegisterKeygenCommand(CLI::App& app, Action* action);     // cmd_keygen.cc
void RegisterExportCommand(CLI::App& app, Action* action);     // cmd_export.cc
void RegisterServeCommand(CLI::App& app, Action* action);      // cmd_serve.cc
// Benchmarks are subcommands of `metaps bench`.
void RegisterBenchPsCommand(CLI::App& bench, Action* action);
void RegisterBenchWorkerCommand(CLI::App& bench, Action* action);  // cmd_bench_worker.cc
void RegisterBenchServeCommand(CLI::App& bench, Action* action);   // cmd_bench_serve.cc

}  // namespace metaps::launch
