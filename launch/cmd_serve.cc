// `metaps serve SNAPSHOT [--delta DIR]...`: scores candidates for a user's recent events over HTTP
// (launch/serving.h has the API, docs/snapshot.md the whole story) until SIGTERM or SIGINT.
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/http_server.h"
#include "launch/cli.h"
#include "launch/serving.h"
#include "launch/signals.h"
#include "worker/onednn_kernels.h"

namespace metaps::launch {
namespace {

struct ServeFlags {
  std::string snapshot;
  std::vector<std::string> deltas;
  std::string address = "127.0.0.1";
  int port = 8080;
  std::string work_dir;
  std::string port_file;
  // A request's products are small: with more threads OpenMP spins more than it computes
  // (`metaps bench serve`: 0.34x the in-process rate over HTTP with 2 threads on 2 cores, 0.73x
  // with 1). More cores serve through more processes.
  int threads = 1;
};

int RunServe(const ServeFlags& f) {
  namespace fs = std::filesystem;
  StopOnSignals on_signal;  // before any thread exists (see launch/signals.h)
  std::string work = f.work_dir;
  if (work.empty()) {
    auto made = MakeTempDir("metaps-serve");
    if (!made.ok()) {
      std::cerr << "metaps serve: " << made.status().message() << "\n";
      return 1;
    }
    work = *made;
  }
  RemoveAllOnExit cleanup(f.work_dir.empty() ? work : "");  // the temporary one only
  auto kernels = worker::OneDnnKernels::Create();
  if (!kernels.ok()) {
    std::cerr << "metaps serve: oneDNN: " << kernels.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> dirs = {f.snapshot};
  dirs.insert(dirs.end(), f.deltas.begin(), f.deltas.end());
  auto model = ServingModel::Open(dirs, work, std::move(kernels).value());
  if (!model.ok()) {
    std::cerr << "metaps serve: " << model.status().message() << "\n";
    return model.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  ServingModel* m = model->get();
  // Requests are scored on the HTTP thread, with --threads kernel threads (set on that thread).
  HttpServer http(m->HttpHandler(f.threads), HttpServerOptions{});
  auto port = http.Start(f.address, f.port);
  if (!port.ok()) {
    std::cerr << "metaps serve: " << port.status().message() << "\n";
    return 1;
  }
  if (!f.port_file.empty()) {
    const std::string tmp = f.port_file + ".tmp";
    std::ofstream(tmp) << *port << "\n";
    fs::rename(tmp, f.port_file);
  }
  std::cout << "serving snapshot " << m->chain().back().id << " (" << dirs.size() << " in the chain, "
            << m->rows() << " rows) on http://" << f.address << ":" << *port
            << "  (POST /score; GET /health /model /metrics)" << std::endl;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  {
    auto armed = on_signal.ArmFor([&] {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stop; });
  }
  http.Stop();
  std::cout << "metaps serve: stopped" << std::endl;
  return 0;
}

}  // namespace

void RegisterServeCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand("serve",
                                 "Serve a snapshot: adapt to a user's events and score candidates over HTTP");
  cmd->add_option("snapshot", f->snapshot, "A full snapshot directory (from `metaps export`)")->required();
  cmd->add_option("--delta", f->deltas, "A delta on top of it (repeatable, in order)");
  cmd->add_option("--address", f->address, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", f->port, "Port to listen on (default 8080; 0 picks a free one)");
  cmd->add_option(
      "--work-dir", f->work_dir,
      "Where the rows are loaded into RocksDB (must be new or empty; default: a temporary directory, "
      "removed on exit)");
  cmd->add_option("--port-file", f->port_file, "Write the port listened on to this file once serving");
  cmd->add_option("--threads", f->threads, "Kernel threads per request (default 1)")->check(CLI::Range(1, 1024));
  cmd->callback([f, action] { *action = [f] { return RunServe(*f); }; });
}

}  // namespace metaps::launch
