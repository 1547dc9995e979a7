#include "launch/job_config.h"

#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace metaps::launch {

Result<Config> LoadJobConfig(const std::string& path, const std::vector<std::string>& overrides) {
  METAPS_ASSIGN_OR_RETURN(Config c, Config::ParseFile(path));
  for (const auto& o : overrides) METAPS_RETURN_IF_ERROR(c.Set(o).WithContext("--set " + o));
  return c;
}

Result<ServerSettings> ServerSettingsFromConfig(const Config& root) {
  ServerSettings s;
  METAPS_ASSIGN_OR_RETURN(Config c, root.GetTable("server"));
  METAPS_RETURN_IF_ERROR(c.CheckKnownKeys({"bind", "data_dir", "shard_id", "cache_bytes", "sync",
                                           "writeback_interval_ms", "writeback_dirty_bytes", "writeback_log_bytes",
                                           "writeback_nice", "writeback_ingest_bytes", "log_segment_bytes",
                                           "log_direct_io", "helper_threads", "restore_from", "log_level", "job_id"}));
  METAPS_ASSIGN_OR_RETURN(s.server.bind, c.GetString("bind", "tcp://127.0.0.1:0"));
  METAPS_ASSIGN_OR_RETURN(s.store.data_dir, c.GetString("data_dir", ""));
  METAPS_ASSIGN_OR_RETURN(int64_t shard, c.GetIntIn("shard_id", 0, 0, 1 << 20));
  s.server.shard_id = static_cast<int32_t>(shard);
  METAPS_ASSIGN_OR_RETURN(int64_t cache, c.GetIntIn("cache_bytes", 256LL << 20, 1 << 16, 1LL << 50));
  s.store.cache_bytes = static_cast<uint64_t>(cache);
  METAPS_ASSIGN_OR_RETURN(s.store.sync, c.GetBool("sync", false));
  METAPS_ASSIGN_OR_RETURN(int64_t wb_ms, c.GetIntIn("writeback_interval_ms", 2000, 1, 3600 * 1000));
  s.store.writeback_interval_ms = static_cast<uint32_t>(wb_ms);
  METAPS_ASSIGN_OR_RETURN(int64_t wb_bytes, c.GetIntIn("writeback_dirty_bytes", 64LL << 20, 1 << 12, 1LL << 50));
  s.store.writeback_dirty_bytes = static_cast<uint64_t>(wb_bytes);
  METAPS_ASSIGN_OR_RETURN(int64_t log_bytes, c.GetIntIn("writeback_log_bytes", static_cast<int64_t>(s.store.writeback_log_bytes),
                                                        1 << 20, 1LL << 50));
  s.store.writeback_log_bytes = static_cast<uint64_t>(log_bytes);
  METAPS_ASSIGN_OR_RETURN(int64_t seg_bytes, c.GetIntIn("log_segment_bytes", static_cast<int64_t>(s.store.log_segment_bytes),
                                                        1 << 12, 1LL << 40));
  s.store.log_segment_bytes = static_cast<uint64_t>(seg_bytes);
  METAPS_ASSIGN_OR_RETURN(int64_t ingest_bytes,
                          c.GetIntIn("writeback_ingest_bytes", static_cast<int64_t>(s.store.writeback_ingest_bytes), 0,
                                     1LL << 50));
  s.store.writeback_ingest_bytes = static_cast<uint64_t>(ingest_bytes);
  // true, false, or "auto" (the default: direct writes with `sync`, StoreOptions::log_io).
  if (c.Has("log_direct_io")) {
    if (auto direct = c.GetBool("log_direct_io"); direct.ok()) {
      s.store.log_io = *direct ? ps::LogIo::kDirect : ps::LogIo::kBuffered;
    } else if (auto word = c.GetString("log_direct_io"); word.ok() && *word == "auto") {
      s.store.log_io = ps::LogIo::kAuto;
    } else {
      return InvalidArgument(c.Path("log_direct_io") + ": expected true, false or \"auto\"" +
                             (word.ok() ? ", got \"" + *word + "\"" : ""));
    }
  }
  METAPS_ASSIGN_OR_RETURN(int64_t wb_nice, c.GetIntIn("writeback_nice", s.store.writeback_nice, 0, 19));
  s.store.writeback_nice = static_cast<int>(wb_nice);
  METAPS_ASSIGN_OR_RETURN(int64_t helpers, c.GetIntIn("helper_threads", s.store.helper_threads, -1, 64));
  s.store.helper_threads = static_cast<int>(helpers);
  METAPS_ASSIGN_OR_RETURN(s.store.restore_from, c.GetString("restore_from", ""));
  METAPS_ASSIGN_OR_RETURN(s.log_level, c.GetString("log_level", "info"));
  // The job's id (job.id) unless server.job_id says otherwise; empty (accept any job) only for a
  // standalone server whose config names no job.
  std::string job_id;
  if (root.Has("job.id")) {
    METAPS_ASSIGN_OR_RETURN(job_id, root.GetString("job.id"));
  }
  METAPS_ASSIGN_OR_RETURN(s.server.job_id, c.GetString("job_id", job_id));
  METAPS_ASSIGN_OR_RETURN(s.tables, ps::ParseTableSpecs(root));
  if (s.tables.empty()) return NotFound("tables: the config declares no [[tables]]");
  return s;
}

