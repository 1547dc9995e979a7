#include "scheduler/scheduler.h"

#include "common/files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace metaps::scheduler {
namespace {

std::string NodeKey(const std::string& role, int32_t id) { return role + "/" + std::to_string(id); }

Result<int32_t> IdIn(const nlohmann::json& body, const char* field, int limit, const std::string& kind) {
  if (!body.contains(field) || !body[field].is_number_integer()) {
    return InvalidArgument(kind + ": body needs an integer '" + field + "'");
  }
  int64_t v = body[field].get<int64_t>();
  if (v < 0 || v >= limit) {
    return InvalidArgument(kind + ": " + field + " " + std::to_string(v) + " is outside [0, " + std::to_string(limit) + ")");
  }
  return static_cast<int32_t>(v);
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options, std::unique_ptr<Transport> transport, Logger logger)
    : options_(std::move(options)),
      transport_(std::move(transport)),
      logger_(std::move(logger)),
      server_endpoints_(options_.num_servers),
      server_stats_(options_.num_servers, nlohmann::json::object()),
      clock_(options_.consistency, options_.staleness, options_.num_workers),
      worker_done_(options_.num_workers, false),
      progress_(options_.num_workers) {}

Result<std::string> Scheduler::Bind() {
  LoadState();
  PublishSnapshot();
  return transport_->Bind(options_.bind);
}

void Scheduler::Stop() {
  stop_ = true;
  transport_->Interrupt();
}

bool Scheduler::AllWorkersDone() const {
  for (bool d : worker_done_) {
    if (!d) return false;
  }
  return true;
}

Status Scheduler::Serve() {
  logger_->info("scheduler for job '{}' serving: {} servers, {} workers, {} (staleness {}), {} rounds",
                options_.job_id, options_.num_servers, options_.num_workers, ConsistencyName(options_.consistency),
                options_.staleness, options_.total_rounds);
  auto last_check = Clock::now();
  while (!stop_) {
    auto env = transport_->Recv(std::chrono::milliseconds(200));
    if (env.ok()) HandleEnvelope(std::move(env).value());
    if (Clock::now() - last_check > std::chrono::milliseconds(200)) {
      CheckLiveness();
      PublishSnapshot();
      last_check = Clock::now();
    }
    if (finished_) {
      // Leave only once every node said "leaving" (dead-marked ones too: their heartbeats may only
      // have been late). Leaving right after queueing the last answer would lose it: a node's
      // socket drops unread messages when the connection closes, and a server that missed its
      // "stop" would heartbeat into the void. Servers learn of the end from their next heartbeat;
      // a node that never asks (dead for good) is waited for a bounded time.
      bool everyone_left = true;
      for (const auto& [k, n] : nodes_) {
        if (!n.left) everyone_left = false;
      }
      auto grace = std::chrono::milliseconds(options_.heartbeat_timeout_ms) + std::chrono::seconds(2);
      if (everyone_left || Clock::now() - finished_at_ > grace) break;
    }
  }
  PublishSnapshot();
  logger_->info("scheduler stopping ({})", finished_ ? "job finished" : "stopped");
  return Status::Ok();
}

void Scheduler::HandleEnvelope(Envelope env) {
  std::string peer = std::move(env.peer);
  auto msg = FromFrames(std::move(env.frames));
  if (!msg.ok()) {
    logger_->warn("malformed message: {}", msg.status().ToString());
    (void)transport_->Send({peer, ToFrames(ErrorReply(Header{}, msg.status()))});
    return;
  }
  const Header& h = msg->header;
  if (!peer.empty() && peer[0] != '@') {  // a reply on one of our connections to a server
    HandleServerReply(peer, *msg);
    return;
  }
  if ((!options_.job_id.empty() && h.job_id != options_.job_id) || (!options_.auth.empty() && h.auth != options_.auth)) {
    ++rejected_;
    logger_->warn("dropped {} '{}' from '{}': {}", MsgTypeName(h.type), h.table, h.sender,
                  h.job_id != options_.job_id ? "job id '" + h.job_id + "' is not this job's"
                                              : std::string("wrong or missing job token"));
    return;
  }
  if (h.type == MsgType::kPing) {
    Message pong;
    pong.header.type = MsgType::kPong;
    pong.header.request_id = h.request_id;
    (void)transport_->Send({peer, ToFrames(pong)});
    return;
  }
  if (h.type != MsgType::kControl) {
    (void)transport_->Send({peer, ToFrames(ErrorReply(h, Unimplemented(std::string("the scheduler does not handle ") +
                                                                    MsgTypeName(h.type))))});
    return;
  }
  auto body = ParseControlBody(h);
  bool deferred = false;
  Result<nlohmann::json> r = body.ok() ? HandleControl(peer, h, *body, &deferred) : Result<nlohmann::json>(body.status());
  if (!r.ok()) {
    logger_->warn("control '{}' from '{}' failed: {}", h.table, h.sender, r.status().ToString());
    (void)transport_->Send({peer, ToFrames(ErrorReply(h, r.status()))});
  } else if (!deferred) {
    Reply(peer, h, *r);
  }
}

void Scheduler::Reply(const std::string& peer, const Header& request, const nlohmann::json& body) {
  Message m;
  m.header.type = MsgType::kControlReply;
  m.header.job_id = options_.job_id;
  m.header.request_id = request.request_id;
  m.header.table = request.table;
  m.header.epoch = epoch_;
  m.header.meta = body.dump();
  Status s = transport_->Send({peer, ToFrames(m)});
  if (!s.ok()) logger_->warn("reply to '{}' lost: {}", request.sender, s.ToString());
}

Result<nlohmann::json> Scheduler::HandleControl(const std::string& peer, const Header& h, const nlohmann::json& body,
                                                bool* deferred) {
  const std::string& kind = h.table;
  auto now = Clock::now();
  if (kind == "register") {
    std::string role = body.value("role", "");
    if (role != "server" && role != "worker") return InvalidArgument("register: role must be server or worker");
    int limit = role == "server" ? options_.num_servers : options_.num_workers;
    METAPS_ASSIGN_OR_RETURN(int32_t id, IdIn(body, "id", limit, kind));
    Node& n = nodes_[NodeKey(role, id)];
    bool again = !n.role.empty();
    n.role = role;
    n.id = id;
    n.name = body.value("name", role + "-" + std::to_string(id));
    n.last_seen = now;
    n.alive = true;
    if (role == "server") {
      std::string ep = body.value("endpoint", "");
      if (ep.empty()) return InvalidArgument("register: a server must give its endpoint");
      if (again && n.endpoint != ep) ++epoch_;  // a restarted shard: the shard map changed
      if (n.endpoint != ep) {
        std::string link = "shard-" + std::to_string(id);
        (void)transport_->Disconnect(link);
        METAPS_RETURN_IF_ERROR(transport_->Connect(link, ep));
      }
      n.endpoint = ep;
      server_endpoints_[id] = ep;
      if (again && ckpt_running_) {
        FinishCheckpoint(Aborted("shard " + std::to_string(id) + " restarted during the checkpoint"));
      }
    } else {
      ReleaseClockWaiters(clock_.SetAlive(id, !worker_done_[id]));
    }
    n.left = false;  // a restarted node that registers again has not left
    logger_->info("{} {} registered{} ({})", role, id, again ? " again" : "", n.endpoint.empty() ? n.name : n.endpoint);
    ReleaseMembershipWaiters();
    return nlohmann::json{{"id", id}, {"epoch", epoch_}};
  }
  if (kind == "membership") {
    for (const auto& ep : server_endpoints_) {
      if (ep.empty()) {
        membership_waiters_.push_back({peer, h});
        *deferred = true;
        return nlohmann::json::object();
      }
    }
    return MembershipBody();
  }
  if (kind == "heartbeat") {
    std::string role = body.value("role", "");
    int32_t id = body.value("id", -1);
    auto it = nodes_.find(NodeKey(role, id));
    if (it == nodes_.end()) return FailedPrecondition("heartbeat from unregistered " + role + " " + std::to_string(id));
    Node& n = it->second;
    n.last_seen = now;
    if (role == "server" && body.contains("store")) server_stats_[id] = ServerStoreStats(body["store"]);
    if (!n.alive) {
      n.alive = true;
      logger_->info("{} {} is alive again", role, id);
      if (role == "worker" && !worker_done_[id]) ReleaseClockWaiters(clock_.SetAlive(id, true));
    }
    if (finished_ && !n.told_to_stop) {
      n.told_to_stop = true;
      logger_->info("{} {} told that the job is over (request {})", role, id, h.request_id);
    }
    return nlohmann::json{{"stop", finished_.load()}, {"epoch", epoch_}};
  }
  if (kind == "clock") {
    METAPS_ASSIGN_OR_RETURN(int32_t w, IdIn(body, "worker", options_.num_workers, kind));
    uint64_t c = body.value("clock", uint64_t{0});
    progress_[w].round = c;
    if (auto it = nodes_.find(NodeKey("worker", w)); it != nodes_.end()) it->second.last_seen = now;
    if (options_.total_rounds > 0 && c >= options_.total_rounds) {
      // The end is a barrier in every mode: evaluation and checkpoints see every worker's last push.
      auto released = clock_.Advance(w, c);
      SaveState();
      final_waiters_[w] = {peer, h};
      *deferred = true;
      ReleaseClockWaiters(released);
      ReleaseFinalWaiters();
      return nlohmann::json::object();
    }
    MaybeScheduleCheckpoint(c);
    auto released = clock_.Advance(w, c);
    SaveState();
    // Every request is answered through the waiter list, so a held one stays held.
    clock_waiters_[w] = {peer, h};
    *deferred = true;
    Release(released);
    MaybeStartCheckpoint();
    return nlohmann::json::object();
  }
  if (kind == "progress") {
    METAPS_ASSIGN_OR_RETURN(int32_t w, IdIn(body, "worker", options_.num_workers, kind));
    WorkerProgress& p = progress_[w];
    p.round = body.value("round", p.round);
    p.tasks = body.value("tasks", p.tasks);
    p.loss = body.value("loss", p.loss);
    p.rows_pulled = body.value("rows_pulled", p.rows_pulled);
    p.rows_pushed = body.value("rows_pushed", p.rows_pushed);
    p.tasks_per_s = body.value("tasks_per_s", p.tasks_per_s);
    if (body.contains("extra")) p.extra = body["extra"];
    return nlohmann::json::object();
  }
  if (kind == "leaving") {
    // A node that has its last answer (a worker after "done", a server after "stop") and exits.
    std::string role = body.value("role", "");
    int32_t id = body.value("id", -1);
    auto it = nodes_.find(NodeKey(role, id));
    if (it == nodes_.end()) return FailedPrecondition("'leaving' from unregistered " + role + " " + std::to_string(id));
    it->second.left = true;
    it->second.last_seen = now;
    logger_->info("{} {} left", role, id);
    return nlohmann::json::object();
  }
  if (kind == "done") {
    METAPS_ASSIGN_OR_RETURN(int32_t w, IdIn(body, "worker", options_.num_workers, kind));
    worker_done_[w] = true;
    logger_->info("worker {} is done", w);
    Release(clock_.SetAlive(w, false));
    ReleaseFinalWaiters();
    MaybeStartCheckpoint();
    if (AllWorkersDone() && !finished_) {
      finished_ = true;
      finished_at_ = now;
      logger_->info("every worker is done: the job is finished");
    }
    SaveState();
    return nlohmann::json::object();
  }
  if (kind == "status") return BuildStatus();
  return Unimplemented("unknown control kind '" + kind + "'");
}

nlohmann::json Scheduler::MembershipBody() const {
  return nlohmann::json{{"epoch", epoch_},
                        {"servers", server_endpoints_},
                        {"num_workers", options_.num_workers},
                        {"consistency", ConsistencyName(options_.consistency)},
                        {"staleness", options_.staleness},
                        {"total_rounds", options_.total_rounds}};
}

void Scheduler::ReleaseMembershipWaiters() {
  for (const auto& ep : server_endpoints_) {
    if (ep.empty()) return;
  }
  auto waiters = std::move(membership_waiters_);
  membership_waiters_.clear();
  for (const auto& w : waiters) Reply(w.peer, w.request, MembershipBody());
}

void Scheduler::ReleaseClockWaiters(const std::vector<std::pair<int, uint64_t>>& released) {
  for (const auto& [w, c] : released) {
    auto it = clock_waiters_.find(w);
    if (it == clock_waiters_.end()) continue;
    Reply(it->second.peer, it->second.request, nlohmann::json{{"clock", c}, {"stop", false}});
    clock_waiters_.erase(it);
  }
}

void Scheduler::Release(const std::vector<std::pair<int, uint64_t>>& released) {
  std::vector<std::pair<int, uint64_t>> now;
  for (const auto& r : released) {
    if (ckpt_round_ > 0 && r.second >= ckpt_round_) {
      ckpt_held_.push_back(r);
    } else {
      now.push_back(r);
    }
  }
  ReleaseClockWaiters(now);
}

void Scheduler::MaybeScheduleCheckpoint(uint64_t requested_clock) {
  if (ckpt_round_ > 0 || options_.checkpoint_dir.empty() || requested_clock == 0) return;
  if (options_.total_rounds > 0 && requested_clock >= options_.total_rounds) return;  // the end has its own
  bool by_rounds = options_.checkpoint_every_rounds > 0 && requested_clock % options_.checkpoint_every_rounds == 0 &&
                   requested_clock > last_ckpt_round_;
  bool by_time = options_.checkpoint_every_seconds > 0 &&
                 Clock::now() - last_ckpt_time_ > std::chrono::seconds(options_.checkpoint_every_seconds) &&
                 requested_clock > last_ckpt_round_;
  if (by_rounds || by_time) {
    ckpt_round_ = requested_clock;
    logger_->info("checkpoint due at round {}: holding the round until every worker reaches it", ckpt_round_);
  }
}

void Scheduler::MaybeStartCheckpoint() {
  if (ckpt_round_ == 0 || ckpt_running_ || clock_.MinClock() < ckpt_round_) return;
  ckpt_running_ = true;
  ckpt_started_ = Clock::now();
  ckpt_status_ = Status::Ok();
  std::string dir = options_.checkpoint_dir + "/round-" + std::to_string(ckpt_round_);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);  // an incomplete earlier attempt
  for (int s = 0; s < options_.num_servers; ++s) {
    Message m;
    m.header.type = MsgType::kCheckpoint;
    m.header.job_id = options_.job_id;
    m.header.auth = options_.auth;
    m.header.sender = "scheduler";
    m.header.request_id = next_request_id_++;
    m.header.meta = dir + "/shard-" + std::to_string(s);
    Status st = transport_->Send({"shard-" + std::to_string(s), ToFrames(m)});
    if (!st.ok()) {
      FinishCheckpoint(st.WithContext("checkpoint of shard " + std::to_string(s)));
      return;
    }
    ckpt_acks_[m.header.request_id] = s;
  }
}

