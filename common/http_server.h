// HttpServer: a small HTTP/1.1 server (Boost.Beast over Boost.Asio) for status, metrics, serving
// and small uploads.
//
// Built with a Handler, it serves GET only: the handler maps a path to content type and body, and
// any other method gets 405. Built with a RequestHandler, every request (any method, with its body)
// reaches the handler, which decides the answer (404, 405, ...).
// With a RequestHandler, a request the server cannot parse gets 400, one whose body is bigger than
// HttpServerOptions::max_body_bytes gets 413 (a client that sends "Expect: 100-continue" gets it
// before sending the body) and one with a header over 8 KiB gets 431; the connection is then
// closed and the server goes on serving. (The GET-only server closes such connections unanswered.)
// A handler that throws gets the client a 500.
//
// Connections: by default one request is served per connection (the response says "Connection:
// close"). With HttpServerOptions::keep_alive_idle_ms, a RequestHandler server keeps a connection
// whose client asks for it (HTTP/1.1 does unless it sends "Connection: close") for its next
// requests, pipelined ones included, and closes it after that long without one.
//
// A connection whose request does not arrive within HttpServerOptions::request_timeout_ms is
// closed unanswered, so idle or stalled clients do not pile up.
//
// Threads: HttpServerOptions::threads threads run the Asio io_context, so up to that many handler
// calls run at once (each connection's requests one after another, in order). The handler must be
// thread-safe with respect to the owner's state. The GET-only server runs one thread.
// Binds to loopback unless told otherwise.
#pragma once

#include <cstddef>
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

struct HttpRequest {
  std::string method;        // "GET", "POST", ... as sent
  std::string target;        // path with query string as sent
  std::string content_type;  // empty when the request has none
  std::string body;
};

using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  // A request whose body is bigger gets 413. Default: 8 MiB.
  size_t max_body_bytes = 8u << 20;
  // Threads serving requests (>= 1): up to this many handler calls run at once.
  int threads = 1;
  // 0: one request per connection. Otherwise connections are kept for further requests and
  // closed after this many milliseconds without one.
  int keep_alive_idle_ms = 0;
  // A connection is closed, unanswered, when a request takes longer than this to arrive once
  // opened (headers, then the body, each), or its answer longer to be taken. 0: no limit.
  int request_timeout_ms = 30000;
  // Stop() answers the requests already read for up to this long before it drops what is left.
  int drain_ms = 10000;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;

  // GET only: `handler` gets the target (path and query string) of each GET request.
  explicit HttpServer(Handler handler);
  // Every request reaches `handler`. Two arguments, so that a lambda never matches both constructors.
  HttpServer(RequestHandler handler, HttpServerOptions options);
  ~HttpServer();  // stops and joins

  // Starts listening on address:port (port 0 picks a free one) and serving in the background.
  Result<int> Start(const std::string& address, int port);
  // Stops accepting, answers the requests already read (up to HttpServerOptions::drain_ms; their
  // connections are not kept), then closes every connection and joins the threads.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A blocking HTTP/1.1 client on one connection, kept open between calls while the server keeps
// it (for clients of a keep-alive server: benchmarks, load generators, tests). Each call must
// finish within `timeout_ms`. A kept connection the server has closed meanwhile (its idle timeout)
// is noticed when a call gets no byte of its answer on it; that call is then sent once more on a
// new connection, so only requests that are safe to repeat belong on an HttpClient.
// Not thread-safe: one per thread.
class HttpClient {
 public:
  HttpClient(std::string host, int port, int timeout_ms = 5000);
  ~HttpClient();

  // As HttpCall (below), errors included, on the kept connection.
  Result<HttpResponse> Call(const std::string& method, const std::string& path, const std::string& body = "",
                            const std::string& content_type = "application/json");

  // Connections opened so far (1 when every call reused the first).
  int connections() const { return connections_; }

 private:
  friend Result<HttpResponse> HttpCall(const std::string&, int, const std::string&, const std::string&,
                                       const std::string&, const std::string&, int);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int connections_ = 0;
};

// A blocking GET for tools and tests: returns the body of http://host:port/path.
Result<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                            int timeout_ms = 5000);

// A blocking request for tools and tests: sends `method` `path` (with `body` and, when the body is
// not empty, `content_type`) to host:port and returns the response whatever its status, with its
// content type ("" when none) and body. The whole exchange must finish within `timeout_ms`.
// Errors: InvalidArgument for a method that is not an HTTP token or a path or content type with
// spaces or control characters; DeadlineExceeded on timeout; Unavailable when the server cannot be
// reached or its answer is not HTTP.
Result<HttpResponse> HttpCall(const std::string& host, int port, const std::string& method,
                              const std::string& path, const std::string& body = "",
                              const std::string& content_type = "application/json", int timeout_ms = 5000);

}  // namespace metaps
