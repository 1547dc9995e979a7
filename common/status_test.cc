#include "common/status.h"

#include <gtest/gtest.h>

namespace metaps {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  METAPS_ASSIGN_OR_RETURN(int h, Half(x));
  METAPS_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, OkCarriesNoMessageAndErrorsKeepCodeAndMessage) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "OK");
  Status e = Unavailable("shard 3 down");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.code(), StatusCode::kUnavailable);
  EXPECT_EQ(e.ToString(), "UNAVAILABLE: shard 3 down");
  EXPECT_TRUE(e.IsTransient());
  EXPECT_FALSE(InvalidArgument("x").IsTransient());
  EXPECT_EQ(e.WithContext("pull").message(), "pull: shard 3 down");
}

TEST(StatusTest, AssignOrReturnPropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);  // 6 -> 3 -> odd
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "odd: 3");
}

}  // namespace
}  // namespace metaps
