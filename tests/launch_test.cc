// `metaps launch`: a whole job across hosts. The hosts are loopback addresses of this machine
// (127.0.0.2, 127.0.0.3), each role binding its host's address. The ssh engine goes through a
// real sshd started here on those addresses (its own keys and config; skipped where no sshd is
// installed: launch/setup.sh installs it), the local engine starts the processes directly, and
// the Slurm engine runs through a stand-in srun (no Slurm controller here) that runs the step's
// command as srun would.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/test_util.h"

namespace metaps::testing {
namespace {

using namespace std::chrono_literals;

std::string Read(const std::string& path) { return ServerProcess::ReadFile(path); }

// The processes whose command line mentions `text` (other than this test process).
std::vector<pid_t> ProcessesMentioning(const std::string& text) {
  std::vector<pid_t> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = std::stoi(name);
    if (pid == getpid()) continue;
    std::string cmdline = Read(entry.path().string() + "/cmdline");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(text) != std::string::npos) found.push_back(pid);
  }
  return found;
}

std::string Command(pid_t pid) {
  std::string comm = Read("/proc/" + std::to_string(pid) + "/comm");
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

std::string ParentCommand(pid_t pid) {
  std::string stat = Read("/proc/" + std::to_string(pid) + "/stat");
  // pid (comm) state ppid ...
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return "";
  return Command(std::atoi(stat.c_str() + close + 4));
}

sockaddr_in Ipv4(const std::string& address, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, address.c_str(), &a.sin_addr);
  return a;
}

bool Accepts(const std::string& address, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = Ipv4(address, port);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

int FreePort(const std::string& address) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = Ipv4(address, 0);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A real OpenSSH server on 127.0.0.2 and 127.0.0.3 (one port), admitting one key made here.
class LoopbackSshd {
 public:
  static constexpr const char* kSshd = "/usr/sbin/sshd";
  explicit LoopbackSshd(const ScratchDir& dir) : dir_(dir.path() / "sshd") {
    fs::create_directories(dir_);
    port_ = FreePort("127.0.0.2");
    for (const char* key : {"host_key", "user_key"}) {
      auto gen = Subprocess::Spawn(
          {"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", (dir_ / key).string()},
          (dir_ / "keygen.log").string());
      EXPECT_TRUE(gen.ok() && gen->Wait(30s).value_or(-1) == 0) << Read((dir_ / "keygen.log").string());
    }
    fs::copy_file(dir_ / "user_key.pub", dir_ / "authorized_keys");
    std::ofstream(dir_ / "sshd_config")
        << "ListenAddress 127.0.0.2:" << port_ << "\n"
        << "ListenAddress 127.0.0.3:" << port_ << "\n"
        << "HostKey " << (dir_ / "host_key").string() << "\n"
        << "AuthorizedKeysFile " << (dir_ / "authorized_keys").string() << "\n"
        << "PidFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        << "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n";
    // sshd started as root wants its privilege-separation directory.
    if (geteuid() == 0) fs::create_directories("/run/sshd");
    auto sshd = Subprocess::Spawn({kSshd, "-D", "-e", "-f", (dir_ / "sshd_config").string()}, log());
    EXPECT_TRUE(sshd.ok()) << sshd.status();
    if (sshd.ok()) proc_ = std::move(sshd).value();
    for (int i = 0; i < 200 && !(Accepts("127.0.0.2", port_) && Accepts("127.0.0.3", port_)); ++i)
      std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(Accepts("127.0.0.3", port_)) << Read(log());
  }
  std::string log() const { return (dir_ / "sshd.log").string(); }
  // `metaps launch` flags that reach this server with this key.
  std::vector<std::string> Flags() const {
    return {"--ssh-option", "Port=" + std::to_string(port_),
            "--ssh-option", "IdentityFile=" + (dir_ / "user_key").string(),
            "--ssh-option", "StrictHostKeyChecking=no",
            "--ssh-option", "UserKnownHostsFile=/dev/null",
            "--ssh-option", "LogLevel=ERROR",
            "--ssh-option", "ConnectTimeout=10"};
  }

 private:
  fs::path dir_;
  int port_ = 0;
  Subprocess proc_;
};

// Waits (while `launcher` runs) until a checkpoint past round 50 is complete.
bool AfterTheSecondCheckpoint(const std::string& run, Subprocess& launcher) {
  for (int i = 0; i < 1200 && launcher.running(); ++i) {
    std::this_thread::sleep_for(100ms);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(run + "/checkpoints", ec)) {
      const std::string name = e.path().filename().string();
      if (name != "round-50" && fs::exists(e.path() / "manifest.json")) return true;
    }
  }
  return false;
}

