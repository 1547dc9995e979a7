// `metaps scheduler`: runs a job's scheduler; `metaps status`: prints a running job's status.
#include <signal.h>

#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/http_server.h"
#include "common/logging.h"
#include "common/zmq_transport.h"
#include "common/files.h"
#include "launch/cli.h"
#include "launch/signals.h"
#include "launch/job_config.h"
#include "scheduler/scheduler.h"

namespace metaps::launch {
namespace {

struct SchedulerFlags {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string bind, endpoint_file, http_file, state_file, job_id, token_file, log_file, curve_keys, curve_name;
  int64_t http_port = -2;  // -2: from config
  bool stop_on_stdin_eof = false;
};

Status WriteIfAsked(const std::string& path, const std::string& text) {
  return path.empty() ? Status::Ok() : WriteFileAtomically(path, text + "\n");
}

int RunScheduler(const SchedulerFlags& f) {
  StopOnSignals on_signal;  // before any thread exists (see launch/signals.h)
  if (f.stop_on_stdin_eof) StopOnStdinEof();
  auto cfg = LoadJobConfig(f.config_path, f.overrides);
  if (!cfg.ok()) return UsageError("scheduler", cfg.status());
  auto settings = SchedulerSettingsFromConfig(*cfg);
  if (!settings.ok()) return UsageError("scheduler", settings.status());
  auto secrets = LoadNodeSecrets(f.token_file, f.curve_keys, f.curve_name);
  if (!secrets.ok()) return UsageError("scheduler", secrets.status());
  SchedulerSettings s = std::move(settings).value();
  if (!f.bind.empty()) s.scheduler.bind = f.bind;
  if (!f.state_file.empty()) s.scheduler.state_file = f.state_file;
  if (!f.job_id.empty()) s.scheduler.job_id = f.job_id;
  if (f.http_port != -2) s.http_port = static_cast<int>(f.http_port);
  if (!f.token_file.empty()) s.scheduler.auth = secrets->auth;
  Logger log = MakeLogger("scheduler", f.log_file, s.log_level);
  secrets->zmq.log = log;  // refused CURVE handshakes are logged here
  auto transport = std::make_unique<ZmqTransport>(secrets->zmq);
  const ZmqTransport* zmq_transport = transport.get();  // outlives `http` (declared later)
  scheduler::Scheduler sched(s.scheduler, std::move(transport), log);
  auto ep = sched.Bind();
  if (!ep.ok()) {
    log->error("{}", ep.status().ToString());
    return 1;
  }
  const bool curve = !f.curve_keys.empty();
  HttpServer http([&sched, zmq_transport, curve](const std::string& path) {
    if (path == "/status" || path == "/") {
      if (!curve) return HttpResponse{200, "application/json", sched.StatusJson()};
      auto j = nlohmann::json::parse(sched.StatusJson(), nullptr, false);
      if (j.is_object()) j["curve_rejected_handshakes"] = zmq_transport->curve_rejections();
      return HttpResponse{200, "application/json", j.is_discarded() ? sched.StatusJson() : j.dump()};
    }
    if (path == "/metrics") {
      return HttpResponse{200, "text/plain; version=0.0.4",
                          sched.MetricsText() +
                              "# HELP metaps_curve_rejected_handshakes_total CURVE handshakes refused by the "
                              "scheduler's ZAP handler (client key not in authorized_keys)\n"
                              "# TYPE metaps_curve_rejected_handshakes_total counter\n"
                              "metaps_curve_rejected_handshakes_total " +
                              std::to_string(zmq_transport->curve_rejections()) + "\n"};
    }
    return HttpResponse{404, "text/plain", "not found: try /status or /metrics\n"};
  });
  int http_port = -1;
  if (s.http_port >= 0) {
    auto port = http.Start(s.http_address, s.http_port);
    if (!port.ok()) {
      log->error("status server: {}", port.status().ToString());
      return 1;
    }
    http_port = *port;
    log->info("status on http://{}:{}/status, metrics on /metrics", s.http_address, http_port);
  }
  log->info("listening on {}", *ep);
  std::cout << *ep << std::endl;
  for (Status w : {WriteIfAsked(f.http_file, std::to_string(http_port)), WriteIfAsked(f.endpoint_file, *ep)}) {
    if (!w.ok()) {
      log->error("{}", w.ToString());
      return 1;
    }
  }
  Status st;
  {
    auto armed = on_signal.ArmFor([&sched] { sched.Stop(); });
    st = sched.Serve();
  }
  http.Stop();
  if (!st.ok()) {
    log->error("{}", st.ToString());
    return 1;
  }
  return sched.finished() ? 0 : 3;
}

int RunStatus(const std::string& host, int port, const std::string& path) {
  auto body = HttpGet(host, port, path);
  if (!body.ok()) {
    std::cerr << "metaps status: " << body.status().message() << "\n";
    return 1;
  }
  std::cout << *body << (body->empty() || body->back() != '\n' ? "\n" : "");
  return 0;
}

}  // namespace

void RegisterSchedulerCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<SchedulerFlags>();
  auto* cmd = app.add_subcommand("scheduler", "Run a job's scheduler");
  cmd->add_option("-c,--config", f->config_path, "Job config (TOML)")->required();
  cmd->add_option("--set", f->overrides, "Override a config key");
  cmd->add_option("--bind", f->bind, "Endpoint to listen on (scheduler.bind)");
  cmd->add_option("--endpoint-file", f->endpoint_file, "Write the bound endpoint here");
  cmd->add_option("--http-port", f->http_port, "Status/metrics HTTP port; 0 = any free, -1 = off (scheduler.http_port)");
  cmd->add_option("--http-file", f->http_file, "Write the HTTP port here");
  cmd->add_option("--state-file", f->state_file, "Persist scheduler state here (scheduler.state_file)");
  cmd->add_option("--job-id", f->job_id, "Job id (job.id)");
  cmd->add_option("--token-file", f->token_file, "Job token file");
  cmd->add_option("--log-file", f->log_file, "Also write the log here");
  cmd->add_option("--curve-keys", f->curve_keys, kCurveKeysHelp);
  cmd->add_option("--curve-name", f->curve_name, kCurveNameHelp)->default_str("client");
  cmd->add_flag("--stop-on-stdin-eof", f->stop_on_stdin_eof, kStopOnStdinEofHelp);
  cmd->callback([f, action] { *action = [f] { return RunScheduler(*f); }; });

