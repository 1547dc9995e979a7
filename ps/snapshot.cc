#include "ps/snapshot.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/rocksdb_storage.h"
#include "common/sst_file.h"
#include "common/storage.h"
#include "ps/internal/row_format.h"
#include "ps/param_store.h"

namespace metaps::ps {

namespace {

namespace fs = std::filesystem;
using namespace internal::row_format;  // NOLINT: the on-disk row layout of a checkpoint

std::string BigEndianKey(Key k) {
  std::string s;
  AppendBigEndian64(&s, k);
  return s;
}

std::string ShardFile(const std::string& table, int shard) {
  return "rows/" + table + "/shard-" + std::to_string(shard) + ".sst";
}

struct RegisteredTable {
  std::string name;
  TableRecord record{};
};

}  // namespace

Result<std::string> FileXxh3(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read " + path);
  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) return Internal("out of memory hashing " + path);
  XXH3_64bits_reset(state);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) XXH3_64bits_update(state, buf.data(), static_cast<size_t>(in.gcount()));
  }
  const bool failed = in.bad();
  const uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  if (failed) return DataLoss("error reading " + path);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return std::string(hex);
}

Result<ShardExport> ExportCheckpointShard(const std::string& checkpoint_dir, int shard, const ShardBase* base,
                                          const std::string& out_dir) {
  METAPS_ASSIGN_OR_RETURN(auto opened, ParamStore::OpenCheckpoint(checkpoint_dir));
  const nlohmann::json& manifest = opened.first;
  Storage& storage = *opened.second;
  ShardExport out;
  out.shard = shard;
  if (!manifest.contains("applied_seq") || !manifest["applied_seq"].is_number_unsigned()) {
    return DataLoss(checkpoint_dir + "/manifest.json: no applied_seq");
  }
  out.applied_seq = manifest["applied_seq"].get<uint64_t>();
  if (manifest.contains("lineage")) {
    METAPS_ASSIGN_OR_RETURN(out.lineage,
                            LineageFromJson(manifest["lineage"], checkpoint_dir + "/manifest.json lineage"));
  }
  const uint64_t since_seq = base ? base->applied_seq : 0;
  if (base) {
    METAPS_RETURN_IF_ERROR(CheckDescends(base->lineage, base->applied_seq, out.lineage, out.applied_seq)
                               .WithContext("checkpoint " + checkpoint_dir + " against the base snapshot"));
  }
  METAPS_ASSIGN_OR_RETURN(StorageSpace rows_space, storage.FindSpace("rows"));
  METAPS_ASSIGN_OR_RETURN(StorageSpace meta_space, storage.FindSpace("meta"));

  std::vector<RegisteredTable> by_id;
  Status bad;
  METAPS_RETURN_IF_ERROR(
      storage.Scan(meta_space, kTablePrefix, "table0", [&](std::string_view k, std::string_view v) {
        RegisteredTable t;
        t.name = std::string(k.substr(std::strlen(kTablePrefix)));
        if (v.size() != sizeof(TableRecord)) {
          bad = DataLoss(checkpoint_dir + ": table record of " + t.name + " has " + std::to_string(v.size()) +
                         " bytes");
          return false;
        }
        std::memcpy(&t.record, v.data(), sizeof(TableRecord));
        if (by_id.size() <= t.record.id) by_id.resize(t.record.id + 1);
        by_id[t.record.id] = t;
        if (!t.record.dense) out.sparse_dims[t.name] = t.record.dim;
        return true;
      }));
  METAPS_RETURN_IF_ERROR(bad);

  struct Open {
    std::unique_ptr<SstFileWriter> writer;
    std::string tmp, path;
  };
  std::map<std::string, Open> writers;
  auto cleanup = [&writers] {
    for (auto& [name, o] : writers) {
      o.writer.reset();
      std::error_code ec;
      fs::remove(o.tmp, ec);
    }
  };
  std::string value;
  METAPS_RETURN_IF_ERROR(storage.Scan(rows_space, "", "", [&](std::string_view k, std::string_view v) {
    if (k.size() != kRowKeyBytes) {
      bad = DataLoss(checkpoint_dir + ": a row key of " + std::to_string(k.size()) + " bytes");
      return false;
    }
    uint32_t id;
    Key key;
    ReadRowKey(k.data(), &id, &key);
    if (id >= by_id.size() || by_id[id].name.empty()) {
      bad = DataLoss(checkpoint_dir + ": a row of table id " + std::to_string(id) +
                     ", which is not registered");
      return false;
    }
    const RegisteredTable& t = by_id[id];
    DiskRowHeader h;
    const size_t want = sizeof(h) + (size_t{t.record.dim} + t.record.state_floats) * 4;
    if (v.size() != want) {
      bad = DataLoss(checkpoint_dir + ": table " + t.name + " key " + std::to_string(key) + ": row has " +
                     std::to_string(v.size()) + " bytes, expected " + std::to_string(want));
      return false;
    }
    std::memcpy(&h, v.data(), sizeof(h));
    if (h.version != kRowVersion || h.dim != t.record.dim) {
      bad = DataLoss(checkpoint_dir + ": table " + t.name + " key " + std::to_string(key) +
                     ": row header does not match the table");
      return false;
    }
    const char* weights = v.data() + sizeof(h);
    if (t.record.dense) {
      std::vector<float>& d = out.dense[t.name];
      d.resize(t.record.dim);
      std::memcpy(d.data(), weights, size_t{t.record.dim} * 4);
      return true;
    }
    if (base && h.last_seq <= since_seq) {
      ++out.rows_unchanged;
      return true;
    }
    auto it = writers.find(t.name);
    if (it == writers.end()) {
      Open o;
      o.path = out_dir + "/" + ShardFile(t.name, shard);
      o.tmp = o.path + ".tmp";
      std::error_code ec;
      fs::create_directories(fs::path(o.path).parent_path(), ec);
      if (ec) {
        bad = Internal("cannot create " + fs::path(o.path).parent_path().string() + ": " + ec.message());
        return false;
      }
      auto w = SstFileWriter::Create(o.tmp);
      if (!w.ok()) {
        bad = w.status();
        return false;
      }
      o.writer = std::move(w).value();
      it = writers.emplace(t.name, std::move(o)).first;
    }
    if (Status s =
            it->second.writer->Add(BigEndianKey(key), std::string_view(weights, size_t{t.record.dim} * 4));
        !s.ok()) {
      bad = s.WithContext("exporting table " + t.name);
      return false;
    }
    ++out.rows_exported;
    return true;
  }));
  if (!bad.ok()) {
    cleanup();
    return bad;
  }
  for (auto& [name, o] : writers) {
    if (Status s = o.writer->Finish(); !s.ok()) {
      cleanup();
      return s.WithContext("writing " + o.tmp);
    }
    SnapshotFile f;
    f.rows = o.writer->entries();
    f.bytes = o.writer->file_bytes();
    f.path = ShardFile(name, shard);
    std::error_code ec;
    fs::rename(o.tmp, o.path, ec);
    if (ec) {
      cleanup();
      return Internal("cannot rename " + o.tmp + ": " + ec.message());
    }
    auto sum = FileXxh3(o.path);
    if (!sum.ok()) {
      cleanup();
      return sum.status();
    }
    f.xxh3 = *sum;
    out.files[name] = std::move(f);
  }
  return out;
}