// A stopped long job's rest made short: 100 rounds past its newest complete checkpoint (the run
// directory's job.toml is what a resumed job reads).
void ShortenTheRest(const std::string& run) {
  int newest = 0;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("round-", 0) == 0 && fs::exists(e.path() / "manifest.json"))
      newest = std::max(newest, std::stoi(name.substr(6)));
  }
  std::string job = Read(run + "/job.toml");
  size_t at = job.find("\nrounds = ");
  ASSERT_NE(at, std::string::npos) << job;
  job.replace(at + 1, job.find('\n', at + 1) - at - 1, "rounds = " + std::to_string(newest + 100));
  std::ofstream(run + "/job.toml") << job;
}

std::vector<std::string> Plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(LaunchTest, TheLocalEnginePlacesEachRoleOnItsHostsAddress) {
  ScratchDir dir("launch-local");
  const std::string run = dir / "run", out = dir / "out.txt";
  int code = RunMetaps({"launch", Example("synthetic.toml"), "--engine", "local", "--hosts",
                        "127.0.0.2,127.0.0.3", "--run-dir", run, "--quiet"},
                       out, 300s);
  ASSERT_EQ(code, 0) << Read(out);
  EXPECT_TRUE(fs::exists(run + "/report.json"));
  // The scheduler and shard 0 on the first host, shard 1 on the second: each bound its host's address.
  EXPECT_EQ(Read(run + "/scheduler.endpoint").rfind("tcp://127.0.0.2:", 0), 0u);
  EXPECT_EQ(Read(run + "/servers/shard-0.endpoint").rfind("tcp://127.0.0.2:", 0), 0u);
  EXPECT_EQ(Read(run + "/servers/shard-1.endpoint").rfind("tcp://127.0.0.3:", 0), 0u);
  EXPECT_NE(Read(out).find("worker-1@127.0.0.3"), std::string::npos) << Read(out);
  EXPECT_NE(Read(out).find("snapshot: "), std::string::npos) << Read(out);
  EXPECT_NE(Read(run + "/cluster.json").find("\"127.0.0.3\""), std::string::npos);
}

