#include "common/http_server.h"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "common/thread_name.h"

namespace metaps {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// How long a connection closed after an error keeps reading (and discarding) what the client
// still sends, e.g. the rest of a refused body. Closing a socket with unread input resets the
// connection, and the client could then lose the response before reading it.
constexpr auto kLingerTime = std::chrono::seconds(2);

const beast::error_category& HttpErrorCategory() {
  return http::make_error_code(http::error::bad_target).category();
}

// What the server's connections share: the handler, the options, and what a draining stop needs.
struct ServerState {
  RequestHandler handler;
  bool get_only = false;
  HttpServerOptions options;
  std::atomic<bool> stopping{false};  // no connection is kept after its current request
  std::mutex mu;
  std::condition_variable idle;  // notified when `busy` drops to 0
  int busy = 0;                  // requests read and not yet answered (written or failed)

  void Begin() {
    std::lock_guard<std::mutex> lock(mu);
    ++busy;
  }
  void End() {
    std::lock_guard<std::mutex> lock(mu);
    if (--busy == 0) idle.notify_all();
  }
};

// One connection: reads a request, answers it, and then closes or (keep-alive) reads the next.
// Owned by its pending operations, of which there is one at a time; they run on the connection's
// strand.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, ServerState* state) : stream_(std::move(socket)), state_(state) {}

  void Start() {
    parser_.emplace();
    // The GET-only server keeps Beast's default limit (1 MiB) and its behaviour at the limit.
    if (!state_->get_only) parser_->body_limit(static_cast<std::uint64_t>(state_->options.max_body_bytes));
    // A kept connection waits keep_alive_idle_ms for its next request, a new one request_timeout_ms.
    Expire(served_ > 0 ? state_->options.keep_alive_idle_ms : state_->options.request_timeout_ms);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

 private:
  void Expire(int ms) {
    if (ms > 0) {
      stream_.expires_after(std::chrono::milliseconds(ms));
    } else {
      stream_.expires_never();
    }
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    Expire(state_->options.request_timeout_ms);  // the rest of the request, from now
    const auto& req = parser_->get();
    if (!state_->get_only && beast::iequals(req[http::field::expect], "100-continue")) {
      // The body fits (a bigger declared one failed the header read): ask for it.
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, req.version());
      http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code ec, size_t) {
        if (!ec) self->ReadBody();
      });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
  }

  void OnRequest(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    state_->Begin();  // ended once the answer is written (or fails)
    stream_.expires_never();
    http::request<http::string_body> req = parser_->release();
    HttpResponse r;
    if (state_->get_only && req.method() != http::verb::get) {
      r = HttpResponse{405, "text/plain", "only GET is served\n"};
    } else {
      HttpRequest request{std::string(req.method_string()), std::string(req.target()),
                          std::string(req[http::field::content_type]), std::move(req.body())};
      try {
        r = state_->handler(request);
      } catch (const std::exception& e) {
        r = HttpResponse{500, "text/plain", std::string("handler failed: ") + e.what() + "\n"};
      } catch (...) {
        r = HttpResponse{500, "text/plain", "handler failed\n"};
      }
    }
    const bool keep = !state_->get_only && state_->options.keep_alive_idle_ms > 0 && req.keep_alive() &&
                      !state_->stopping.load();
    Reply(req.version(), req.method() == http::verb::head, std::move(r), /*linger=*/false, keep,
          /*counted=*/true);
  }

  // Answers what could not be read; the GET-only server, a vanished client and one that took too
  // long get no answer.
  void OnReadError(beast::error_code ec) {
    if (state_->get_only || ec == http::error::end_of_stream || ec.category() != HttpErrorCategory()) return;
    int status = 400;
    if (ec == http::error::body_limit) status = 413;
    if (ec == http::error::header_limit) status = 431;
    Reply(11, false, HttpResponse{status, "text/plain", "cannot serve this request: " + ec.message() + "\n"},
          /*linger=*/true, /*keep=*/false, /*counted=*/false);
  }

  // Writes the answer; then reads the next request (keep), or closes, first draining what the
  // client still sends (linger). `counted`: the answer to a request counted in state_->busy.
  void Reply(unsigned version, bool head, HttpResponse r, bool linger, bool keep, bool counted) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(version);
    res->result(r.status >= 100 && r.status <= 999 ? static_cast<http::status>(r.status)
                                                   : http::status::internal_server_error);
    if (!r.content_type.empty()) res->set(http::field::content_type, r.content_type);
    res->keep_alive(keep);
    res->body() = std::move(r.body);
    res->prepare_payload();
    if (head) {  // the headers a GET would get, without the body
      const size_t n = res->body().size();
      res->body().clear();
      res->content_length(n);
    }
    Expire(state_->options.request_timeout_ms);  // a client that does not read its answer
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, linger, keep, counted](beast::error_code ec, size_t) {
                        if (counted) self->state_->End();
                        if (keep && !ec) {
                          ++self->served_;
                          return self->Start();
                        }
                        beast::error_code ignored;
                        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                        if (linger && !ec) {
                          self->stream_.expires_after(kLingerTime);
                          self->Drain();
                        }
                      });
  }

  // Discards input until the client closes, an error, or the linger time is up.
  void Drain() {
    if (!scratch_) scratch_ = std::make_unique<char[]>(kScratchBytes);
    stream_.async_read_some(asio::buffer(scratch_.get(), kScratchBytes),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (!ec) self->Drain();
                            });
  }

  static constexpr size_t kScratchBytes = 64 * 1024;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;  // kept across requests: it may hold the start of a pipelined one
  std::optional<http::request_parser<http::string_body>> parser_;  // a new one per request
  ServerState* state_;
  uint64_t served_ = 0;  // requests answered on this connection
  std::unique_ptr<char[]> scratch_;
};

}  // namespace

