// `metaps serve SNAPSHOT [--delta DIR]...`: scores candidates for a user's recent events over HTTP
// (launch/serving.h has the API, docs/snapshot.md the whole story) until SIGTERM or SIGINT.
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
  std::string follow;  // a retrain's published folder: serve its CHAIN, and each new one as it comes
  double poll_s = 5;
  std::vector<std::string> deltas;
  std::string address = "127.0.0.1";
  int port = 8080;
  std::string work_dir;
  std::string port_file;
  // A request's products are small: with more threads OpenMP spins more than it computes
  // (`metaps bench serve`: 0.34x the in-process rate over HTTP with 2 threads on 2 cores, 0.73x
  // with 1). More cores serve more requests at once (--http-threads), not one request faster.
  int threads = 1;
  // Requests served at once, each on its own thread with its own scorer. 0: the machine's hardware
  // threads.
  int http_threads = 0;
  double keep_alive_s = 30;  // idle time before a kept connection is closed; 0: close after each answer
};

// oneDNN kernels for one scorer of the model in service.
Result<std::unique_ptr<worker::Kernels>> MakeKernels() {
  auto k = worker::OneDnnKernels::Create();
  if (!k.ok()) return Status(k.status().code(), "oneDNN: " + k.status().message());
  return std::unique_ptr<worker::Kernels>(std::move(k).value());
}

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
  if (f.follow.empty() == f.snapshot.empty()) {
    std::cerr << "metaps serve: give a snapshot (and its --delta chain), or --follow a retrain's published "
                 "folder\n";
    return 2;
  }
  if (!f.follow.empty() && !f.deltas.empty()) {
    std::cerr
        << "metaps serve: --follow serves the published CHAIN; --delta is for a snapshot given by hand\n";
    return 2;
  }
  // Each model (the first, and with --follow each newer chain) loads its rows under its own
  // work directory, removed when the last request using the model has been answered.
  int generation = 0;
  // `base`: the model in service, whose rows a grown chain reuses (ServingModel::Open).
  auto open = [&](const std::vector<std::string>& dirs,
                  const ServingModel* base) -> Result<std::shared_ptr<ServingModel>> {
    const std::string dir = (fs::path(work) / ("model-" + std::to_string(++generation))).string();
    std::error_code ec;
    fs::remove_all(dir, ec);
    auto model = ServingModel::Open(dirs, dir, MakeKernels, {}, base);
    if (!model.ok()) {
      fs::remove_all(dir, ec);
      return model.status();
    }
    return std::shared_ptr<ServingModel>(model->release(), [dir](ServingModel* m) {
      delete m;
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    });
  };
  std::vector<std::string> dirs = {f.snapshot};
  dirs.insert(dirs.end(), f.deltas.begin(), f.deltas.end());
  if (!f.follow.empty()) {
    auto chain = ReadPublishedChain(f.follow);
    if (!chain.ok()) {
      std::cerr << "metaps serve: --follow: " << chain.status().message() << "\n";
      return 2;
    }
    dirs = *chain;
  }
  auto model = open(dirs, nullptr);
  if (!model.ok()) {
    std::cerr << "metaps serve: " << model.status().message() << "\n";
    return model.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::mutex model_mu;
  std::shared_ptr<ServingModel> current = *model;
  auto get_current = [&] {
    std::lock_guard<std::mutex> lock(model_mu);
    return current;
  };
  const ServingModel* m = current.get();
  // Requests are scored on the HTTP threads, each with --threads kernel threads (set on that thread).
  HttpServerOptions http_options;
  http_options.threads = f.http_threads > 0
                             ? f.http_threads
                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  http_options.keep_alive_idle_ms = static_cast<int>(f.keep_alive_s * 1000);
  HttpServer http(ServeCurrentModel(get_current, f.threads), http_options);
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
            << m->rows() << " rows) on http://" << f.address << ":" << *port << " with "
            << http_options.threads << " request threads  (POST /score; GET /health /model /metrics)"
            << std::endl;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  // --follow: a newer CHAIN is loaded beside the model in service and swapped in when whole; one
  // that does not load is logged and skipped (the model in service stays) until CHAIN changes.
  std::thread follower;
  if (!f.follow.empty()) {
    follower = std::thread([&, dirs] {
      std::vector<std::string> serving = dirs, refused;
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, std::chrono::milliseconds(static_cast<int64_t>(f.poll_s * 1000)),
                          [&] { return stop; })) {
        lock.unlock();
        auto chain = ReadPublishedChain(f.follow);
        if (chain.ok() && *chain != serving && *chain != refused) {
          std::shared_ptr<ServingModel> in_service = get_current();  // alive while the next loads
          auto next = open(*chain, in_service.get());
          in_service.reset();
          if (next.ok()) {
            std::cout << "metaps serve: now serving snapshot " << (*next)->chain().back().id << " ("
                      << chain->size() << " in the chain, " << (*next)->rows() << " rows, "
                      << (*next)->rows_reused() << " of them reused from the model before; " << chain->back()
                      << ")" << std::endl;
            std::lock_guard<std::mutex> swap(model_mu);
            current = std::move(next).value();
            serving = *chain;
          } else {
            std::cerr << "metaps serve: the published chain " << chain->back()
                      << " was not loaded (still serving the one before): " << next.status().message()
                      << std::endl;
            refused = *chain;
          }
        }
        lock.lock();
      }
    });
  }
  {
    auto armed = on_signal.ArmFor([&] {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stop; });
  }
  if (follower.joinable()) follower.join();
  http.Stop();
  {
    std::lock_guard<std::mutex> lock(model_mu);
    current.reset();
  }
  std::cout << "metaps serve: stopped" << std::endl;
  return 0;
}

}  // namespace

void RegisterServeCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand("serve",
                                 "Serve a snapshot: adapt to a user's events and score candidates over HTTP");
  cmd->add_option("snapshot", f->snapshot, "A full snapshot directory (from `metaps export`)");
  cmd->add_option(
      "--follow", f->follow,
      "Serve the chain a `metaps retrain` publishes (OUT/published: its CHAIN file) and load each "
      "newer one while serving");
  cmd->add_option("--poll-s", f->poll_s, "With --follow: seconds between looks at CHAIN (default 5)")
      ->check(CLI::Range(0.01, 86400.0));
  cmd->add_option("--delta", f->deltas, "A delta on top of it (repeatable, in order)");
  cmd->add_option("--address", f->address, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", f->port, "Port to listen on (default 8080; 0 picks a free one)");
  cmd->add_option(
      "--work-dir", f->work_dir,
      "Where the rows are loaded into RocksDB (must be new or empty; default: a temporary directory, "
      "removed on exit)");
  cmd->add_option("--port-file", f->port_file, "Write the port listened on to this file once serving");
  cmd->add_option("--threads", f->threads, "Kernel threads per request (default 1)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--http-threads", f->http_threads,
                  "Requests served at once (default 0: one per hardware thread of the machine)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--keep-alive-s", f->keep_alive_s,
                  "Seconds a client's idle connection is kept for its next request (default 30; 0: one "
                  "request per connection)")
      ->check(CLI::Range(0.0, 3600.0));
  cmd->callback([f, action] { *action = [f] { return RunServe(*f); }; });
}

}  // namespace metaps::launch