void Scheduler::HandleServerReply(const std::string& peer, const Message& reply) {
  auto it = ckpt_acks_.find(reply.header.request_id);
  if (it == ckpt_acks_.end()) return;  // a late reply of an abandoned attempt
  Status s = StatusFromReply(reply.header);
  if (!s.ok() && ckpt_status_.ok()) ckpt_status_ = s.WithContext(peer);
  ckpt_acks_.erase(it);
  if (ckpt_acks_.empty()) FinishCheckpoint(ckpt_status_);
}

void Scheduler::FinishCheckpoint(const Status& status) {
  std::string dir = options_.checkpoint_dir + "/round-" + std::to_string(ckpt_round_);
  if (status.ok()) {
    nlohmann::json manifest;
    std::vector<uint64_t> clocks;
    for (int w = 0; w < options_.num_workers; ++w) clocks.push_back(clock_.Clock(w));
    manifest = {{"format", "metaps-job-checkpoint"}, {"version", 1}, {"round", ckpt_round_},
                {"job_id", options_.job_id},           {"servers", options_.num_servers},
                {"workers", options_.num_workers},     {"clocks", clocks},
                {"epoch", epoch_}};
    std::error_code ec;
    if (Status w = WriteFileAtomically(dir + "/manifest.json", manifest.dump(2) + "\n"); !w.ok()) {
      logger_->error("checkpoint of round {}: {}", ckpt_round_, w.ToString());
    }
    ++checkpoints_written_;
    last_ckpt_round_ = ckpt_round_;
    logger_->info("checkpoint of round {} written to {}", ckpt_round_, dir);
    // Keep the newest `checkpoint_keep`.
    std::vector<std::pair<uint64_t, std::string>> all;
    for (const auto& e : std::filesystem::directory_iterator(options_.checkpoint_dir, ec)) {
      std::string name = e.path().filename().string();
      if (name.rfind("round-", 0) == 0) all.emplace_back(std::stoull(name.substr(6)), e.path().string());
    }
    std::sort(all.rbegin(), all.rend());
    for (size_t i = options_.checkpoint_keep; i < all.size(); ++i) std::filesystem::remove_all(all[i].second, ec);
  } else {
    logger_->error("checkpoint of round {} failed: {}; training goes on", ckpt_round_, status.ToString());
  }
  last_ckpt_time_ = Clock::now();
  ckpt_running_ = false;
  ckpt_acks_.clear();
  ckpt_round_ = 0;
  auto held = std::move(ckpt_held_);
  ckpt_held_.clear();
  ReleaseClockWaiters(held);
}