struct HttpServer::Impl {
  ServerState state;
  // Destroyed by Stop(), so that the connections left in it (their handlers own them) close.
  std::unique_ptr<asio::io_context> io = std::make_unique<asio::io_context>();
  std::unique_ptr<tcp::acceptor> acceptor;  // on its own strand
  std::vector<std::thread> threads;

  void Accept() {
    // Each connection's socket gets its own strand, so its handlers never run at once.
    acceptor->async_accept(asio::make_strand(*io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // acceptor closed
      std::make_shared<Connection>(std::move(socket), &state)->Start();
      Accept();
    });
  }
};

HttpServer::HttpServer(Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->state.handler = [handler = std::move(handler)](const HttpRequest& request) {
    return handler(request.target);
  };
  impl_->state.get_only = true;
}

HttpServer::HttpServer(RequestHandler handler, HttpServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->state.handler = std::move(handler);
  impl_->state.options = options;
  impl_->state.options.threads = std::max(1, options.threads);
}

HttpServer::~HttpServer() { Stop(); }

Result<int> HttpServer::Start(const std::string& address, int port) {
  beast::error_code ec;
  auto addr = asio::ip::make_address(address, ec);
  if (ec) return InvalidArgument("bad listen address '" + address + "': " + ec.message());
  if (!impl_->threads.empty() || !impl_->io) {
    return FailedPrecondition("an HTTP server starts once");
  }
  impl_->acceptor = std::make_unique<tcp::acceptor>(asio::make_strand(*impl_->io));
  tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  impl_->acceptor->open(ep.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(ep, ec);
  if (!ec) impl_->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Unavailable("cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message());
  int bound = impl_->acceptor->local_endpoint().port();
  impl_->Accept();
  for (int i = 0; i < impl_->state.options.threads; ++i) {
    impl_->threads.emplace_back([this] {
      NameThisThread("http");
      impl_->io->run();
    });
  }
  return bound;
}

void HttpServer::Stop() {
  if (!impl_ || impl_->threads.empty()) return;
  ServerState& state = impl_->state;
  state.stopping = true;
  std::promise<void> closed;
  asio::post(impl_->acceptor->get_executor(), [this, &closed] {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
    closed.set_value();
  });
  closed.get_future().wait();
  {
    // Requests already read are answered (within the drain time); idle connections are dropped.
    std::unique_lock<std::mutex> lock(state.mu);
    state.idle.wait_for(lock, std::chrono::milliseconds(std::max(0, state.options.drain_ms)),
                        [&] { return state.busy == 0; });
  }
  impl_->io->stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->acceptor.reset();
  impl_->io.reset();
}

Result<std::string> HttpGet(const std::string& host, int port, const std::string& path, int timeout_ms) {
  // Through HttpCall: its deadline bounds the whole exchange (blocking Beast calls ignore
  // expires_after, so a server that accepted and never answered used to hang this call).
  auto r = HttpCall(host, port, "GET", path, "", "", timeout_ms);
  if (!r.ok()) return Unavailable(r.status().message());
  if (r->status != 200)
    return Unavailable("GET " + path + ": HTTP " + std::to_string(r->status) + ": " + r->body);
  return std::move(r->body);
}

namespace {

bool IsToken(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!std::isalnum(c) &&
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool HasControl(const std::string& s, bool allow_space) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || (c == ' ' && !allow_space)) return true;
  }
  return false;
}

Status CheckRequest(const std::string& method, const std::string& path, const std::string& content_type) {
  if (!IsToken(method)) return InvalidArgument("HTTP method '" + method + "' is not a token");
  if (path.empty() || HasControl(path, false)) return InvalidArgument("bad HTTP path '" + path + "'");
  if (HasControl(content_type, true)) return InvalidArgument("bad HTTP content type '" + content_type + "'");
  return Status();
}

}  // namespace

