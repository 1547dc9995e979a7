#include "common/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace metaps {
namespace {

// A server whose handler echoes what it got as "METHOD TARGET CONTENT-TYPE\nBODY" and counts calls.
class EchoServer {
 public:
  explicit EchoServer(size_t max_body_bytes = 8u << 20) : EchoServer(HttpServerOptions{max_body_bytes}) {}
  explicit EchoServer(HttpServerOptions options)
      : server_(
            [this](const HttpRequest& r) {
              calls_.fetch_add(1);
              if (r.target == "/missing") return HttpResponse{404, "text/plain", "no such page\n"};
              if (r.target == "/throw") throw std::runtime_error("boom");
              return HttpResponse{200, "application/octet-stream",
                                  r.method + " " + r.target + " " + r.content_type + "\n" + r.body};
            },
            options) {}
  int Start() {
    auto port = server_.Start("127.0.0.1", 0);
    EXPECT_TRUE(port.ok()) << port.status();
    return port.ok() ? *port : 0;
  }
  int calls() const { return calls_.load(); }

 private:
  std::atomic<int> calls_{0};
  HttpServer server_;
};

HttpServerOptions KeepAlive(int idle_ms) {
  HttpServerOptions options;
  options.keep_alive_idle_ms = idle_ms;
  return options;
}

// A raw loopback TCP connection, for bytes HttpCall would never send.
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{5, 0};  // a server that never answers fails the test instead of hanging it
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawConnection() { close(fd_); }
  bool connected() const { return connected_; }
  bool Send(std::string_view bytes) {
    return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == ssize_t(bytes.size());
  }
  void ShutdownSend() { shutdown(fd_, SHUT_WR); }
  // Whether the server closes the connection (within the 5 s receive timeout) without sending more.
  bool ClosedByPeer() {
    char c;
    return recv(fd_, &c, 1, 0) == 0;
  }
  // Reads until `until` has arrived (or, when empty, until the server closes).
  std::string Receive(std::string_view until = "") {
    std::string got;
    char buf[4096];
    while (until.empty() || got.find(until) == std::string::npos) {
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }

 private:
  int fd_;
  bool connected_ = false;
};

TEST(HttpServerTest, ServesTheHandlersAnswerOnLoopback) {
  HttpServer server([](const std::string& path) {
    if (path == "/status") return HttpResponse{200, "application/json", "{\"round\":3}"};
    return HttpResponse{404, "text/plain", "no such page\n"};
  });
  auto port = server.Start("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status();
  auto body = HttpGet("127.0.0.1", *port, "/status");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "{\"round\":3}");
  auto missing = HttpGet("127.0.0.1", *port, "/nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(missing.status().message().find("404"), std::string::npos);
  server.Stop();
  EXPECT_FALSE(HttpGet("127.0.0.1", *port, "/status", 500).ok());
}

TEST(HttpServerTest, GetOnlyServerAnswersOtherMethodsWith405) {
  std::string seen;
  HttpServer server([&seen](const std::string& path) {
    seen = path;
    return HttpResponse{200, "text/plain", "got " + path};
  });
  auto port = server.Start("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status();
  auto get = HttpCall("127.0.0.1", *port, "GET", "/status?verbose=1");
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->content_type, "text/plain");
  EXPECT_EQ(get->body, "got /status?verbose=1");
  seen.clear();
  auto post = HttpCall("127.0.0.1", *port, "POST", "/status", "{}");
  ASSERT_TRUE(post.ok()) << post.status();
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(seen, "");  // the handler never saw it
}

TEST(HttpServerTest, EveryMethodAndItsBodyReachTheRequestHandler) {
  EchoServer server;
  const int port = server.Start();
  auto post = HttpCall("127.0.0.1", port, "POST", "/rows?table=emb", "{\"k\":1}");
  ASSERT_TRUE(post.ok()) << post.status();
  EXPECT_EQ(post->status, 200);
  EXPECT_EQ(post->content_type, "application/octet-stream");
  EXPECT_EQ(post->body, "POST /rows?table=emb application/json\n{\"k\":1}");
  // Binary bodies (zero bytes included) of a few MiB arrive intact.
  std::string blob(3u << 20, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 7919 >> 3);
  auto put = HttpCall("127.0.0.1", port, "PUT", "/blob", blob, "application/octet-stream");
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->body, "PUT /blob application/octet-stream\n" + blob);
  // The handler decides about paths and methods; its status comes back as is, not as an error.
  auto missing = HttpCall("127.0.0.1", port, "DELETE", "/missing");
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body, "no such page\n");
  // A GET without a body has no content type; HEAD gets no body.
  auto get = HttpCall("127.0.0.1", port, "GET", "/x");
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->body, "GET /x \n");
  auto head = HttpCall("127.0.0.1", port, "HEAD", "/x");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
  EXPECT_EQ(server.calls(), 5);
}

