// `metaps export RUN_DIR`: a snapshot for serving from a run's checkpoint (docs/snapshot.md).
#include <iostream>
#include <memory>

#include "launch/cli.h"
#include "launch/snapshot.h"

namespace metaps::launch {

void RegisterExportCommand(CLI::App& app, Action* action) {
  auto o = std::make_shared<ExportOptions>();
  auto* cmd = app.add_subcommand("export", "Write a snapshot for serving from a run's checkpoint");
  cmd->add_option("run_dir", o->run_dir, "The run directory of a `metaps run` job")->required();
  cmd->add_option(
      "--checkpoint", o->checkpoint,
      "Checkpoint to export (default: RUN_DIR/checkpoint, written when the job finished, else the "
      "newest RUN_DIR/checkpoints/round-*)");
  cmd->add_option("--out", o->out,
                  "Snapshot directory to write (default RUN_DIR/snapshots/<full|delta>-<time>)");
  cmd->add_option("--since", o->since,
                  "A snapshot of this job: write only the rows updated after it (a delta)");
  cmd->callback([o, action] {
    *action = [o] {
      auto s = ExportSnapshot(*o);
      if (!s.ok()) {
        std::cerr << "metaps export: " << s.status().message() << "\n";
        return s.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
      }
      std::cout << "snapshot " << s->id << " (" << s->kind << ") of " << s->checkpoint << ": " << s->rows
                << " rows in " << s->files << " files (" << s->bytes << " bytes) from " << s->shards
                << " shards";
      if (s->kind == "delta") std::cout << ", " << s->rows_unchanged << " unchanged rows left out";
      std::cout << "\n  " << s->out << "\n";
      return 0;
    };
  });
}

}  // namespace metaps::launch
