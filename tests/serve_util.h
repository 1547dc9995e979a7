// A `metaps serve` child process for the serving tests: started with its port file, reached over
// HTTP on loopback, stopped with SIGTERM.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/http_server.h"
#include "common/subprocess.h"
#include "tests/test_util.h"

namespace metaps::testing {

struct ServeProcess {
  Subprocess proc;
  int port = 0;
  std::string log;

  // `metaps serve ARGS... --port 0 --port-file DIR/NAME.port`, output in DIR/NAME.log; waits
  // until it serves (its port file is written) or has exited.
  static ServeProcess Start(const std::string& dir, const std::string& name, std::vector<std::string> args) {
    ServeProcess s;
    s.log = dir + "/" + name + ".log";
    const std::string port_file = dir + "/" + name + ".port";
    std::vector<std::string> argv = {MetapsBin(), "serve"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--port", "0", "--port-file", port_file});
    auto p = Subprocess::Spawn(argv, s.log);
    EXPECT_TRUE(p.ok()) << p.status();
    s.proc = std::move(p).value();
    for (int i = 0; i < 600 && s.port == 0 && s.proc.running(); ++i) {
      std::ifstream in(port_file);
      if (!(in >> s.port)) s.port = 0;
      if (s.port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_GT(s.port, 0) << ServerProcess::ReadFile(s.log);
    return s;
  }
  HttpResponse Call(const std::string& method, const std::string& path, const std::string& body = "") const {
    auto r = HttpCall("127.0.0.1", port, method, path, body);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : HttpResponse{-1, "", ""};
  }
  HttpResponse Post(const nlohmann::json& body) const { return Call("POST", "/score", body.dump()); }
  nlohmann::json GetJson(const std::string& path) const {
    return nlohmann::json::parse(Call("GET", path).body, nullptr, false);
  }
  int Stop() {
    EXPECT_TRUE(proc.Signal(SIGTERM).ok());
    return proc.Wait(std::chrono::seconds(30)).value_or(-1);
  }
};

}  // namespace metaps::testing