TEST(HttpServerTest, BodyOverTheLimitGets413AndTheServerGoesOn) {
  EchoServer server(/*max_body_bytes=*/1000);
  const int port = server.Start();
  auto at_limit = HttpCall("127.0.0.1", port, "POST", "/p", std::string(1000, 'a'), "text/plain");
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  EXPECT_EQ(at_limit->status, 200);
  auto over = HttpCall("127.0.0.1", port, "POST", "/p", std::string(1001, 'a'), "text/plain");
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_EQ(over->status, 413);
  // Far over: more than the socket buffers hold, so the server must read past the refusal for the
  // client to see the 413 rather than a reset connection.
  auto far_over = HttpCall("127.0.0.1", port, "POST", "/p", std::string(16u << 20, 'b'), "text/plain");
  ASSERT_TRUE(far_over.ok()) << far_over.status();
  EXPECT_EQ(far_over->status, 413);
  // A client that sends the whole request before reading (as most do) still gets the 413: the
  // server reads and discards the rest instead of resetting the connection.
  {
    RawConnection c(port);
    ASSERT_TRUE(c.connected());
    const size_t n = 16u << 20;
    ASSERT_TRUE(c.Send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(n) + "\r\n\r\n" +
                       std::string(n, 'c')));
    c.ShutdownSend();
    EXPECT_EQ(c.Receive().substr(0, 12), "HTTP/1.1 413");
  }
  EXPECT_EQ(server.calls(), 1);  // refused bodies never reach the handler
  auto next = HttpCall("127.0.0.1", port, "POST", "/p", "small", "text/plain");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(next->body, "POST /p text/plain\nsmall");
}

TEST(HttpServerTest, ChunkedBodyOverTheLimitGets413) {
  EchoServer server(/*max_body_bytes=*/10);
  const int port = server.Start();
  RawConnection c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.Send("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n"));
  c.ShutdownSend();
  EXPECT_EQ(c.Receive().substr(0, 12), "HTTP/1.1 413");
  EXPECT_EQ(server.calls(), 0);
}

TEST(HttpServerTest, GarbageGets400AndTheServerGoesOn) {
  EchoServer server;
  const int port = server.Start();
  {
    RawConnection c(port);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Send("\x01\x02\xff not http at all\r\n\r\n"));
    c.ShutdownSend();
    const std::string answer = c.Receive();
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 400") << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  }
  {
    RawConnection c(port);  // a request line with no version
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Send("GET /x\r\n\r\n"));
    c.ShutdownSend();
    EXPECT_EQ(c.Receive().substr(0, 12), "HTTP/1.1 400");
  }
  { RawConnection silent(port); }  // connects and leaves without a byte
  auto next = HttpCall("127.0.0.1", port, "POST", "/after", "ok", "text/plain");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(next->body, "POST /after text/plain\nok");
  EXPECT_EQ(server.calls(), 1);
}

TEST(HttpServerTest, Expect100ContinueIsAnsweredBeforeTheBody) {
  EchoServer server(/*max_body_bytes=*/100);
  const int port = server.Start();
  {
    RawConnection c(port);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(
        c.Send("POST /e HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n"));
    EXPECT_EQ(c.Receive("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
    ASSERT_TRUE(c.Send("hello"));
    const std::string answer = c.Receive();
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 200") << answer;
    EXPECT_NE(answer.find("POST /e text/plain\nhello"), std::string::npos) << answer;
  }
  {
    RawConnection c(port);  // too big: refused without the body being sent
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Send("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n"));
    c.ShutdownSend();
    EXPECT_EQ(c.Receive().substr(0, 12), "HTTP/1.1 413");
  }
  EXPECT_EQ(server.calls(), 1);
}

TEST(HttpServerTest, HandlerThatThrowsGets500) {
  EchoServer server;
  const int port = server.Start();
  auto r = HttpCall("127.0.0.1", port, "POST", "/throw", "x");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("boom"), std::string::npos);
  auto next = HttpCall("127.0.0.1", port, "GET", "/ok");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);
}