Result<std::pair<uint64_t, std::string>> LatestCheckpoint(const std::string& dir) {
  std::error_code ec;
  std::pair<uint64_t, std::string> best{0, ""};
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("round-", 0) != 0 || !std::filesystem::exists(e.path() / "manifest.json")) continue;
    uint64_t r = std::stoull(name.substr(6));
    if (best.second.empty() || r > best.first) best = {r, e.path().string()};
  }
  if (best.second.empty()) return NotFound("no complete checkpoint under " + dir);
  return best;
}

void Scheduler::ReleaseFinalWaiters() {
  if (final_waiters_.empty() || clock_.MinClock() < options_.total_rounds) return;
  auto waiters = std::move(final_waiters_);
  final_waiters_.clear();
  for (const auto& [w, d] : waiters) Reply(d.peer, d.request, nlohmann::json{{"clock", options_.total_rounds}, {"stop", true}});
}

void Scheduler::CheckLiveness() {
  auto now = Clock::now();
  if (ckpt_running_ && now - ckpt_started_ > std::chrono::milliseconds(options_.checkpoint_timeout_ms)) {
    FinishCheckpoint(DeadlineExceeded("not every shard acknowledged the checkpoint in " +
                                      std::to_string(options_.checkpoint_timeout_ms) + " ms"));
  }
  auto timeout = std::chrono::milliseconds(options_.heartbeat_timeout_ms);
  for (auto& [key, n] : nodes_) {
    if (!n.alive || now - n.last_seen <= timeout) continue;
    if (n.role == "worker" && worker_done_[n.id]) continue;
    n.alive = false;
    ++epoch_;
    logger_->warn("{} {} missed heartbeats for {} ms: marked dead (epoch {})", n.role, n.id,
                  options_.heartbeat_timeout_ms, epoch_);
    if (n.role == "worker") {
      clock_waiters_.erase(n.id);
      final_waiters_.erase(n.id);
      Release(clock_.SetAlive(n.id, false));
      ReleaseFinalWaiters();
      MaybeStartCheckpoint();
    }
  }
}

