#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

extern char** environ;

namespace metaps {

Subprocess::~Subprocess() {
  CloseStdin();
  if (pid_ > 0 && !exit_code_) {
    kill(pid_, SIGKILL);
    int ws;
    if (waitpid(pid_, &ws, 0) == pid_) Reap(ws);
  }
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_), stdin_fd_(other.stdin_fd_), exit_code_(other.exit_code_) {
  other.pid_ = -1;
  other.stdin_fd_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    this->~Subprocess();
    pid_ = other.pid_;
    stdin_fd_ = other.stdin_fd_;
    exit_code_ = other.exit_code_;
    other.pid_ = -1;
    other.stdin_fd_ = -1;
  }
  return *this;
}

Result<Subprocess> Subprocess::Spawn(const std::vector<std::string>& argv, const std::string& log_file) {
  return Spawn(argv, SpawnOptions{.log_file = log_file});
}

Result<Subprocess> Subprocess::Spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) return InvalidArgument("empty command line");
  // Both ends close on exec: the child gets the read end as its fd 0 (dup2 clears the flag), and
  // no other child inherits the write end (which would keep the pipe open past CloseStdin).
  int pipe_fds[2] = {-1, -1};
  if (options.stdin_pipe && pipe2(pipe_fds, O_CLOEXEC) != 0)
    return Internal(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.stdin_pipe) posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], 0);
  if (!options.log_file.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (pipe_fds[0] >= 0) close(pipe_fds[0]);
  if (rc != 0) {
    if (pipe_fds[1] >= 0) close(pipe_fds[1]);
    return Internal("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
  Subprocess p;
  p.pid_ = pid;
  p.stdin_fd_ = pipe_fds[1];
  return p;
}

void Subprocess::CloseStdin() {
  if (stdin_fd_ >= 0) close(stdin_fd_);
  stdin_fd_ = -1;
}

void Subprocess::Reap(int ws) {
  CloseStdin();
  if (WIFEXITED(ws)) exit_code_ = WEXITSTATUS(ws);
  else if (WIFSIGNALED(ws)) exit_code_ = 128 + WTERMSIG(ws);
  else exit_code_ = 255;
}

bool Subprocess::running() {
  if (pid_ <= 0 || exit_code_) return false;
  int ws;
  pid_t r = waitpid(pid_, &ws, WNOHANG);
  if (r == pid_) {
    Reap(ws);
    return false;
  }
  return true;
}

Status Subprocess::Signal(int signo) {
  if (!running()) return FailedPrecondition("process is not running");
  if (kill(pid_, signo) != 0) return Internal(std::string("kill: ") + std::strerror(errno));
  return Status::Ok();
}

Result<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return DeadlineExceeded("process " + std::to_string(pid_) + " still running");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!exit_code_) return FailedPrecondition("process was never started");
  return *exit_code_;
}

Result<std::string> FindInPath(const std::string& name) {
  if (name.empty()) return InvalidArgument("empty program name");
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return NotFound(name + " is not in $PATH");
}

std::string SelfExecutable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  return std::string(buf, n);
}

Result<std::string> WaitForFileLine(const std::string& path, std::chrono::milliseconds timeout, Subprocess* child) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) return line;
    if (child && !child->running()) {
      return Unavailable("process exited (code " + std::to_string(child->exit_code().value_or(-1)) +
                         ") before writing " + path);
    }
    if (std::chrono::steady_clock::now() >= deadline) return DeadlineExceeded("nothing written to " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace metaps