// Keep-alive: a kept connection answers pipelined requests in order, each response says whether
// the connection stays, "Connection: close" from the client ends it, and a server without
// keep-alive closes after every answer.
TEST(HttpServerTest, KeptConnectionsServePipelinedRequestsInOrderUntilTheClientCloses) {
  EchoServer server(KeepAlive(10000));
  const int port = server.Start();
  RawConnection c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.Send("POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
             "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nde"));
  const std::string both = c.Receive("POST /two \nde");
  const size_t one = both.find("POST /one \nabc"), two = both.find("POST /two \nde");
  ASSERT_NE(one, std::string::npos) << both;
  ASSERT_NE(two, std::string::npos) << both;
  EXPECT_LT(one, two);
  EXPECT_EQ(both.find("Connection: close"), std::string::npos) << both;
  ASSERT_TRUE(c.Send("GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  const std::string last = c.Receive();  // until the server closes
  EXPECT_EQ(last.substr(0, 12), "HTTP/1.1 200") << last;
  EXPECT_NE(last.find("Connection: close"), std::string::npos) << last;
  EXPECT_NE(last.find("GET /three \n"), std::string::npos) << last;
  EXPECT_EQ(server.calls(), 3);

  EchoServer plain;  // no keep-alive: one request per connection, even over HTTP/1.1
  RawConnection d(plain.Start());
  ASSERT_TRUE(d.connected());
  ASSERT_TRUE(d.Send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string only = d.Receive();
  EXPECT_NE(only.find("Connection: close"), std::string::npos) << only;
  EXPECT_NE(only.find("GET /a \n"), std::string::npos) << only;
  EXPECT_EQ(only.find("GET /b"), std::string::npos) << only;
  EXPECT_EQ(plain.calls(), 1);
}

TEST(HttpServerTest, AnIdleKeptConnectionIsClosedAndTheClientReconnects) {
  EchoServer server(KeepAlive(200));
  const int port = server.Start();
  {
    RawConnection c(port);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_NE(c.Receive("GET /a \n").find("HTTP/1.1 200"), std::string::npos);
    EXPECT_TRUE(c.ClosedByPeer());  // after 200 ms idle, well before the receive timeout
  }
  HttpClient client("127.0.0.1", port);
  for (int i = 0; i < 3; ++i) {
    auto r = client.Call("POST", "/k", std::to_string(i), "text/plain");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->body, "POST /k text/plain\n" + std::to_string(i));
  }
  EXPECT_EQ(client.connections(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // the server closes it meanwhile
  auto again = client.Call("GET", "/after");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->body, "GET /after \n");
  EXPECT_EQ(client.connections(), 2);
  EXPECT_EQ(server.calls(), 5);  // the request sent on the closed connection never reached it

  EchoServer plain;  // a server that closes after each answer: a new connection per call
  HttpClient to_plain("127.0.0.1", plain.Start());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(to_plain.Call("GET", "/p").ok());
  EXPECT_EQ(to_plain.connections(), 3);
  EXPECT_EQ(plain.calls(), 3);
}

// With `threads` threads, that many handler calls run at once: each of two concurrent requests
// waits (up to `wait`) for the other to be inside the handler too.
std::vector<std::string> TwoConcurrentRequests(int threads, std::chrono::milliseconds wait) {
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0;
  bool met = false;  // two were inside at once
  HttpServerOptions options;
  options.threads = threads;
  HttpServer server(
      [&](const HttpRequest&) {
        std::unique_lock<std::mutex> lock(mu);
        met = met || ++inside >= 2;
        cv.notify_all();
        const bool together = cv.wait_for(lock, wait, [&] { return met; });
        --inside;
        return HttpResponse{200, "text/plain", together ? "together" : "alone"};
      },
      options);
  auto port = server.Start("127.0.0.1", 0);
  EXPECT_TRUE(port.ok()) << port.status();
  std::vector<std::string> got(2);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      auto r = HttpCall("127.0.0.1", *port, "GET", "/", "", "", 30000);
      got[i] = r.ok() ? r->body : r.status().message();
    });
  }
  for (auto& t : clients) t.join();
  return got;
}

