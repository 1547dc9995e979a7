#include "common/http_server.h"
#include "common/thread_name.h"

#include <cctype>
#include <string_view>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

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

// One connection: reads one request, answers it and closes. Owned by its pending operations.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, const RequestHandler* handler, bool get_only, size_t max_body_bytes)
      : stream_(std::move(socket)), handler_(handler), get_only_(get_only) {
    // The GET-only server keeps Beast's default limit (1 MiB) and its behaviour at the limit.
    if (!get_only_) parser_.body_limit(static_cast<std::uint64_t>(max_body_bytes));
  }

  void Start() {
    http::async_read_header(
        stream_, buffer_, parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

 private:
  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    const auto& req = parser_.get();
    if (!get_only_ && beast::iequals(req[http::field::expect], "100-continue")) {
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
    http::async_read(stream_, buffer_, parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
  }

  void OnRequest(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    http::request<http::string_body> req = parser_.release();
    HttpResponse r;
    if (get_only_ && req.method() != http::verb::get) {
      r = HttpResponse{405, "text/plain", "only GET is served\n"};
    } else {
      HttpRequest request{std::string(req.method_string()), std::string(req.target()),
                          std::string(req[http::field::content_type]), std::move(req.body())};
      try {
        r = (*handler_)(request);
      } catch (const std::exception& e) {
        r = HttpResponse{500, "text/plain", std::string("handler failed: ") + e.what() + "\n"};
      } catch (...) {
        r = HttpResponse{500, "text/plain", "handler failed\n"};
      }
    }
    Reply(req.version(), req.method() == http::verb::head, std::move(r), /*linger=*/false);
  }

  // Answers what could not be read; the GET-only server and a vanished client get no answer.
  void OnReadError(beast::error_code ec) {
    if (get_only_ || ec == http::error::end_of_stream || ec.category() != HttpErrorCategory()) return;
    int status = 400;
    if (ec == http::error::body_limit) status = 413;
    if (ec == http::error::header_limit) status = 431;
    Reply(11, false, HttpResponse{status, "text/plain", "cannot serve this request: " + ec.message() + "\n"},
          /*linger=*/true);
  }

  void Reply(unsigned version, bool head, HttpResponse r, bool linger) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(version);
    res->result(r.status >= 100 && r.status <= 999 ? static_cast<http::status>(r.status)
                                                   : http::status::internal_server_error);
    if (!r.content_type.empty()) res->set(http::field::content_type, r.content_type);
    res->keep_alive(false);
    res->body() = std::move(r.body);
    res->prepare_payload();
    if (head) {  // the headers a GET would get, without the body
      const size_t n = res->body().size();
      res->body().clear();
      res->content_length(n);
    }
    http::async_write(stream_, *res, [self = shared_from_this(), res, linger](beast::error_code ec, size_t) {
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
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  const RequestHandler* handler_;
  const bool get_only_;
  std::unique_ptr<char[]> scratch_;
};

}  // namespace

struct HttpServer::Impl {
  RequestHandler handler;
  bool get_only = false;
  size_t max_body_bytes = 0;
  asio::io_context io;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::thread thread;

  void Accept() {
    acceptor->async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // acceptor closed
      std::make_shared<Connection>(std::move(socket), &handler, get_only, max_body_bytes)->Start();
      Accept();
    });
  }
};

HttpServer::HttpServer(Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->handler = [handler = std::move(handler)](const HttpRequest& request) {
    return handler(request.target);
  };
  impl_->get_only = true;
}

HttpServer::HttpServer(RequestHandler handler, HttpServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->handler = std::move(handler);
  impl_->max_body_bytes = options.max_body_bytes;
}

HttpServer::~HttpServer() { Stop(); }

Result<int> HttpServer::Start(const std::string& address, int port) {
  beast::error_code ec;
  auto addr = asio::ip::make_address(address, ec);
  if (ec) return InvalidArgument("bad listen address '" + address + "': " + ec.message());
  impl_->acceptor = std::make_unique<tcp::acceptor>(impl_->io);
  tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  impl_->acceptor->open(ep.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(ep, ec);
  if (!ec) impl_->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable("cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message());
  int bound = impl_->acceptor->local_endpoint().port();
  impl_->Accept();
  impl_->thread = std::thread([this] {
    NameThisThread("http");
    impl_->io.run();
  });
  return bound;
}

void HttpServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
    impl_->io.stop();
  });
  impl_->thread.join();
}