nlohmann::json ServerStoreStats(const nlohmann::json& reported) {
  nlohmann::json kept = nlohmann::json::object();
  if (!reported.is_object()) return kept;
  for (const ServerStoreStat& stat : kServerStoreStats) {
    auto it = reported.find(stat.key);
    if (it != reported.end() && it->is_number_unsigned()) kept[stat.key] = *it;
  }
  return kept;
}

nlohmann::json Scheduler::BuildStatus() const {
  double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
  nlohmann::json workers = nlohmann::json::array(), servers = nlohmann::json::array();
  uint64_t tasks = 0, pulled = 0, pushed = 0, max_round = 0;
  double tps = 0, loss = 0;
  int reporting = 0;
  for (int w = 0; w < options_.num_workers; ++w) {
    const WorkerProgress& p = progress_[w];
    auto it = nodes_.find(NodeKey("worker", w));
    bool registered = it != nodes_.end();
    workers.push_back({{"id", w},
                       {"registered", registered},
                       {"alive", registered && it->second.alive},
                       {"done", static_cast<bool>(worker_done_[w])},
                       {"round", p.round},
                       {"tasks", p.tasks},
                       {"loss", p.loss},
                       {"tasks_per_s", p.tasks_per_s},
                       {"extra", p.extra}});
    tasks += p.tasks;
    max_round = std::max(max_round, p.round);
    pulled += p.rows_pulled;
    pushed += p.rows_pushed;
    if (!worker_done_[w]) tps += p.tasks_per_s;
    if (p.tasks > 0) {
      loss += p.loss;
      ++reporting;
    }
  }
  for (int s = 0; s < options_.num_servers; ++s) {
    auto it = nodes_.find(NodeKey("server", s));
    servers.push_back({{"id", s},
                       {"endpoint", server_endpoints_[s]},
                       {"alive", it != nodes_.end() && it->second.alive},
                       {"store", server_stats_[s]}});
  }
  nlohmann::json validation = progress_.empty() ? nlohmann::json() : progress_[0].extra;
  std::string state = finished_ ? "finished" : nodes_.empty() ? "waiting" : "running";
  return {{"job_id", options_.job_id},
          {"state", state},
          {"elapsed_s", elapsed},
          {"epoch", epoch_},
          {"consistency", ConsistencyName(options_.consistency)},
          {"staleness", options_.staleness},
          {"total_rounds", options_.total_rounds},
          {"min_round", clock_.MinClock()},
          {"round", max_round},
          {"tasks", tasks},
          {"tasks_per_s", tps},
          {"train_loss", reporting ? loss / reporting : 0.0},
          {"rows_pulled", pulled},
          {"rows_pushed", pushed},
          {"validation", validation},
          {"rejected_messages", rejected_},
          {"checkpoints", checkpoints_written_},
          {"last_checkpoint_round", last_ckpt_round_},
          {"workers", workers},
          {"servers", servers}};
}

