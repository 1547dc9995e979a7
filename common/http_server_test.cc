#include "common/http_server.h"

#include <gtest/gtest.h>

namespace metaps {
namespace {

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

}  // namespace
}  // namespace metaps
