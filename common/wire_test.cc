#include "common/wire.h"

#include <gtest/gtest.h>

namespace metaps {
namespace {

TEST(WireTest, HeaderRoundTrips) {
  Header h;
  h.type = MsgType::kPush;
  h.job_id = "job-1";
  h.sender = "worker-3";
  h.request_id = 77;
  h.epoch = 5;
  h.auth = std::string("\x00\x01secret", 8);
  h.table = "item";
  h.num_keys = 10000;
  h.dim = 32;
  h.meta = "{\"a\":1}";
  auto d = DecodeHeader(EncodeHeader(h));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->type, MsgType::kPush);
  EXPECT_EQ(d->job_id, "job-1");
  EXPECT_EQ(d->auth, h.auth);
  EXPECT_EQ(d->num_keys, 10000u);
  EXPECT_EQ(d->dim, 32u);
  EXPECT_EQ(d->meta, h.meta);
}

TEST(WireTest, GarbageAndTruncatedHeadersAreInvalidArgument) {
  Bytes enc = EncodeHeader(Header{.type = MsgType::kPull, .table = "t"});
  auto truncated = DecodeHeader(Bytes::Copy(enc.data(), enc.size() - 8));
  EXPECT_EQ(truncated.status().code(), StatusCode::kInvalidArgument);
  std::string junk(64, '\xff');
  EXPECT_EQ(DecodeHeader(Bytes::CopyString(junk)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeHeader(Bytes::CopyString("abc")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeHeader(Bytes()).status().code(), StatusCode::kInvalidArgument);
  std::string huge(kMaxHeaderBytes + 8, '\0');
  EXPECT_EQ(DecodeHeader(Bytes::CopyString(huge)).status().code(), StatusCode::kInvalidArgument);
}

TEST(WireTest, ErrorRepliesCarryTheStatus) {
  Header req{.type = MsgType::kPull, .request_id = 9};
  Message m = ErrorReply(req, NotFound("no table x"));
  auto back = FromFrames(ToFrames(m));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->header.request_id, 9u);
  Status s = StatusFromReply(back->header);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no table x");
}

// Found by fuzz_wire: an error message quoting a long table name ("no table '<40000 bytes>'") plus the
// echoed name made a reply larger than kMaxHeaderBytes, which the requester then refused to decode.
TEST(WireTest, ErrorRepliesToOversizedRequestsStayDecodable) {
  Header req{.type = MsgType::kPull, .job_id = std::string(40000, 'j'), .request_id = 11,
             .table = std::string(40000, 't')};
  Message m = ErrorReply(req, NotFound("no table '" + req.table + "'"));
  auto back = FromFrames(ToFrames(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->header.request_id, 11u);
  EXPECT_TRUE(back->header.table.empty());   // too long to echo
  EXPECT_TRUE(back->header.job_id.empty());
  Status s = StatusFromReply(back->header);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_LT(s.message().size(), 4200u);
  EXPECT_EQ(s.message().rfind("no table 'ttt", 0), 0u);
}

}  // namespace
}  // namespace metaps