void Scheduler::PublishSnapshot() {
  nlohmann::json st = BuildStatus();
  std::ostringstream m;
  m << "# HELP metaps_tasks_total Meta-training tasks processed by all workers.\n"
    << "# TYPE metaps_tasks_total counter\nmetaps_tasks_total " << st["tasks"].get<uint64_t>() << "\n"
    << "# HELP metaps_tasks_per_second Current task throughput of the live workers.\n"
    << "# TYPE metaps_tasks_per_second gauge\nmetaps_tasks_per_second " << st["tasks_per_s"].get<double>() << "\n"
    << "# TYPE metaps_rows_pulled_total counter\nmetaps_rows_pulled_total " << st["rows_pulled"].get<uint64_t>() << "\n"
    << "# TYPE metaps_rows_pushed_total counter\nmetaps_rows_pushed_total " << st["rows_pushed"].get<uint64_t>() << "\n"
    << "# HELP metaps_train_loss Mean query loss over the workers' last meta-batches.\n"
    << "# TYPE metaps_train_loss gauge\nmetaps_train_loss " << st["train_loss"].get<double>() << "\n"
    << "# TYPE metaps_min_round gauge\nmetaps_min_round " << st["min_round"].get<uint64_t>() << "\n"
    << "# TYPE metaps_membership_epoch gauge\nmetaps_membership_epoch " << epoch_ << "\n"
    << "# TYPE metaps_rejected_messages_total counter\nmetaps_rejected_messages_total " << rejected_ << "\n"
    << "# HELP metaps_node_alive 1 while a node's heartbeats arrive.\n# TYPE metaps_node_alive gauge\n";
  for (const auto& w : st["workers"]) {
    m << "metaps_node_alive{role=\"worker\",id=\"" << w["id"].get<int>() << "\"} " << (w["alive"].get<bool>() ? 1 : 0) << "\n";
  }
  for (const auto& s : st["servers"]) {
    m << "metaps_node_alive{role=\"server\",id=\"" << s["id"].get<int>() << "\"} " << (s["alive"].get<bool>() ? 1 : 0) << "\n";
  }
  // Each server's store, from its last heartbeat: one family per statistic, a sample per server
  // that has reported it.
  for (const ServerStoreStat& stat : kServerStoreStats) {
    m << "# HELP metaps_server_" << stat.metric << " " << stat.help << "\n# TYPE metaps_server_" << stat.metric << " "
      << (stat.counter ? "counter" : "gauge") << "\n";
    for (size_t s = 0; s < server_stats_.size(); ++s) {
      if (!server_stats_[s].contains(stat.key)) continue;
      m << "metaps_server_" << stat.metric << "{id=\"" << s << "\"} " << server_stats_[s][stat.key].get<uint64_t>() << "\n";
    }
  }
  m << "# TYPE metaps_job_finished gauge\nmetaps_job_finished " << (finished_ ? 1 : 0) << "\n";
  std::lock_guard<std::mutex> l(snapshot_mu_);
  status_snapshot_ = st.dump();
  metrics_snapshot_ = m.str();
}

