#include "worker/push_audit.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace metaps::worker {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("metaps-audit-" + std::to_string(getpid()) + "-" + name + "/worker-0.pushes"))
      .string();
}

TEST(PushAuditTest, AcknowledgedPushesAreRecordedAndFailedOnesAreNot) {
  std::string path = TempPath("acks");
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
  LocalParams inner({{"emb", 2}}, {{"mlp", 3}}, 0.1f);
  {
    auto log = PushAuditLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    AuditedParams params(&inner, log->get());
    std::vector<Key> keys = {7, 9};
    ASSERT_TRUE(params.Push("emb", keys, std::vector<float>(4, 1.f), 3).get().ok());
    ASSERT_TRUE(params.PushDense("mlp", std::vector<float>(3, 1.f), 4).get().ok());
    EXPECT_FALSE(params.Push("nope", keys, std::vector<float>(4, 1.f), 5).get().ok());
    EXPECT_FALSE(params.PushDense("mlp", std::vector<float>(2, 1.f), 6).get().ok());
  }
  {
    // A second writer (a restarted worker) appends.
    auto log = PushAuditLog::Open(path);
    ASSERT_TRUE(log.ok());
    std::vector<Key> keys = {1};
    ASSERT_TRUE((*log)->Append("emb", false, 8, keys).ok());
  }
  auto records = ReadPushAudit(path);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0].table, "emb");
  EXPECT_FALSE((*records)[0].dense);
  EXPECT_EQ((*records)[0].step, 3u);
  EXPECT_EQ((*records)[0].keys, (std::vector<Key>{7, 9}));
  EXPECT_EQ((*records)[1].table, "mlp");
  EXPECT_TRUE((*records)[1].dense);
  EXPECT_EQ((*records)[1].step, 4u);
  EXPECT_TRUE((*records)[1].keys.empty());
  EXPECT_EQ((*records)[2].keys, (std::vector<Key>{1}));

  // A torn tail (a process killed mid-record) is ignored; complete records stay readable.
  std::ofstream(path, std::ios::app | std::ios::binary) << "MPA1\x03";
  auto torn = ReadPushAudit(path);
  ASSERT_TRUE(torn.ok());
  EXPECT_EQ(torn->size(), 3u);
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST(PushAuditTest, AMissingLogIsNotFound) {
  EXPECT_EQ(ReadPushAudit(TempPath("missing")).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace metaps::worker