nlohmann::json SnapshotTablesToJson(const std::vector<SnapshotTable>& tables) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& t : tables) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : t.files) {
      files.push_back({{"path", f.path}, {"rows", f.rows}, {"bytes", f.bytes}, {"xxh3", f.xxh3}});
    }
    arr.push_back({{"name", t.name},
                   {"dim", t.dim},
                   {"init", std::string(InitKindName(t.init.kind))},
                   {"init_scale", t.init.scale},
                   {"init_seed", t.init.seed},
                   {"files", files}});
  }
  return arr;
}

Result<std::vector<SnapshotTable>> SnapshotTablesFromJson(const nlohmann::json& tables) {
  if (!tables.is_array()) return InvalidArgument("tables: not an array");
  std::vector<SnapshotTable> out;
  for (size_t i = 0; i < tables.size(); ++i) {
    const nlohmann::json& j = tables[i];
    const std::string at = "tables[" + std::to_string(i) + "]";
    if (!j.is_object()) return InvalidArgument(at + ": not an object");
    SnapshotTable t;
    try {
      t.name = j.at("name").get<std::string>();
      t.dim = j.at("dim").get<uint32_t>();
      auto kind = ParseInitKind(j.at("init").get<std::string>());
      if (!kind.ok()) return InvalidArgument(at + ".init: " + kind.status().message());
      t.init.kind = *kind;
      t.init.scale = j.at("init_scale").get<float>();
      t.init.seed = j.at("init_seed").get<uint64_t>();
      const nlohmann::json& files = j.at("files");
      if (!files.is_array()) return InvalidArgument(at + ".files: not an array");
      for (size_t k = 0; k < files.size(); ++k) {
        SnapshotFile f;
        f.path = files[k].at("path").get<std::string>();
        f.rows = files[k].at("rows").get<uint64_t>();
        f.bytes = files[k].at("bytes").get<uint64_t>();
        f.xxh3 = files[k].at("xxh3").get<std::string>();
        if (f.path.empty() || f.path.front() == '/' || f.path.find("..") != std::string::npos) {
          return InvalidArgument(at + ".files[" + std::to_string(k) +
                                 "].path: must be relative, inside the snapshot");
        }
        t.files.push_back(std::move(f));
      }
    } catch (const std::exception& e) {
      return InvalidArgument(at + ": " + e.what());
    }
    if (t.name.empty() || t.dim == 0) return InvalidArgument(at + ": needs a name and a dim >= 1");
    out.push_back(std::move(t));
  }
  return out;
}