std::string Scheduler::StatusJson() const {
  std::lock_guard<std::mutex> l(snapshot_mu_);
  return status_snapshot_;
}

std::string Scheduler::MetricsText() const {
  std::lock_guard<std::mutex> l(snapshot_mu_);
  return metrics_snapshot_;
}

void Scheduler::SaveState() {
  if (options_.state_file.empty()) return;
  nlohmann::json j;
  std::vector<uint64_t> clocks;
  for (int w = 0; w < options_.num_workers; ++w) clocks.push_back(clock_.Clock(w));
  std::vector<bool> done(worker_done_.begin(), worker_done_.end());
  j["clocks"] = clocks;
  j["done"] = done;
  j["epoch"] = epoch_;
  j["finished"] = finished_.load();
  if (Status w = WriteFileAtomically(options_.state_file, j.dump()); !w.ok()) {
    logger_->error("cannot save scheduler state: {}", w.ToString());
  }
}

void Scheduler::LoadState() {
  if (options_.state_file.empty() || !std::filesystem::exists(options_.state_file)) return;
  std::ifstream in(options_.state_file);
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) {
    logger_->error("scheduler state {} is unreadable; starting fresh", options_.state_file);
    return;
  }
  auto clocks = j.value("clocks", std::vector<uint64_t>{});
  auto done = j.value("done", std::vector<bool>{});
  for (int w = 0; w < options_.num_workers && w < static_cast<int>(clocks.size()); ++w) {
    clock_.Restore(w, clocks[w]);
    progress_[w].round = clocks[w];
  }
  for (int w = 0; w < options_.num_workers && w < static_cast<int>(done.size()); ++w) {
    worker_done_[w] = done[w];
    if (done[w]) (void)clock_.SetAlive(w, false);
  }
  epoch_ = j.value("epoch", uint64_t{1}) + 1;  // a restart starts a new membership epoch
  logger_->info("resumed scheduler state from {} (min round {})", options_.state_file, clock_.MinClock());
}

}  // namespace metaps::scheduler