TEST(LaunchTest, OverSshTheJobRunsUnderSshdStopsWithTheLauncherAndResumes) {
  if (!fs::exists(LoopbackSshd::kSshd))
    GTEST_SKIP() << "no " << LoopbackSshd::kSshd << " (launch/setup.sh installs openssh-server)";
  ScratchDir dir("launch-ssh");
  LoopbackSshd sshd(dir);
  const std::string run = dir / "run", out = dir / "out.txt";
  // Far longer than the test (~50k rounds; a checkpoint every 50): only a stop ends it.
  auto launcher = Subprocess::Spawn(
      Plus({MetapsBin(), "launch", Example("synthetic.toml"), "--hosts", "127.0.0.2,127.0.0.3", "--run-dir",
            run, "--quiet", "--set", "train.epochs=2000"},
           sshd.Flags()),
      out);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  ASSERT_TRUE(AfterTheSecondCheckpoint(run, *launcher))
      << Read(out) << Read(run + "/logs/scheduler.log") << Read(sshd.log());
  // Every role runs under sshd, not under the launcher.
  std::vector<pid_t> roles = ProcessesMentioning("--run-dir " + run);  // the workers
  for (pid_t p : ProcessesMentioning(run + "/servers/shard-")) roles.push_back(p);
  int under_sshd = 0;
  for (pid_t p : roles) {
    // The launcher's ssh clients mention the run directory too.
    if (p == launcher->pid() || Command(p) == "ssh") continue;
    std::string parent = ParentCommand(p);
    EXPECT_EQ(parent, "sshd") << "process " << p;
    under_sshd += parent == "sshd";
  }
  EXPECT_GE(under_sshd, 4) << "2 servers and 2 workers";

  // Shard 1's server, on the second host, is killed: ssh reports it, and the launcher starts it
  // again there, through ssh, on its endpoint and data directory.
  auto shard1 = [&] {
    for (pid_t p : ProcessesMentioning(run + "/servers/shard-1 ")) {
      if (Command(p) != "ssh") return p;
    }
    return pid_t{-1};
  };
  const pid_t killed = shard1();
  ASSERT_GT(killed, 0);
  const std::string endpoint = Read(run + "/servers/shard-1.endpoint");
  ASSERT_EQ(kill(killed, SIGKILL), 0);
  pid_t again = -1;
  for (int i = 0; i < 600 && (again <= 0 || again == killed); ++i) {
    std::this_thread::sleep_for(100ms);
    again = shard1();
  }
  ASSERT_GT(again, 0) << Read(out);
  ASSERT_NE(again, killed) << Read(out);
  EXPECT_EQ(ParentCommand(again), "sshd");
  // Both lives of it listened on the same endpoint.
  const std::string listening = "listening on " + endpoint.substr(0, endpoint.find('\n')) + " ";
  std::string log;
  for (int i = 0; i < 300; ++i, std::this_thread::sleep_for(100ms)) {
    log = Read(run + "/logs/server-1.log");
    if (log.find(listening) != log.rfind(listening)) break;
  }
  EXPECT_NE(log.find(listening), log.rfind(listening)) << log;

  // The launcher dies without a word: its stdin pipes close, ssh carries the EOF to every role,
  // and each stops. Nothing of the job is left on the hosts.
  ASSERT_TRUE(launcher->Signal(SIGKILL).ok());
  (void)launcher->Wait(10s);
  std::vector<pid_t> left;
  for (int i = 0; i < 600; ++i) {
    left = ProcessesMentioning(run + "/");
    if (left.empty()) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(left.empty()) << left.size() << " processes of the job still running, e.g. "
                            << Read("/proc/" + std::to_string(left.empty() ? 0 : left[0]) + "/cmdline");
  ASSERT_FALSE(fs::exists(run + "/report.json")) << "the job ended by itself, not by the launcher's death";

  ShortenTheRest(run);

  // Resumed on the same hosts (from cluster.json), from the newest checkpoint, to the end.
  const std::string resumed = dir / "resumed.txt";
  int code = RunMetaps(Plus({"launch", "--resume", run, "--quiet"}, sshd.Flags()), resumed, 600s);
  ASSERT_EQ(code, 0) << Read(resumed) << Read(run + "/logs/worker-0.log");
  EXPECT_NE(Read(resumed).find("from the checkpoint of round"), std::string::npos) << Read(resumed);
  EXPECT_NE(Read(resumed).find("placement (ssh)"), std::string::npos) << Read(resumed);
  EXPECT_NE(Read(out).find("server-1 died"), std::string::npos) << Read(out);
  EXPECT_TRUE(fs::exists(run + "/report.json"));
}

TEST(LaunchTest, UnderSlurmEachRoleIsAStepOnItsNode) {
  ScratchDir dir("launch-slurm");
  const std::string run = dir / "run", out = dir / "out.txt", calls = dir / "srun.calls";
  // Stand-ins for Slurm's programs: scontrol expands the node list, srun runs the step's command here.
  fs::create_directories(dir / "bin");
  std::ofstream(dir / "bin/scontrol")
      << "#!/bin/sh\n[ \"$1 $2 $3\" = 'show hostnames fake[2-3]' ] || exit 1\n"
      << "echo 127.0.0.2\necho 127.0.0.3\n";
  std::ofstream(dir / "bin/srun") << "#!/bin/sh\necho \"$*\" >> '" << calls << "'\n"
                                  << "while [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n";
  fs::permissions(dir / "bin/scontrol", fs::perms::owner_all);
  fs::permissions(dir / "bin/srun", fs::perms::owner_all);
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin";
  setenv("PATH", std::string(dir / "bin").append(":").append(path).c_str(), 1);
  setenv("SLURM_JOB_NODELIST", "fake[2-3]", 1);
  int code = RunMetaps(
      {"launch", Example("synthetic.toml"), "--engine", "slurm", "--run-dir", run, "--quiet"}, out, 300s);
  setenv("PATH", path.c_str(), 1);
  unsetenv("SLURM_JOB_NODELIST");
  ASSERT_EQ(code, 0) << Read(out);
  EXPECT_EQ(Read(run + "/servers/shard-1.endpoint").rfind("tcp://127.0.0.3:", 0), 0u);
  // One step per process on its node, besides the check of each host.
  std::string steps = Read(calls);
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = steps.find(what); at != std::string::npos; at = steps.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("--nodelist=127.0.0.3 --overlap"), 3u) << steps;  // check, server 1, worker 1
  EXPECT_EQ(count("--nodelist=127.0.0.2 --overlap"), 4u) << steps;  // check, scheduler, server 0, worker 0
  EXPECT_EQ(count(" server -c "), 2u) << steps;
  EXPECT_TRUE(fs::exists(run + "/report.json"));
}