struct HttpClient::Impl {
  std::string host;
  int port = 0;
  int timeout_ms = 0;
  bool one_shot = false;  // HttpCall: asks the server to close after answering
  asio::io_context io;
  tcp::resolver resolver{io};
  tcp::socket socket{io};
  beast::flat_buffer buffer;

  void Close() {
    beast::error_code ignored;
    socket.close(ignored);
    buffer.clear();
  }

  // One request and its answer, on the open connection or on a new one. *reused: whether the
  // connection was open before; *answered: whether any byte of the answer arrived.
  Result<HttpResponse> Exchange(const std::string& method, const std::string& path, const std::string& body,
                                const std::string& content_type, int* connections, bool* reused,
                                bool* answered) {
    const std::string where = method + " http://" + host + ":" + std::to_string(port) + path;
    *reused = socket.is_open();
    *answered = false;
    http::request<http::string_body> req{http::verb::unknown, path, 11};
    req.method_string(method);
    req.set(http::field::host, host);
    if (!body.empty()) req.set(http::field::content_type, content_type);
    req.body() = body;
    req.keep_alive(!one_shot);
    req.prepare_payload();
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    if (req.method() == http::verb::head) parser.skip(true);
    // Asynchronous operations, so that one deadline (io.run_for) bounds the whole exchange. The
    // response is read while the request is written: a server may answer (413) before it has read
    // the whole body.
    bool finished = false;
    Status outcome;
    beast::error_code send_error;
    auto fail = [&](const char* stage, beast::error_code ec) {
      if (finished) return;
      finished = true;
      outcome = Unavailable(where + ": " + stage + ": " + ec.message());
      Close();
    };
    auto exchange = [&] {
      // A failed send is reported only if no whole response arrives: the server may have
      // answered and closed without reading the rest of the request.
      http::async_write(socket, req, [&](beast::error_code ec, size_t) { send_error = ec; });
      http::async_read(socket, buffer, parser, [&](beast::error_code ec, size_t) {
        *answered = parser.got_some();
        if (ec) return send_error ? fail("send", send_error) : fail("receive", ec);
        finished = true;
        // Closing also ends a send the server stopped reading.
        if (one_shot || !parser.get().keep_alive() || send_error) Close();
      });
    };
    io.restart();
    if (*reused) {
      exchange();
    } else {
      resolver.async_resolve(
          host, std::to_string(port), [&](beast::error_code ec, tcp::resolver::results_type eps) {
            if (ec) return fail("resolve", ec);
            asio::async_connect(socket, eps, [&](beast::error_code ec, const tcp::endpoint&) {
              if (ec) return fail("connect", ec);
              ++*connections;
              exchange();
            });
          });
    }
    io.run_for(std::chrono::milliseconds(timeout_ms));
    if (!finished) {
      finished = true;
      *answered = true;  // not known: never sent again
      outcome = DeadlineExceeded(where + ": no answer within " + std::to_string(timeout_ms) + " ms");
      Close();
      resolver.cancel();
      io.restart();
      io.run();  // the cancelled operations end (as no-ops) while what they refer to still lives
    }
    if (!outcome.ok()) return outcome;
    const auto& res = parser.get();
    return HttpResponse{static_cast<int>(res.result_int()), std::string(res[http::field::content_type]),
                        res.body()};
  }
};

HttpClient::HttpClient(std::string host, int port, int timeout_ms) : impl_(std::make_unique<Impl>()) {
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->timeout_ms = timeout_ms;
}

HttpClient::~HttpClient() = default;

Result<HttpResponse> HttpClient::Call(const std::string& method, const std::string& path,
                                      const std::string& body, const std::string& content_type) {
  METAPS_RETURN_IF_ERROR(CheckRequest(method, path, content_type));
  try {
    bool reused = false, answered = false;
    auto r = impl_->Exchange(method, path, body, content_type, &connections_, &reused, &answered);
    // A kept connection the server closed while idle: once more, on a new one.
    if (!r.ok() && reused && !answered) {
      r = impl_->Exchange(method, path, body, content_type, &connections_, &reused, &answered);
    }
    return r;
  } catch (const std::exception& e) {
    impl_->Close();
    return Unavailable(method + " http://" + impl_->host + ":" + std::to_string(impl_->port) + path + ": " +
                       e.what());
  }
}

Result<HttpResponse> HttpCall(const std::string& host, int port, const std::string& method,
                              const std::string& path, const std::string& body,
                              const std::string& content_type, int timeout_ms) {
  HttpClient client(host, port, timeout_ms);
  client.impl_->one_shot = true;
  return client.Call(method, path, body, content_type);
}

}  // namespace metaps
