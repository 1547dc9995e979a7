#include "launch/cluster.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;

std::string RunShell(const std::string& command) {
  FILE* out = popen(command.c_str(), "r");
  std::string text;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof(buf), out)) text.append(buf, n);
  pclose(out);
  return text;
}

TEST(ClusterTest, ShellJoinPassesEveryWordThroughTheShellUnchanged) {
  std::vector<std::string> words = {"printf", "[%s]", "a b",   "it's",       "$HOME",
                                    "",       "x;y",  "\"q\"", "back\\slash"};
  EXPECT_EQ(RunShell("exec " + ShellJoin(words)), "[a b][it's][$HOME][][x;y][\"q\"][back\\slash]");
}

TEST(ClusterTest, HostsFromAListWithAndWithoutAddresses) {
  auto hosts = ParseHosts("127.0.0.2, node-b=10.1.2.3,localhost");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[0].name, "127.0.0.2");
  EXPECT_EQ((*hosts)[0].address, "127.0.0.2");
  EXPECT_EQ((*hosts)[1].name, "node-b");
  EXPECT_EQ((*hosts)[1].address, "10.1.2.3");
  EXPECT_EQ((*hosts)[2].address, "127.0.0.1");  // resolved here
}

TEST(ClusterTest, HostsFromAFileSkipCommentsAndNameTheBadLine) {
  fs::path dir = fs::temp_directory_path() / ("metaps-cluster-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::string file = (dir / "hosts").string();
  std::ofstream(file) << "# the job's hosts\n\nnode-a 10.0.0.1   # first\nnode-b\t10.0.0.2\n127.0.0.5\n";
  auto hosts = ParseHosts(file);
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[1].name, "node-b");
  EXPECT_EQ((*hosts)[1].address, "10.0.0.2");
  EXPECT_EQ((*hosts)[2].address, "127.0.0.5");

  std::ofstream(file) << "node-a 10.0.0.1\nnode-b not-an-address\n";
  auto bad = ParseHosts(file);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(file + ":2"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("not-an-address"), std::string::npos) << bad.status();

  std::ofstream(file) << "node-a 10.0.0.1 extra\n";
  bad = ParseHosts(file);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(file + ":1"), std::string::npos) << bad.status();

  std::ofstream(file) << "# nothing\n";
  EXPECT_FALSE(ParseHosts(file).ok());
  fs::remove_all(dir);
}

TEST(ClusterTest, AnUnresolvableHostIsNamed) {
  auto bad = ParseHosts("no-such-host.invalid");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no-such-host.invalid"), std::string::npos) << bad.status();
  EXPECT_FALSE(ParseHosts("/no/such/hosts-file").ok());
  EXPECT_FALSE(ParseHosts("").ok());
}

TEST(ClusterTest, SshRunsTheCommandThroughTheRemoteShellWithOurOptionsFirst) {
  SshEngine ssh("/usr/bin/ssh", {"Port=2222"}, {"OMP_NUM_THREADS=1"});
  auto cmd = ssh.CommandLine({"node-a", "10.0.0.1"}, {"/opt/metaps", "server", "--set", "a=\"b c\""});
  ASSERT_GE(cmd.size(), 6u);
  EXPECT_EQ(cmd[0], "/usr/bin/ssh");
  // ssh keeps an option's first value: the user's come before the defaults.
  auto port = std::find(cmd.begin(), cmd.end(), "Port=2222"),
       batch = std::find(cmd.begin(), cmd.end(), "BatchMode=yes");
  ASSERT_NE(port, cmd.end());
  ASSERT_NE(batch, cmd.end());
  EXPECT_LT(port, batch);
  EXPECT_EQ(cmd[cmd.size() - 3], "node-a");
  EXPECT_EQ(cmd[cmd.size() - 2], "--");
  // What the remote shell runs: our words, unchanged (a local shell stands in for the remote one).
  std::string remote = cmd.back();
  ASSERT_EQ(remote.rfind("exec ", 0), 0u);
  std::string echoed =
      RunShell(remote.substr(5).replace(remote.substr(5).find("'/opt/metaps'"), 13, "'printf' '[%s]'"));
  EXPECT_EQ(echoed, "[server][--set][a=\"b c\"]");
}

TEST(ClusterTest, SrunStartsOneTaskOnTheNamedNode) {
  SrunEngine srun("/usr/bin/srun", {"--mem=1G"});
  auto cmd = srun.CommandLine({"node-b", "10.0.0.2"}, {"/opt/metaps", "worker", "--id", "3"});
  auto has = [&](const std::string& w) { return std::find(cmd.begin(), cmd.end(), w) != cmd.end(); };
  EXPECT_EQ(cmd[0], "/usr/bin/srun");
  EXPECT_TRUE(has("--nodes=1"));
  EXPECT_TRUE(has("--ntasks=1"));
  EXPECT_TRUE(has("--nodelist=node-b"));
  EXPECT_TRUE(has("--mem=1G"));
  auto dashes = std::find(cmd.begin(), cmd.end(), "--");
  ASSERT_NE(dashes, cmd.end());
  EXPECT_EQ(std::vector<std::string>(dashes + 1, cmd.end()),
            (std::vector<std::string>{"/opt/metaps", "worker", "--id", "3"}));
}

TEST(ClusterTest, PlacementPutsTheSchedulerFirstAndGoesRoundTheHosts) {
  Cluster c;
  c.hosts = {{"a", "10.0.0.1"}, {"b", "10.0.0.2"}, {"c", "10.0.0.3"}};
  EXPECT_EQ(c.scheduler_host().name, "a");
  EXPECT_EQ(c.server_host(0).name, "a");
  EXPECT_EQ(c.server_host(4).name, "b");
  EXPECT_EQ(c.worker_host(2).name, "c");
  EXPECT_EQ(c.worker_host(3).name, "a");
}

}  // namespace
}  // namespace metaps::launch
