// Reading a job's TOML config into the settings of each role. Every error names its key.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/zmq_transport.h"
#include "common/status.h"
#include "ps/param_store.h"
#include "ps/server.h"
#include "ps/table_spec.h"
#include "scheduler/scheduler.h"

namespace metaps::launch {

// Parses `path` and applies the `key=value` overrides in order.
Result<Config> LoadJobConfig(const std::string& path, const std::vector<std::string>& overrides);

struct ServerSettings {
  ps::ServerOptions server;
  ps::StoreOptions store;
  std::vector<ps::TableSpec> tables;
  std::string log_level = "info";
};

// Reads [server] (bind, data_dir, shard_id, cache_bytes, sync, writeback_interval_ms,
// writeback_dirty_bytes, restore_from, log_level, job_id) and [[tables]].
Result<ServerSettings> ServerSettingsFromConfig(const Config& root);

struct SchedulerSettings {
  scheduler::SchedulerOptions scheduler;
  std::string http_address = "127.0.0.1";
  int http_port = 0;  // 0: any free port; -1: no HTTP
  std::string log_level = "info";
};

// Reads [job] (id, servers, workers), [train] (consistency, staleness, rounds) and [scheduler]
// (bind, http_address, http_port, heartbeat_timeout_ms, state_file, log_level).
Result<SchedulerSettings> SchedulerSettingsFromConfig(const Config& root);

// What every role's command reads besides its config: the job token (empty without a file) and
// the ZeroMQ options (CURVE keys when a directory is given: the server pair, the client pair
// named `curve_name`, the authorized_keys allow-list; see common/zmq_transport.h).
struct NodeSecrets {
  std::string auth;
  ZmqOptions zmq;
};
Result<NodeSecrets> LoadNodeSecrets(const std::string& token_file, const std::string& curve_keys_dir,
                                    const std::string& curve_name = "client");

// Help texts of the CURVE flags every role takes.
inline constexpr const char* kCurveKeysHelp =
    "Encrypt every link with the CURVE keys in this directory and admit only its authorized_keys";
inline constexpr const char* kCurveNameHelp = "This node's client key pair in --curve-keys: NAME.pub, NAME.key";

// The local time as YYYYmmdd-HHMMSS, for run and snapshot directory names.
std::string LocalTimestamp();

// Prints "metaps <command>: <message>" for a bad config or flag and returns exit code 2.
int UsageError(const char* command, const Status& status);

// A job token file: one line of text; surrounding whitespace is ignored. Empty is an error.
Result<std::string> ReadTokenFile(const std::string& path);

// A fresh job token: 128 bits from /dev/urandom as 32 hex digits.
Result<std::string> MakeToken();

}  // namespace metaps::launch