Result<SchedulerSettings> SchedulerSettingsFromConfig(const Config& root) {
  SchedulerSettings s;
  METAPS_ASSIGN_OR_RETURN(Config job, root.GetTable("job"));
  METAPS_ASSIGN_OR_RETURN(s.scheduler.job_id, job.GetString("id", "metaps"));
  METAPS_ASSIGN_OR_RETURN(int64_t servers, job.GetIntIn("servers", 1, 1, 1024));
  METAPS_ASSIGN_OR_RETURN(int64_t workers, job.GetIntIn("workers", 1, 1, 4096));
  s.scheduler.num_servers = static_cast<int>(servers);
  s.scheduler.num_workers = static_cast<int>(workers);
  METAPS_ASSIGN_OR_RETURN(Config train, root.GetTable("train"));
  METAPS_ASSIGN_OR_RETURN(std::string mode, train.GetString("consistency", "bsp"));
  auto c = scheduler::ParseConsistency(mode);
  if (!c.ok()) return InvalidArgument(train.Path("consistency") + ": " + c.status().message());
  s.scheduler.consistency = *c;
  METAPS_ASSIGN_OR_RETURN(int64_t staleness, train.GetIntIn("staleness", 0, 0, 1 << 20));
  s.scheduler.staleness = static_cast<uint32_t>(staleness);
  METAPS_ASSIGN_OR_RETURN(int64_t rounds, train.GetIntIn("rounds", 0, 0, 1LL << 40));
  s.scheduler.total_rounds = static_cast<uint64_t>(rounds);
  METAPS_ASSIGN_OR_RETURN(Config sc, root.GetTable("scheduler"));
  METAPS_RETURN_IF_ERROR(sc.CheckKnownKeys({"bind", "http_address", "http_port", "heartbeat_timeout_ms", "state_file",
                                            "log_level"}));
  METAPS_ASSIGN_OR_RETURN(s.scheduler.bind, sc.GetString("bind", "tcp://127.0.0.1:0"));
  METAPS_ASSIGN_OR_RETURN(s.http_address, sc.GetString("http_address", "127.0.0.1"));
  METAPS_ASSIGN_OR_RETURN(int64_t port, sc.GetIntIn("http_port", 0, -1, 65535));
  s.http_port = static_cast<int>(port);
  METAPS_ASSIGN_OR_RETURN(int64_t hb, sc.GetIntIn("heartbeat_timeout_ms", 10000, 100, 3600 * 1000));
  s.scheduler.heartbeat_timeout_ms = static_cast<uint32_t>(hb);
  METAPS_ASSIGN_OR_RETURN(s.scheduler.state_file, sc.GetString("state_file", ""));
  METAPS_ASSIGN_OR_RETURN(s.log_level, sc.GetString("log_level", "info"));
  METAPS_ASSIGN_OR_RETURN(Config ck, root.GetTable("checkpoint"));
  METAPS_RETURN_IF_ERROR(ck.CheckKnownKeys({"every_rounds", "every_seconds", "keep", "dir"}));
  METAPS_ASSIGN_OR_RETURN(int64_t every_rounds, ck.GetIntIn("every_rounds", 0, 0, 1LL << 40));
  METAPS_ASSIGN_OR_RETURN(int64_t every_seconds, ck.GetIntIn("every_seconds", 0, 0, 1 << 30));
  METAPS_ASSIGN_OR_RETURN(int64_t keep, ck.GetIntIn("keep", 2, 1, 1000));
  METAPS_ASSIGN_OR_RETURN(s.scheduler.checkpoint_dir, ck.GetString("dir", ""));
  s.scheduler.checkpoint_every_rounds = static_cast<uint64_t>(every_rounds);
  s.scheduler.checkpoint_every_seconds = static_cast<uint32_t>(every_seconds);
  s.scheduler.checkpoint_keep = static_cast<uint32_t>(keep);
  return s;
}

Result<NodeSecrets> LoadNodeSecrets(const std::string& token_file, const std::string& curve_keys_dir,
                                    const std::string& curve_name) {
  NodeSecrets s;
  if (!token_file.empty()) {
    METAPS_ASSIGN_OR_RETURN(s.auth, ReadTokenFile(token_file));
  }
  auto zmq = CurveOptionsFromDir(curve_keys_dir, curve_name.empty() ? "client" : curve_name);
  if (!zmq.ok()) return zmq.status().WithContext("--curve-keys");
  s.zmq = std::move(zmq).value();
  return s;
}

int UsageError(const char* command, const Status& status) {
  std::cerr << "metaps " << command << ": " << status.message() << "\n";
  return 2;
}

Result<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read token file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string t = ss.str();
  auto b = t.find_first_not_of(" \t\r\n"), e = t.find_last_not_of(" \t\r\n");
  if (b == std::string::npos) return InvalidArgument("token file " + path + " is empty");
  return t.substr(b, e - b + 1);
}

std::string LocalTimestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

Result<std::string> MakeToken() {
  std::ifstream r("/dev/urandom", std::ios::binary);
  unsigned char b[16];
  if (!r.read(reinterpret_cast<char*>(b), sizeof(b))) return Internal("cannot read /dev/urandom");
  std::ostringstream os;
  for (unsigned char c : b) os << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(c);
  return os.str();
}

}  // namespace metaps::launch