  auto host = std::make_shared<std::string>();
  auto port = std::make_shared<int>(0);
  auto metrics = std::make_shared<bool>(false);
  auto run_dir = std::make_shared<std::string>();
  auto* st = app.add_subcommand("status", "Print a running job's status (JSON) or its Prometheus metrics");
  st->add_option("--host", *host,
                 "Scheduler's HTTP address (default: RUN_DIR/scheduler.host, else 127.0.0.1)");
  st->add_option("--port", *port, "Scheduler's HTTP port (see RUN_DIR/scheduler.http)");
  st->add_option("run_dir", *run_dir, "Run directory of a `metaps run` job (reads its HTTP port)");
  st->add_flag("--metrics", *metrics, "Print Prometheus metrics instead");
  st->callback([=] {
    *action = [=] {
      int p = *port;
      std::string h = *host;
      if (h.empty() && !run_dir->empty()) std::ifstream(*run_dir + "/scheduler.host") >> h;
      if (h.empty()) h = "127.0.0.1";
      if (p == 0 && !run_dir->empty()) {
        std::ifstream in(*run_dir + "/scheduler.http");
        if (!(in >> p)) {
          std::cerr << "metaps status: no scheduler.http in " << *run_dir << "\n";
          return 1;
        }
      }
      if (p <= 0) {
        std::cerr << "metaps status: give --port or a run directory\n";
        return 2;
      }
      return RunStatus(h, p, *metrics ? "/metrics" : "/status");
    };
  });
}

}  // namespace metaps::launch