TEST(LaunchTest, ServersKeepTheirDataOnTheirHostsDiskAndAResumeRestoresItThere) {
  // /dev/shm stands for each host's local disk: another filesystem than the run directory's, so
  // checkpoints and restores copy across filesystems instead of linking.
  ScratchDir dir("launch-data-root");
  const fs::path root =
      (fs::is_directory("/dev/shm") && access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm")
                                                                     : dir.path() / "disk") /
      dir.path().filename();
  struct RemoveRoot {
    fs::path p;
    ~RemoveRoot() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } remove_root{root};
  const std::string run = dir / "run", out = dir / "out.txt";
  auto launcher = Subprocess::Spawn({MetapsBin(), "launch", Example("synthetic.toml"), "--engine", "local",
                                     "--hosts", "127.0.0.2,127.0.0.3", "--server-data-root", root.string(),
                                     "--run-dir", run, "--quiet", "--set", "train.epochs=2000"},
                                    out);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  ASSERT_TRUE(AfterTheSecondCheckpoint(run, *launcher)) << Read(out);
  ASSERT_TRUE(launcher->Signal(SIGTERM).ok());
  EXPECT_EQ(launcher->Wait(120s).value_or(-1), 130) << Read(out);
  EXPECT_TRUE(fs::exists(root / "run/shard-0/CURRENT")) << Read(run + "/logs/server-0.log");
  EXPECT_TRUE(fs::exists(root / "run/shard-1/CURRENT"));
  EXPECT_FALSE(fs::exists(run + "/servers/shard-0"));
  ShortenTheRest(run);
  std::ofstream(root / "run/shard-1/left-from-before") << "x";
  // Resumed from the checkpoint: each shard's data directory is removed on its host and restored.
  const std::string resumed = dir / "resumed.txt";
  ASSERT_EQ(RunMetaps({"launch", "--resume", run, "--quiet"}, resumed, 600s), 0)
      << Read(resumed) << Read(run + "/logs/server-1.log");
  EXPECT_NE(Read(resumed).find("from the checkpoint of round"), std::string::npos) << Read(resumed);
  EXPECT_FALSE(fs::exists(root / "run/shard-1/left-from-before")) << "shard 1 was not restored afresh";
  EXPECT_TRUE(fs::exists(root / "run/shard-1/CURRENT"));
  EXPECT_TRUE(fs::exists(run + "/report.json"));
  EXPECT_FALSE(fs::exists(run + "/servers/shard-1"));
}

TEST(LaunchTest, HostsThatCannotRunTheJobAreNamedBeforeAnythingStarts) {
  ScratchDir dir("launch-bad");
  const std::string out = dir / "out.txt";
  // No such executable on the hosts.
  int code = RunMetaps({"launch", Example("synthetic.toml"), "--engine", "local", "--hosts", "127.0.0.2",
                        "--remote-metaps", "/nonexistent/metaps", "--run-dir", dir / "run1"},
                       out, 120s);
  EXPECT_EQ(code, 2) << Read(out);
  EXPECT_NE(Read(out).find("host 127.0.0.2 (local) has no executable /nonexistent/metaps"), std::string::npos)
      << Read(out);
  EXPECT_FALSE(fs::exists(dir / "run1/logs/scheduler.log"));
  // A host nobody answers on: ssh fails (exit code 255).
  code = RunMetaps({"launch", Example("synthetic.toml"), "--hosts", "127.0.0.4", "--ssh-option",
                    "Port=" + std::to_string(FreePort("127.0.0.4")), "--ssh-option", "ConnectTimeout=5",
                    "--run-dir", dir / "run2"},
                   out, 120s);
  EXPECT_EQ(code, 2) << Read(out);
  EXPECT_NE(Read(out).find("host 127.0.0.4 (ssh): the engine could not run a command there (exit code 255)"),
            std::string::npos)
      << Read(out);
  EXPECT_FALSE(fs::exists(dir / "run2/logs/scheduler.log"));
  // A bad hosts file names its line.
  std::ofstream(dir / "hosts") << "node-a 127.0.0.2\nnode-b 999.1.1.1\n";
  code = RunMetaps({"launch", Example("synthetic.toml"), "--hosts", dir / "hosts", "--run-dir", dir / "run3"},
                   out, 60s);
  EXPECT_EQ(code, 2) << Read(out);
  EXPECT_NE(Read(out).find(dir / "hosts" + ":2"), std::string::npos) << Read(out);
  // A resumed job reads its own job.toml: an override would reach none of its processes.
  code = RunMetaps({"launch", "--resume", dir / "run1", "--set", "train.rounds=5"}, out, 60s);
  EXPECT_EQ(code, 2) << Read(out);
  EXPECT_NE(Read(out).find("--set is for a new job"), std::string::npos) << Read(out);
}

}  // namespace
}  // namespace metaps::testing
