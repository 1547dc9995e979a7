#include "ps/lineage.h"

#include "common/random_id.h"

namespace metaps::ps {

std::string NewLineageId() { return RandomHexId(); }

nlohmann::json LineageToJson(const Lineage& lineage) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : lineage) out.push_back({{"id", s.id}, {"from_seq", s.from_seq}});
  return out;
}

Result<Lineage> LineageFromJson(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) return DataLoss(where + ": expected an array of {id, from_seq}");
  Lineage out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& s = j[i];
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!s.is_object() || !s.contains("id") || !s["id"].is_string() || !s.contains("from_seq") ||
        !s["from_seq"].is_number_unsigned()) {
      return DataLoss(at + ": expected {\"id\": string, \"from_seq\": unsigned}");
    }
    LineageSegment seg{s["id"].get<std::string>(), s["from_seq"].get<uint64_t>()};
    if (!out.empty() && seg.from_seq < out.back().from_seq) {
      return DataLoss(at + ": from_seq " + std::to_string(seg.from_seq) +
                      " is below the previous segment's " + std::to_string(out.back().from_seq));
    }
    out.push_back(std::move(seg));
  }
  return out;
}

Status CheckDescends(const Lineage& base, uint64_t base_seq, const Lineage& later, uint64_t later_seq) {
  if (base.empty() || later.empty()) {
    return FailedPrecondition(std::string(base.empty() ? "the base" : "the newer state") +
                              " records no lineage (written before lineages were kept), so a delta cannot be "
                              "checked: export a full snapshot");
  }
  if (later_seq < base_seq) {
    return FailedPrecondition("the newer state has pushes up to " + std::to_string(later_seq) +
                              ", before the base's " + std::to_string(base_seq) + ": the base is newer");
  }
  if (later.size() < base.size()) {
    return FailedPrecondition("the newer state's history has " + std::to_string(later.size()) +
                              " segments, the base's " + std::to_string(base.size()) +
                              ": it does not descend from the base");
  }
  for (size_t i = 0; i < base.size(); ++i) {
    if (!(later[i] == base[i])) {
      return FailedPrecondition("the histories part at segment " + std::to_string(i) + " (" + base[i].id +
                                " in the base, " + later[i].id +
                                " in the newer state): it does not descend from the base");
    }
  }
  if (later.size() > base.size() && later[base.size()].from_seq < base_seq) {
    return FailedPrecondition("the newer state went on from push " +
                              std::to_string(later[base.size()].from_seq) + ", before the base's " +
                              std::to_string(base_seq) +
                              " (restored from an older checkpoint): pushes the base holds were rolled back");
  }
  return Status::Ok();
}

}  // namespace metaps::ps