Result<std::unique_ptr<SnapshotRows>> SnapshotRows::Open(
    const std::vector<std::string>& dirs, const std::vector<std::vector<SnapshotTable>>& tables,
    const std::string& work_dir, const SnapshotRows* base, size_t base_dirs) {
  if (dirs.empty() || dirs.size() != tables.size()) {
    return InvalidArgument("SnapshotRows::Open: one table list per dir");
  }
  if (base == nullptr) base_dirs = 0;
  if (base_dirs > dirs.size())
    return InvalidArgument("SnapshotRows::Open: a base of more dirs than the chain");
  {
    // Rows left in a used directory (another snapshot's) would be served as this one's.
    std::error_code ec;
    if (fs::exists(work_dir, ec) && !(fs::is_directory(work_dir, ec) && fs::is_empty(work_dir, ec))) {
      return InvalidArgument("work directory " + work_dir + " is not empty: give a new or empty one");
    }
  }
  std::unique_ptr<SnapshotRows> r(new SnapshotRows());
  r->tables_ = tables.back();
  // Every snapshot of the chain must have the same tables.
  for (size_t d = 0; d + 1 < dirs.size(); ++d) {
    for (const auto& t : tables[d]) {
      const SnapshotTable* n = r->FindTable(t.name);
      if (n == nullptr || n->dim != t.dim) {
        return InvalidArgument(dirs[d] + ": table " + t.name + " is not in " + dirs.back() +
                               " with the same dim");
      }
    }
  }
  if (base_dirs > 0) {
    // The base's tables must be this chain's, dims and all (the spaces are opened by name).
    if (base->tables_.size() != r->tables_.size()) {
      return InvalidArgument("the rows loaded before have other tables than " + dirs.back());
    }
    for (const auto& t : base->tables_) {
      const SnapshotTable* n = r->FindTable(t.name);
      if (n == nullptr || n->dim != t.dim) {
        return InvalidArgument("the rows loaded before have table " + t.name + ", not in " + dirs.back() +
                               " with the same dim");
      }
    }
  }
  // Verify every file before anything is ingested.
  for (size_t d = base_dirs; d < dirs.size(); ++d) {
    for (const auto& t : tables[d]) {
      for (const auto& f : t.files) {
        const std::string path = dirs[d] + "/" + f.path;
        std::error_code ec;
        const uint64_t size = fs::file_size(path, ec);
        if (ec) return NotFound(path + ": " + ec.message());
        if (size != f.bytes) {
          return DataLoss(path + ": " + std::to_string(size) + " bytes, the manifest says " +
                          std::to_string(f.bytes));
        }
        METAPS_ASSIGN_OR_RETURN(std::string sum, FileXxh3(path));
        if (sum != f.xxh3) return DataLoss(path + ": checksum " + sum + ", the manifest says " + f.xxh3);
      }
    }
  }
  RocksDbOptions o;
  o.spaces.clear();
  o.log_spaces.clear();
  for (const auto& t : r->tables_) o.spaces.push_back(t.name);
  o.write_buffer_bytes = 8u << 20;
  if (base_dirs > 0) {
    std::error_code ec;
    fs::remove(work_dir, ec);  // empty (checked above); a checkpoint makes its own directory
    METAPS_RETURN_IF_ERROR(base->db_->Checkpoint(work_dir).WithContext("copying the rows loaded before"));
    r->rows_ingested_ = r->rows_from_base_ = base->rows_ingested_;
  }
  METAPS_ASSIGN_OR_RETURN(r->db_, RocksDbStorage::Open(work_dir, o));
  for (const auto& t : r->tables_) {
    METAPS_ASSIGN_OR_RETURN(StorageSpace s, r->db_->FindSpace(t.name));
    r->spaces_.push_back(s);
  }
  for (size_t d = base_dirs; d < dirs.size(); ++d) {
    for (const auto& t : tables[d]) {
      std::vector<std::string> paths;
      for (const auto& f : t.files) {
        paths.push_back(dirs[d] + "/" + f.path);
        r->rows_ingested_ += f.rows;
      }
      if (paths.empty()) continue;
      const size_t i = static_cast<size_t>(r->FindTable(t.name) - r->tables_.data());
      METAPS_RETURN_IF_ERROR(r->db_->IngestFiles(r->spaces_[i], paths).WithContext("loading " + dirs[d]));
    }
  }
  return r;
}

