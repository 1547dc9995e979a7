// Subprocess: a child process started with posix_spawn, its stdout and stderr sent to a file.
//
// Used by the job supervisor (`metaps run`) and by multi-process tests. The destructor kills a
// child that is still running (SIGKILL) and reaps it, so a failing test leaves no orphans.
// Not thread-safe; one owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace metaps {

// How Spawn starts a child besides its command line.
struct SpawnOptions {
  std::string log_file;     // stdout and stderr appended here; empty: inherited
  bool stdin_pipe = false;  // stdin is a pipe this object holds open until CloseStdin (or the end):
                            // the child reads EOF once the parent lets go of it, or dies
};

class Subprocess {
 public:
  Subprocess() = default;
  ~Subprocess();
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;

  // Starts argv[0] (a path) with the given arguments. Output goes to `log_file` (appended) when
  // not empty, else it is inherited.
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv, const std::string& log_file = "");
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options);

  pid_t pid() const { return pid_; }
  bool running();
  // Sends a signal (SIGTERM, SIGKILL, ...).
  Status Signal(int signo);
  // Waits for exit up to `timeout`; returns the exit code (128+signal when killed by a signal).
  Result<int> Wait(std::chrono::milliseconds timeout);
  std::optional<int> exit_code() const { return exit_code_; }
  // With SpawnOptions::stdin_pipe: closes the parent's end, so that the child reads EOF.
  void CloseStdin();

 private:
  void Reap(int wstatus);
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> exit_code_;
};

// The first executable `name` in $PATH (a name with a '/' is returned as it is); NotFound otherwise.
Result<std::string> FindInPath(const std::string& name);

// Path of the running executable (/proc/self/exe).
std::string SelfExecutable();

// Polls `path` until it exists and is non-empty, then returns its first line.
Result<std::string> WaitForFileLine(const std::string& path, std::chrono::milliseconds timeout,
                                    Subprocess* child = nullptr);

}  // namespace metaps
