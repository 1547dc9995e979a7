// Writes the seed corpus of fuzz_wire: valid requests of every kind the server handles, framed as
// fuzz/wire_frames.h describes. Usage: make_wire_seeds OUT_DIR (fuzz/corpus/fuzz_wire is the
// checked-in output; launch/fuzz.sh regenerates it so the seeds follow the schema).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/wire.h"
#include "fuzz/wire_frames.h"

namespace {

using metaps::Bytes;
using metaps::Header;
using metaps::Message;
using metaps::MsgType;

metaps::Bytes Keys(std::vector<uint64_t> k) { return Bytes::FromVector(std::move(k)); }
metaps::Bytes Floats(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>(i);
  return Bytes::FromVector(std::move(v));
}

Header H(MsgType type, std::string table = "", uint64_t num_keys = 0, uint32_t dim = 0) {
  Header h;
  h.type = type;
  h.job_id = "job";
  h.sender = "worker-0";
  h.request_id = 7;
  h.epoch = 1;
  h.auth = "tok";
  h.table = std::move(table);
  h.num_keys = num_keys;
  h.dim = dim;
  h.step = 3;
  h.worker_id = 0;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  struct Seed {
    std::string name;
    uint8_t flags;
    Message m;
  };
  std::vector<Seed> seeds;
  seeds.push_back({"pull", 3, {H(MsgType::kPull, "emb", 3), {Keys({1, 2, 1})}}});
  seeds.push_back({"pull_misaligned", 7, {H(MsgType::kPull, "item", 2), {Keys({5, 9})}}});
  seeds.push_back({"push", 3, {H(MsgType::kPush, "emb", 2, 4), {Keys({1, 2}), Floats(8)}}});
  seeds.push_back({"push_adam", 0, {H(MsgType::kPush, "item", 3, 3), {Keys({4, 4, 8}), Floats(9)}}});
  seeds.push_back({"pull_dense", 3, {H(MsgType::kPullDense, "w"), {}}});
  seeds.push_back({"push_dense", 3, {H(MsgType::kPushDense, "w", 0, 5), {Floats(5)}}});
  Header ck = H(MsgType::kCheckpoint);
  ck.meta = "/tmp/ckpt";
  seeds.push_back({"checkpoint", 3, {ck, {}}});
  seeds.push_back({"stats", 3, {H(MsgType::kStats), {}}});
  seeds.push_back({"ping", 0, {H(MsgType::kPing), {}}});
  seeds.push_back({"shutdown", 3, {H(MsgType::kShutdown), {}}});
  seeds.push_back({"wrong_job", 1, {[] { Header h = H(MsgType::kPing); h.job_id = "other"; return h; }(), {}}});
  // 10^12 keys declared: must be refused before anything is allocated.
  seeds.push_back({"huge_num_keys", 3, {H(MsgType::kPull, "emb", 1000000000000ull), {Keys({1})}}});
  // A long table name: the error reply echoes it and must still be a decodable header.
  seeds.push_back({"long_table", 0, {H(MsgType::kPull, std::string(40000, 't'), 1), {Keys({1})}}});
  // Headers as large as the framing allows (and just under kMaxHeaderBytes): every reply, not only
  // error replies, must stay decodable when it echoes the request's names.
  for (MsgType t : {MsgType::kStats, MsgType::kPing, MsgType::kPull}) {
    Header h = H(t);
    h.sender.clear();
    h.auth.clear();
    size_t len = 65535;
    do {
      h.table = std::string(--len, 'n');
    } while (metaps::EncodeHeader(h).size() > 65535);
    seeds.push_back({std::string("max_header_") + metaps::MsgTypeName(t), 0, {h, {}}});
  }
  Header err;
  err.type = MsgType::kError;
  err.error_code = 5;
  err.error_message = "no table 'x'";
  seeds.push_back({"error", 0, {err, {}}});
  for (const Seed& s : seeds) {
    const std::string bytes = metaps::fuzz::JoinFrames(s.flags, metaps::ToFrames(s.m));
    std::ofstream f(out + "/" + s.name, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f.good()) {
      std::fprintf(stderr, "cannot write %s/%s\n", out.c_str(), s.name.c_str());
      return 1;
    }
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), out.c_str());
  return 0;
}