SnapshotRows::~SnapshotRows() {
  if (db_) (void)db_->Close();
}

const SnapshotTable* SnapshotRows::FindTable(std::string_view name) const {
  for (const auto& t : tables_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Status SnapshotRows::Lookup(std::string_view table, std::span<const Key> keys, float* out,
                            uint64_t* stored) const {
  const SnapshotTable* t = FindTable(table);
  if (t == nullptr) return NotFound("the snapshot has no table \"" + std::string(table) + "\"");
  const size_t index = static_cast<size_t>(t - tables_.data());
  const size_t dim = t->dim;
  std::string key_bytes(keys.size() * 8, '\0');
  std::vector<std::string_view> views(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    for (int b = 0; b < 8; ++b) key_bytes[i * 8 + b] = static_cast<char>((keys[i] >> (8 * (7 - b))) & 0xff);
    views[i] = std::string_view(key_bytes.data() + i * 8, 8);
  }
  std::vector<uint8_t> found(keys.size(), 0);
  Status bad;
  METAPS_RETURN_IF_ERROR(db_->MultiGet(spaces_[index], views, [&](size_t i, std::string_view v) {
    if (v.size() != dim * 4) {
      bad = DataLoss("snapshot table " + t->name + " key " + std::to_string(keys[i]) + ": value of " +
                     std::to_string(v.size()) + " bytes, expected " + std::to_string(dim * 4));
      return;
    }
    std::memcpy(out + i * dim, v.data(), dim * 4);
    found[i] = 1;
  }));
  METAPS_RETURN_IF_ERROR(bad);
  const uint64_t table_seed = Hash64(t->name);
  uint64_t n = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (found[i]) {
      ++n;
    } else {
      InitializeRow(t->init, table_seed, keys[i], out + i * dim, t->dim);
    }
  }
  if (stored) *stored = n;
  return Status::Ok();
}

}  // namespace metaps::ps