TEST(HttpServerTest, ThreadsServeThatManyRequestsAtOnce) {
  EXPECT_EQ(TwoConcurrentRequests(2, std::chrono::seconds(20)),
            (std::vector<std::string>{"together", "together"}));
  // One thread: the second request waits for the first to be answered.
  EXPECT_EQ(TwoConcurrentRequests(1, std::chrono::milliseconds(300)),
            (std::vector<std::string>{"alone", "alone"}));
}

TEST(HttpServerTest, AStalledRequestIsClosedAfterTheRequestTimeout) {
  HttpServerOptions options;
  options.request_timeout_ms = 200;
  EchoServer server(options);
  const int port = server.Start();
  RawConnection silent(port), partial(port), slow_body(port);
  ASSERT_TRUE(silent.connected() && partial.connected() && slow_body.connected());
  ASSERT_TRUE(partial.Send("GET /x HTTP/1.1\r\nHost:"));
  ASSERT_TRUE(slow_body.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234"));
  // Each is closed unanswered well before the 5 s receive timeout.
  EXPECT_TRUE(silent.ClosedByPeer());
  EXPECT_TRUE(partial.ClosedByPeer());
  EXPECT_TRUE(slow_body.ClosedByPeer());
  EXPECT_EQ(server.calls(), 0);
  auto next = HttpCall("127.0.0.1", port, "GET", "/after");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);
}

// A request the handler is working on when Stop() is called still gets its whole answer (one too
// big for the socket buffers, so most of it is written after Stop() began); without the drain
// time it is cut off. Nothing is accepted after Stop().
Result<HttpResponse> BigAnswerAcrossStop(int drain_ms) {
  std::atomic<bool> entered{false};
  HttpServerOptions options;
  options.keep_alive_idle_ms = 10000;
  options.drain_ms = drain_ms;
  HttpServer server(
      [&](const HttpRequest& r) {
        entered = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        return HttpResponse{200, "text/plain", r.target + std::string(64u << 20, 'x')};
      },
      options);
  auto port = server.Start("127.0.0.1", 0);
  EXPECT_TRUE(port.ok()) << port.status();
  Result<HttpResponse> got = Unavailable("not called");
  std::thread client([&] { got = HttpCall("127.0.0.1", *port, "GET", "/slow", "", "", 30000); });
  while (!entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server.Stop();
  client.join();
  EXPECT_FALSE(HttpCall("127.0.0.1", *port, "GET", "/later", "", "", 2000).ok());
  return got;
}

TEST(HttpServerTest, StopAnswersTheRequestsInFlightAndTakesNoMore) {
  auto drained = BigAnswerAcrossStop(/*drain_ms=*/20000);
  ASSERT_TRUE(drained.ok()) << drained.status();
  EXPECT_EQ(drained->status, 200);
  EXPECT_EQ(drained->body.size(), 5 + (64u << 20));
  EXPECT_EQ(drained->body.substr(0, 6), "/slowx");
  EXPECT_FALSE(BigAnswerAcrossStop(/*drain_ms=*/0).ok());
}

TEST(HttpCallTest, RefusesBadRequestsAndReportsUnreachableAndSilentServers) {
  EXPECT_EQ(HttpCall("127.0.0.1", 1, "BAD METHOD", "/").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpCall("127.0.0.1", 1, "", "/").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpCall("127.0.0.1", 1, "GET", "/a b").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpCall("127.0.0.1", 1, "GET", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpCall("127.0.0.1", 1, "POST", "/", "x", "text/plain\r\nX-Injected: 1").status().code(),
            StatusCode::kInvalidArgument);

  // A port nobody listens on: pick one by binding and closing.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  close(fd);
  EXPECT_EQ(HttpCall("127.0.0.1", port, "GET", "/").status().code(), StatusCode::kUnavailable);

  // A listener that accepts (the kernel does) and never answers: the deadline holds.
  fd = socket(AF_INET, SOCK_STREAM, 0);
  addr.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  // (Without a working deadline these calls block forever and the test times out.)
  auto silent = HttpCall("127.0.0.1", ntohs(addr.sin_port), "POST", "/", "x", "text/plain", 300);
  EXPECT_EQ(silent.status().code(), StatusCode::kDeadlineExceeded) << silent.status();
  auto get = HttpGet("127.0.0.1", ntohs(addr.sin_port), "/status", 300);  // HttpGet goes through HttpCall
  EXPECT_EQ(get.status().code(), StatusCode::kUnavailable) << get.status();
  close(fd);
}

}  // namespace
}  // namespace metaps
