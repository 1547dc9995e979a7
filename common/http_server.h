// HttpServer: a small HTTP/1.1 server (Boost.Beast over Boost.Asio) for status and metrics.
//
// GET requests are answered by a handler (path -> content type and body); anything else gets 405.
// One background thread runs the Asio io_context; the handler is called on that thread, so it
// must be thread-safe with respect to the owner's state (owners hand it a mutex-guarded snapshot).
// Binds to loopback unless told otherwise.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace metaps {

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;

  explicit HttpServer(Handler handler);
  ~HttpServer();  // stops and joins

  // Starts listening on address:port (port 0 picks a free one) and serving in the background.
  Result<int> Start(const std::string& address, int port);
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A blocking GET for tools and tests: returns the body of http://host:port/path.
Result<std::string> HttpGet(const std::string& host, int port, const std::string& path, int timeout_ms = 5000);

}  // namespace metaps
