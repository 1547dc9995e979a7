#include "launch/cluster.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace metaps::launch {
namespace {

Result<std::string> ResolveIpv4(const std::string& name) {
  in_addr literal{};
  if (inet_pton(AF_INET, name.c_str(), &literal) == 1) return name;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(name.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return NotFound("host '" + name + "' does not resolve to an IPv4 address (" + gai_strerror(rc) +
                    "); give its address as NAME=ADDRESS");
  }
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr, text, sizeof(text));
  freeaddrinfo(found);
  return std::string(text);
}

Result<Host> MakeHost(const std::string& name, const std::string& address, const std::string& where) {
  if (name.empty()) return InvalidArgument(where + ": empty host name");
  Host h{name, address};
  if (h.address.empty()) {
    auto resolved = ResolveIpv4(name);
    if (!resolved.ok()) return InvalidArgument(where + ": " + resolved.status().message());
    h.address = *resolved;
  } else if (in_addr a{}; inet_pton(AF_INET, h.address.c_str(), &a) != 1) {
    return InvalidArgument(where + ": '" + h.address + "' is not an IPv4 address");
  }
  return h;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

Result<std::vector<Host>> ParseHosts(const std::string& list_or_file) {
  std::vector<Host> hosts;
  std::error_code ec;
  if (std::filesystem::is_regular_file(list_or_file, ec)) {
    std::ifstream in(list_or_file);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      line = Trim(line.substr(0, line.find('#')));
      if (line.empty()) continue;
      std::istringstream words(line);
      std::string name, address, extra;
      words >> name >> address >> extra;
      std::string where = list_or_file + ":" + std::to_string(n);
      if (!extra.empty()) return InvalidArgument(where + ": expected `NAME [ADDRESS]`, got '" + line + "'");
      METAPS_ASSIGN_OR_RETURN(Host h, MakeHost(name, address, where));
      hosts.push_back(std::move(h));
    }
    if (hosts.empty()) return InvalidArgument(list_or_file + ": no hosts in the file");
    return hosts;
  }
  if (list_or_file.find('/') != std::string::npos)
    return NotFound("hosts file " + list_or_file + " does not exist");
  std::istringstream entries(list_or_file);
  std::string entry;
  while (std::getline(entries, entry, ',')) {
    entry = Trim(entry);
    size_t eq = entry.find('=');
    std::string name = entry.substr(0, eq), address = eq == std::string::npos ? "" : entry.substr(eq + 1);
    METAPS_ASSIGN_OR_RETURN(Host h, MakeHost(name, address, "host '" + entry + "'"));
    hosts.push_back(std::move(h));
  }
  if (hosts.empty()) return InvalidArgument("no hosts given");
  return hosts;
}

Result<std::vector<Host>> SlurmHosts(const std::string& nodelist) {
  std::string list = nodelist;
  if (list.empty()) {
    const char* env = std::getenv("SLURM_JOB_NODELIST");
    if (env == nullptr || *env == '\0')
      return FailedPrecondition("not inside a Slurm allocation ($SLURM_JOB_NODELIST is unset); give --hosts");
    list = env;
  }
  METAPS_ASSIGN_OR_RETURN(std::string scontrol, FindInPath("scontrol"));
  std::string command = ShellJoin({scontrol, "show", "hostnames", list});
  FILE* out = popen(command.c_str(), "r");
  if (out == nullptr) return Internal("cannot run " + command);
  std::string names;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), out)) names.append(buf, n);
  int rc = pclose(out);
  if (rc != 0) return Internal(command + " failed (status " + std::to_string(rc) + ")");
  std::vector<Host> hosts;
  std::istringstream lines(names);
  std::string name;
  while (lines >> name) {
    METAPS_ASSIGN_OR_RETURN(Host h, MakeHost(name, "", "Slurm node " + name));
    hosts.push_back(std::move(h));
  }
  if (hosts.empty()) return Internal(command + " printed no node names");
  return hosts;
}

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& word : argv) {
    if (!out.empty()) out += ' ';
    out += '\'';
    for (char c : word) {
      if (c == '\'')
        out += "'\\''";
      else
        out += c;
    }
    out += '\'';
  }
  return out;
}

std::vector<std::string> SshEngine::CommandLine(const Host& host,
                                                const std::vector<std::string>& argv) const {
  std::vector<std::string> cmd = {ssh_, "-T"};
  for (const auto& o : options_) cmd.insert(cmd.end(), {"-o", o});
  // No prompt can be answered (no terminal); a dead link is noticed within a minute.
  for (const char* o : {"BatchMode=yes", "ServerAliveInterval=15", "ServerAliveCountMax=4"})
    cmd.insert(cmd.end(), {"-o", o});
  std::vector<std::string> remote = {"env"};
  remote.insert(remote.end(), env_.begin(), env_.end());
  remote.insert(remote.end(), argv.begin(), argv.end());
  cmd.insert(cmd.end(), {host.name, "--", "exec " + ShellJoin(remote)});
  return cmd;
}

std::vector<std::string> SrunEngine::CommandLine(const Host& host,
                                                 const std::vector<std::string>& argv) const {
  std::vector<std::string> cmd = {srun_,       "--nodes=1",    "--ntasks=1", "--nodelist=" + host.name,
                                  "--overlap", "--export=ALL", "--quiet"};
  cmd.insert(cmd.end(), options_.begin(), options_.end());
  cmd.push_back("--");
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  return cmd;
}

}  // namespace metaps::launch