Result<std::string> HttpGet(const std::string& host, int port, const std::string& path, int timeout_ms) {
  // Through HttpCall: its deadline bounds the whole exchange (blocking Beast calls ignore
  // expires_after, so a server that accepted and never answered used to hang this call).
  auto r = HttpCall(host, port, "GET", path, "", "", timeout_ms);
  if (!r.ok()) return Unavailable(r.status().message());
  if (r->status != 200) return Unavailable("GET " + path + ": HTTP " + std::to_string(r->status) + ": " + r->body);
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

}  // namespace

Result<HttpResponse> HttpCall(const std::string& host, int port, const std::string& method,
                              const std::string& path, const std::string& body,
                              const std::string& content_type, int timeout_ms) {
  if (!IsToken(method)) return InvalidArgument("HTTP method '" + method + "' is not a token");
  if (path.empty() || HasControl(path, false)) return InvalidArgument("bad HTTP path '" + path + "'");
  if (HasControl(content_type, true)) return InvalidArgument("bad HTTP content type '" + content_type + "'");
  const std::string where = method + " http://" + host + ":" + std::to_string(port) + path;
  try {
    // Asynchronous operations, so that one deadline (io.run_for) bounds the whole exchange. The
    // response is read while the request is written: a server may answer (413) before it has read
    // the whole body.
    asio::io_context io;
    tcp::resolver resolver(io);
    tcp::socket socket(io);
    http::request<http::string_body> req{http::verb::unknown, path, 11};
    req.method_string(method);
    req.set(http::field::host, host);
    if (!body.empty()) req.set(http::field::content_type, content_type);
    req.body() = body;
    req.prepare_payload();
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    if (req.method() == http::verb::head) parser.skip(true);
    bool finished = false;
    Status outcome;
    beast::error_code send_error;
    auto fail = [&](const char* stage, beast::error_code ec) {
      if (finished) return;
      finished = true;
      outcome = Unavailable(where + ": " + stage + ": " + ec.message());
      beast::error_code ignored;
      socket.close(ignored);
    };
    resolver.async_resolve(
        host, std::to_string(port), [&](beast::error_code ec, tcp::resolver::results_type eps) {
          if (ec) return fail("resolve", ec);
          asio::async_connect(socket, eps, [&](beast::error_code ec, const tcp::endpoint&) {
            if (ec) return fail("connect", ec);
            // A failed send is reported only if no whole response arrives: the server may have
            // answered and closed without reading the rest of the request.
            http::async_write(socket, req, [&](beast::error_code ec, size_t) { send_error = ec; });
            http::async_read(socket, buffer, parser, [&](beast::error_code ec, size_t) {
              if (ec) return send_error ? fail("send", send_error) : fail("receive", ec);
              finished = true;
              beast::error_code ignored;
              socket.close(ignored);  // ends a send the server stopped reading
            });
          });
        });
    io.run_for(std::chrono::milliseconds(timeout_ms));
    if (!finished) {
      finished = true;
      outcome = DeadlineExceeded(where + ": no answer within " + std::to_string(timeout_ms) + " ms");
      beast::error_code ignored;
      socket.close(ignored);
      resolver.cancel();
      io.restart();
      io.run();  // the cancelled operations end (as no-ops) while what they refer to still lives
    }
    if (!outcome.ok()) return outcome;
    const auto& res = parser.get();
    return HttpResponse{static_cast<int>(res.result_int()), std::string(res[http::field::content_type]),
                        res.body()};
  } catch (const std::exception& e) {
    return Unavailable(where + ": " + e.what());
  }
}

}  // namespace metaps
