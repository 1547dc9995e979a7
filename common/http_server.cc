#include "common/http_server.h"
#include "common/thread_name.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace metaps {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct HttpServer::Impl {
  Handler handler;
  asio::io_context io;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::thread thread;

  void Accept() {
    acceptor->async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // acceptor closed
      Serve(std::make_shared<tcp::socket>(std::move(socket)));
      Accept();
    });
  }

  void Serve(std::shared_ptr<tcp::socket> socket) {
    auto buffer = std::make_shared<beast::flat_buffer>();
    auto req = std::make_shared<http::request<http::string_body>>();
    http::async_read(*socket, *buffer, *req, [this, socket, buffer, req](beast::error_code ec, size_t) {
      if (ec) return;
      auto res = std::make_shared<http::response<http::string_body>>();
      res->version(req->version());
      res->keep_alive(false);
      if (req->method() != http::verb::get) {
        res->result(http::status::method_not_allowed);
        res->set(http::field::content_type, "text/plain");
        res->body() = "only GET is served\n";
      } else {
        HttpResponse r = handler(std::string(req->target()));
        res->result(static_cast<http::status>(r.status));
        res->set(http::field::content_type, r.content_type);
        res->body() = std::move(r.body);
      }
      res->prepare_payload();
      http::async_write(*socket, *res, [socket, res](beast::error_code, size_t) {
        beast::error_code ignored;
        socket->shutdown(tcp::socket::shutdown_send, ignored);
      });
    });
  }
};

HttpServer::HttpServer(Handler handler) : impl_(std::make_unique<Impl>()) { impl_->handler = std::move(handler); }

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
  try {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::milliseconds(timeout_ms));
    tcp::resolver resolver(io);
    stream.connect(resolver.resolve(host, std::to_string(port)));
    http::request<http::empty_body> req{http::verb::get, path, 11};
    req.set(http::field::host, host);
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    if (res.result_int() != 200) {
      return Unavailable("GET " + path + ": HTTP " + std::to_string(res.result_int()) + ": " + res.body());
    }
    return res.body();
  } catch (const std::exception& e) {
    return Unavailable("GET http://" + host + ":" + std::to_string(port) + path + ": " + e.what());
  }
}

}  // namespace metaps
