#include "ps/param_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <new>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/internal/profile_sink.h"
#include "common/memory_storage.h"
#include "common/prefetch.h"
#include "common/rocksdb_storage.h"
#include "common/shared_work.h"
#include "common/thread_name.h"
#include "ps/dedupe_window.h"
#include "ps/internal/direct_appender.h"
#include "ps/internal/log_checksum.h"
#include "ps/internal/row_format.h"
#include "ps/lineage.h"

namespace metaps::ps {

static_assert(std::endian::native == std::endian::little, "row and log formats assume little-endian hosts");

namespace {

namespace fs = std::filesystem;
using namespace internal::row_format;  // NOLINT: the on-disk row layout, shared with snapshot.cc

// ---- On-disk formats (docs/storage.md) -------------------------------------------------------

constexpr uint32_t kLogMagic = 0x3147'4c50;        // "PLG1": a push without an origin
constexpr uint32_t kLogMagicOrigin = 0x3247'4c50;  // "PLG2": a push with its origin (LogOrigin)
constexpr char kFormatKey[] = "format";
// metaps-ps-2 added PLG2 log records and meta/dedupe_window. A metaps-ps-1 store is read as is
// and its format key rewritten on open (its records are all PLG1).
constexpr char kFormatValue[] = "metaps-ps-2";
constexpr char kFormatValueV1[] = "metaps-ps-1";
constexpr char kDedupeWindowKey[] = "dedupe_window";
constexpr char kAppliedSeqKey[] = "applied_seq";
constexpr char kManifestName[] = "manifest.json";
constexpr char kPushLogDir[] = "pushlog";
constexpr char kLogModeKey[] = "log_mode";
constexpr char kLineageKey[] = "lineage";  // JSON (ps/lineage.h); a segment more per Open

// Header of a log record in the "log" space (key: big-endian sequence number), followed by
// n keys (u64) and n*dim summed gradients (f32).
struct LogHeader {
  uint32_t magic;
  uint32_t table_id;
  uint64_t step;
  uint32_t n;
  uint32_t dim;
};
static_assert(sizeof(LogHeader) == 24);

// In a PLG2 record, between the LogHeader and the keys: who sent the push, followed by
// sender_bytes bytes of the sender's name.
struct LogOrigin {
  uint64_t request_id;
  uint32_t sender_bytes;
  uint32_t reserved;
};
static_assert(sizeof(LogOrigin) == 16);

std::string SeqKey(uint64_t seq) {
  std::string k;
  AppendBigEndian64(&k, seq);
  return k;
}

// ---- Huge-page backed memory ---------------------------------------------------------------------
//
// The row cache and its index are read at random, a few lines per row, over hundreds of MB: with
// 4 KiB pages nearly every row costs a TLB miss (a page walk) on top of its cache misses. Blocks
// of 2 MiB and more are therefore mapped on their own (mmap), 2 MiB-aligned, and marked for
// transparent huge pages before any page is touched (a hint: where THP is off they are ordinary
// pages). They must not come from malloc: once glibc has raised its mmap threshold, a big block
// comes from the heap, often over pages already faulted in as 4 KiB pages, which the hint does
// not convert (measured: not one huge page in the row cache). Smaller blocks come from malloc.
constexpr size_t kHugePage = size_t{2} << 20;

inline size_t HugeRounded(size_t bytes) { return (bytes + kHugePage - 1) & ~(kHugePage - 1); }

inline void* AllocateMaybeHuge(size_t bytes) {
  if (bytes < kHugePage) return std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) & ~size_t{63});
  const size_t rounded = HugeRounded(bytes);
  // Map a huge page more than needed, then unmap the slack on both sides of the aligned block.
  void* m = mmap(nullptr, rounded + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(m);
  const uintptr_t aligned = (base + kHugePage - 1) & ~uintptr_t{kHugePage - 1};
  const uintptr_t head = aligned - base;  // the slack is kHugePage in all: head before, the rest after
  if (head > 0) munmap(m, head);
  if (head < kHugePage) munmap(reinterpret_cast<void*>(aligned + rounded), kHugePage - head);
  void* p = reinterpret_cast<void*>(aligned);
  (void)madvise(p, rounded, MADV_HUGEPAGE);
  return p;
}

// Frees a block of `bytes` from AllocateMaybeHuge.
inline void FreeMaybeHuge(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes < kHugePage) {
    std::free(p);
  } else {
    munmap(p, HugeRounded(bytes));
  }
}

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = AllocateMaybeHuge(n * sizeof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) { FreeMaybeHuge(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
};

struct HugeDeleter {
  size_t bytes = 0;  // as passed to AllocateMaybeHuge
  void operator()(std::byte* p) const { FreeMaybeHuge(p, bytes); }
};

// ---- Flat open-addressing map Key -> uint32 (linear probing, backward-shift deletion) ----------

class KeyIndex {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  KeyIndex() { Rehash(16); }
  size_t size() const { return size_; }
  size_t capacity() const { return entries_.size(); }

  uint32_t Find(Key k) const { return FindFrom(k, Home(k)); }
  // Find, given Home(k): a loop that prefetched the entry has already hashed the key.
  uint32_t FindFrom(Key k, size_t home) const {
    size_t i = home;
    while (true) {
      const Entry& e = entries_[i];
      if (e.value == kNone) return kNone;
      if (e.key == k) return e.value;
      i = (i + 1) & mask_;
    }
  }
  size_t Home(Key k) const { return Mix64(k) & mask_; }
  void PrefetchHome(size_t home) const { PrefetchLine(&entries_[home]); }

  // Returns the existing value, or inserts `v` and returns kNone.
  uint32_t FindOrInsert(Key k, uint32_t v) {
    if ((size_ + 1) * 10 > entries_.size() * 7) Rehash(entries_.size() * 2);
    size_t i = Home(k);
    while (true) {
      Entry& e = entries_[i];
      if (e.value == kNone) {
        e.key = k;
        e.value = v;
        ++size_;
        return kNone;
      }
      if (e.key == k) return e.value;
      i = (i + 1) & mask_;
    }
  }

  void Erase(Key k) {
    size_t i = Home(k);
    while (true) {
      if (entries_[i].value == kNone) return;
      if (entries_[i].key == k) break;
      i = (i + 1) & mask_;
    }
    size_t j = i;
    while (true) {
      j = (j + 1) & mask_;
      if (entries_[j].value == kNone) break;
      size_t h = Home(entries_[j].key);
      // Move entry j back to the hole at i unless its home lies cyclically in (i, j].
      bool stays = (i <= j) ? (h > i && h <= j) : (h > i || h <= j);
      if (!stays) {
        entries_[i] = entries_[j];
        i = j;
      }
    }
    entries_[i].value = kNone;
    --size_;
  }

  // Empties the map, keeping a capacity suited to `expected` entries.
  void Reset(size_t expected) {
    size_t want = std::bit_ceil(std::max<size_t>(16, expected * 2));
    if (entries_.size() < want || entries_.size() > 4 * want) {
      entries_.clear();
      Rehash(want);
    } else {
      for (auto& e : entries_) e.value = kNone;
      size_ = 0;
    }
  }

 private:
  struct Entry {
    Key key;
    uint32_t value;
  };
  void Rehash(size_t cap) {
    std::vector<Entry, HugePageAllocator<Entry>> old;
    old.swap(entries_);
    entries_.assign(cap, Entry{0, kNone});
    mask_ = cap - 1;
    size_ = 0;
    for (const Entry& e : old) {
      if (e.value != kNone) FindOrInsert(e.key, e.value);
    }
  }
  std::vector<Entry, HugePageAllocator<Entry>> entries_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Looks up keys[begin, end) in order, each key's index entry prefetched kAhead keys before its
// probe and each key hashed once (the homes hashed for the prefetch wait in a ring for the probe).
// Find(i) must be called for i = begin, begin + 1, ...
template <size_t kAhead>
class IndexProber {
 public:
  IndexProber(const KeyIndex& index, std::span<const Key> keys, size_t begin, size_t end)
      : index_(index), keys_(keys), end_(end) {
    for (size_t i = begin; i < std::min(end, begin + kAhead); ++i) Stage(i);
  }
  uint32_t Find(size_t i) {
    if (i + kAhead < end_) Stage(i + kAhead);
    return index_.FindFrom(keys_[i], home_[i % kRing]);
  }

 private:
  static constexpr size_t kRing = std::bit_ceil(kAhead + 1);
  void Stage(size_t i) {
    home_[i % kRing] = index_.Home(keys_[i]);
    index_.PrefetchHome(home_[i % kRing]);
  }
  const KeyIndex& index_;
  std::span<const Key> keys_;
  size_t end_;
  size_t home_[kRing];
};

// ---- Cache slots ---------------------------------------------------------------------------------

// At the end of every cache slot, after the row's dim weights and its optimizer state. (Weights
// first: a slot starts on a cache line where the stride allows, so a pull reads only the weights'
// own lines.)
struct SlotMeta {
  Key key;
  uint64_t update_count;
  uint64_t last_step;
  uint64_t last_seq;
  uint32_t pin;  // the op epoch that needs this row resident
  uint8_t flags;
  uint8_t pad[3];
};
static_assert(sizeof(SlotMeta) == 40);

// The header follows the weights and state at an 8-byte aligned offset.
inline size_t MetaOffset(uint32_t row_floats) { return (size_t{row_floats} * 4 + 7) & ~size_t{7}; }

// The CLOCK reference bit is not a flag: it lives in Table::ref_bits, so that a pull, which sets
// it, touches neither the slot's metadata line nor dirties one.
constexpr uint8_t kUsed = 1, kDirty = 2, kInflight = 4;

// Bytes charged to the cache budget per row besides the slot: index entry at load <= 0.7, and
// free-list/clock bookkeeping.
constexpr uint64_t kIndexOverheadBytes = 32;

struct DirtyRef {
  uint32_t table;
  uint32_t slot;
};

// Stage timing for performance work: on when the environment variable METAPS_PROFILE is set (to
// a file to append to, or to "1" for stderr). Totals are printed about every 2 seconds.
class StageProfile {
 public:
  enum Stage {
    kPullLock, kPullResident, kPullMiss, kPullCopy,
    kPushThrottle, kPushDedupe, kPushLock, kPushResident, kPushMiss, kPushLog, kPushApply,
    kLogAppend, kLogSync,  // big pushes' records, appended on the log thread; its group fdatasync
    kMissKeys, kMultiGet, kInit, kEvict, kWbSort, kWbCopy, kWbLockWait, kWbWrite, kWbCommit, kWbTotal, kCount
  };
  static constexpr const char* kNames[kCount] = {
      "pull.lock", "pull.resident", "pull.miss", "pull.copy",
      "push.throttle", "push.dedupe", "push.lock", "push.resident", "push.miss", "push.log", "push.apply",
      "log.append", "log.sync",
      "miss.keys", "miss.multiget", "miss.init", "evict", "wb.sort", "wb.copy", "wb.lockwait", "wb.write", "wb.commit",
      "wb.total"};
  using Sink = metaps::internal::ProfileSink;
  StageProfile() : sink_(Sink::FromEnv()), on_(sink_.on), out_(sink_.out), last_(on_ ? Sink::Now() : 0) {}
  bool on() const { return on_; }
  static uint64_t Now() { return Sink::Now(); }
  static uint64_t CpuNow() { return Sink::ThreadCpuNow(); }
  void Add(Stage s, uint64_t ns, uint64_t n = 1, uint64_t cpu_ns = 0) {
    cpu_[s].fetch_add(cpu_ns, std::memory_order_relaxed);
    ns_[s].fetch_add(ns, std::memory_order_relaxed);
    count_[s].fetch_add(n, std::memory_order_relaxed);
  }
  void Op(bool push, uint64_t rows) {
    (push ? push_ops_ : pull_ops_).fetch_add(1, std::memory_order_relaxed);
    (push ? push_rows_ : pull_rows_).fetch_add(rows, std::memory_order_relaxed);
    uint64_t now = Now();
    if (now - last_ > 2'000'000'000ull) Print(now);
  }

 private:
  void Print(uint64_t now) {
    const double secs = (now - last_) / 1e9;
    last_ = now;
    const uint64_t pulls = pull_ops_.exchange(0), pushes = push_ops_.exchange(0);
    const uint64_t pull_rows = pull_rows_.exchange(0), push_rows = push_rows_.exchange(0);
    std::fprintf(out_, "[store profile %.1fs] pulls %lu (%lu rows) pushes %lu (%lu rows)\n", secs,
                 (unsigned long)pulls, (unsigned long)pull_rows, (unsigned long)pushes, (unsigned long)push_rows);
    for (int i = 0; i < kCount; ++i) {
      uint64_t ns = ns_[i].exchange(0), c = count_[i].exchange(0), cpu = cpu_[i].exchange(0);
      if (c == 0) continue;
      const bool is_push = i >= kPushThrottle && i <= kLogSync;
      const uint64_t ops = i <= kPullCopy ? pulls : is_push ? pushes : 0;
      std::fprintf(out_, "  %-14s total %8.1f ms (cpu %8.1f)  per-op %8.3f ms (cpu %8.3f)  count %lu\n", kNames[i],
                   ns / 1e6, cpu / 1e6, ops ? ns / 1e6 / ops : ns / 1e6 / c, ops ? cpu / 1e6 / ops : cpu / 1e6 / c,
                   (unsigned long)c);
    }
    std::fflush(out_);
  }
  Sink sink_;  // before the members initialized from it
  bool on_ = false;
  FILE* out_ = nullptr;
  uint64_t last_ = 0;
  std::atomic<uint64_t> ns_[kCount] = {}, count_[kCount] = {}, cpu_[kCount] = {};
  std::atomic<uint64_t> pull_ops_{0}, push_ops_{0}, pull_rows_{0}, push_rows_{0};
};

// Times a scope into a StageProfile when profiling is on.
class StageTimer {
 public:
  StageTimer(StageProfile& p, StageProfile::Stage s)
      : p_(p), s_(s), t0_(p.on() ? StageProfile::Now() : 0), c0_(p.on() ? StageProfile::CpuNow() : 0) {}
  ~StageTimer() { Stop(); }
  void Stop() {
    if (t0_ == 0) return;
    p_.Add(s_, StageProfile::Now() - t0_, 1, StageProfile::CpuNow() - c0_);
    t0_ = 0;
  }

 private:
  StageProfile& p_;
  StageProfile::Stage s_;
  uint64_t t0_, c0_;
};

// ---- The push log as segment files ---------------------------------------------------------------

// The push log: segment files dir/<first seq, 20 digits>.seg, each
//   {u32 magic "PSLG", u32 version 2, u64 nonce, u64 0}   (the segment header, kHeaderBytes)
// followed by records
//   {u32 magic, u32 payload bytes, u64 seq, u64 checksum(nonce, seq, payload)} payload
// (checksum: XXH3-64 seeded with the nonce in version 2; version 1 segments, written by earlier
// builds with the same layout and the multiply-mix checksum, are still replayed: see
// ps/internal/log_checksum.h)
// where payload is a LogHeader, its keys and its gradients. One push = one pwritev of one record
// at the segment's write offset: after it returns the record is in the OS page cache and survives
// the death of the process; with `sync` it is fdatasync'ed too.
//
// Segments are recycled. A segment holds up to `segment_bytes` (a bigger record gets one to
// itself); a full one is closed and the next starts. A write-back starts a new segment too
// (Rotate) and, once its cut is durable in storage, retires the segments before it (DropThrough):
// they are renamed to dir/spare-<n> instead of deleted while segments and spares together number
// at most `max_files`, and the next segment
// is a spare overwritten from its start. Its pages are still in the page cache and its blocks on
// disk: a write into it is a plain copy, where appending to a new file pays for allocating and
// mapping pages on every push (measured: 0.3-1.8 ms against 0.08-0.4 ms per 1.3 MB record).
//
// A reused file still holds its previous records after the new ones. The nonce, new for every
// start of a segment and mixed into every record's checksum, makes them invalid: a segment's
// records end at the first record that does not check. The segment after it must go on with
// the next seq, so a bad record in the middle of the log is still found (DataLoss), as is one
// whose seq does not follow its predecessor's although its checksum holds.
//
// Segments written by the oldest versions (no header: records from offset 0, checksum(seq, payload),
// appended with O_APPEND) are still replayed; the first new segment after them has a header.
class FileLog {
 public:
  static constexpr uint32_t kRecordMagic = 0x524c5350;   // "PSLR"
  static constexpr uint32_t kSegmentMagic = 0x474c5350;  // "PSLG"
  static constexpr uint32_t kSegmentVersion = 2;  // written; 1 is still read (internal::RecordChecksum)
  struct RecordHeader {
    uint32_t magic;
    uint32_t bytes;
    uint64_t seq;
    uint64_t checksum;
  };
  struct SegmentHeader {
    uint32_t magic;
    uint32_t version;
    uint64_t nonce;
    uint64_t reserved;
  };
  static constexpr off_t kHeaderBytes = sizeof(SegmentHeader);
  // Staging memory for direct writes: a batch of up to ~5 records of 10k rows of 32 floats is
  // written with one call.
  static constexpr size_t kDirectStageBytes = size_t{8} << 20;

  // The spares go with the log: they hold nothing needed, and a deleted file's dirty pages are
  // dropped, not written to disk by the kernel some seconds later (after a kill, the next Open
  // takes them over).
  ~FileLog() {
    if (fd_ >= 0) ::close(fd_);
    for (const auto& spare : spares_) ::unlink(spare.c_str());
  }

  // `direct`: segments are written with O_DIRECT where the file system takes it (else buffered).
  static Result<std::unique_ptr<FileLog>> Open(const std::string& dir, bool sync, uint64_t segment_bytes,
                                               size_t max_files, bool direct = false) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Internal("cannot create push log dir " + dir + ": " + ec.message());
    auto log = std::unique_ptr<FileLog>(new FileLog());
    log->dir_ = dir;
    log->sync_ = sync;
    log->direct_ = direct;
    log->segment_bytes_ = std::max<uint64_t>(segment_bytes, 4096);
    log->max_files_ = max_files;
    std::random_device rd;
    log->nonce_state_ = (uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(::getpid());
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.size() == 24 && name.ends_with(".seg")) {
        log->segments_.push_back(std::stoull(name.substr(0, 20)));
      } else if (name.starts_with("spare-")) {
        log->spares_.push_back(e.path().string());
        log->spare_counter_ = std::max<uint64_t>(log->spare_counter_, std::strtoull(name.c_str() + 6, nullptr, 10));
      }
    }
    if (ec) return Internal("cannot list " + dir + ": " + ec.message());
    std::sort(log->segments_.begin(), log->segments_.end());
    return log;
  }

  // Calls f(seq, payload) for every intact record with seq > after, in order. The records of a
  // segment end at its first bad record (a torn write, or an earlier life of a recycled file);
  // the log goes on in the next segment, which must continue the seqs, and only the last
  // segment may hold none (else DataLoss). In a segment of the old format, a bad record before
  // the end is DataLoss except in the last segment, where it is a torn tail that is cut off.
  Status Replay(uint64_t after, const std::function<Status(uint64_t, std::string_view)>& f) {
    std::string buf;
    uint64_t last_seq = 0;
    const std::vector<uint64_t> segments = segments_;
    for (size_t i = 0; i < segments.size(); ++i) {
      const std::string path = SegmentPath(segments[i]);
      // The next two segments are read ahead by the kernel while this one is replayed (written
      // with direct I/O, they are on disk, not in the page cache); each is asked for once.
      for (size_t j = i == 0 ? 1 : i + 2; j < std::min(segments.size(), i + 3); ++j) ReadAhead(SegmentPath(segments[j]));
      METAPS_RETURN_IF_ERROR(ReadFileInto(path, &buf));
      SegmentHeader sh{};
      if (buf.size() >= sizeof(sh)) std::memcpy(&sh, buf.data(), sizeof(sh));
      const bool keyed = sh.magic == kSegmentMagic;
      if (keyed && (sh.version < 1 || sh.version > kSegmentVersion)) {
        return DataLoss("push log segment " + path + " has format version " + std::to_string(sh.version) +
                        "; this build reads versions 1 to " + std::to_string(kSegmentVersion));
      }
      const uint32_t version = keyed ? sh.version : 0;
      size_t pos = keyed ? sizeof(sh) : 0;
      bool first_in_segment = true;
      while (pos < buf.size()) {
        RecordHeader h{};
        bool ok = buf.size() - pos >= sizeof(h);
        if (ok) {
          std::memcpy(&h, buf.data() + pos, sizeof(h));
          ok = h.magic == kRecordMagic && buf.size() - pos - sizeof(h) >= h.bytes;
        }
        if (ok) ok = internal::RecordChecksum(version, sh.nonce, h.seq, buf.data() + pos + sizeof(h), h.bytes) == h.checksum;
        const bool follows = last_seq == 0 || h.seq == last_seq + 1;
        if (ok && !follows && (keyed || i + 1 != segments.size())) {
          // An intact record of this segment's own life that does not continue the log: records
          // are missing before it.
          return DataLoss("push log segment " + path + " goes on at seq " + std::to_string(h.seq) + " after seq " +
                          std::to_string(last_seq) + (first_in_segment ? " (the previous segment ends early)" : ""));
        }
        if (!ok || !follows) {
          if (keyed) break;  // the end of this segment's records
          if (i + 1 != segments.size()) {
            return DataLoss("push log segment " + path + " is corrupt at offset " + std::to_string(pos));
          }
          torn_bytes_ += buf.size() - pos;
          if (::truncate(path.c_str(), static_cast<off_t>(pos)) != 0) {
            return Internal("cannot truncate the torn tail of " + path);
          }
          break;
        }
        first_in_segment = false;
        last_seq = h.seq;
        if (h.seq > after) {
          METAPS_RETURN_IF_ERROR(f(h.seq, std::string_view(buf.data() + pos + sizeof(h), h.bytes)));
        }
        pos += sizeof(h) + h.bytes;
      }
      // A segment is started only for a record about to be written, and the first one after a
      // restart is started over rather than left empty: one without a valid record before the
      // last lost its records.
      if (keyed && first_in_segment && i + 1 != segments.size()) {
        return DataLoss("push log segment " + path + " holds no intact record, but later segments do");
      }
    }
    return Status::Ok();
  }

  // Closes the current segment and starts one whose first record will be `next_seq`: a spare
  // if there is one, else a new file. After a replay, a last segment already named `next_seq`
  // holds no valid record and is started over.
  Status Rotate(uint64_t next_seq) {
    if (fd_ >= 0 && segments_.back() == next_seq && off_ == kHeaderBytes) return Status::Ok();  // still empty
    // The closing segment's staged records go first: the next header is staged in their place.
    if (fd_ >= 0) METAPS_RETURN_IF_ERROR(FlushStaged());
    const std::string path = SegmentPath(next_seq);
    const bool exists = !segments_.empty() && segments_.back() == next_seq;
    const SegmentHeader sh{kSegmentMagic, kSegmentVersion, NextNonce(), 0};
    int fd = -1;
    bool reused = false;
    bool direct = false;  // whether fd was opened with O_DIRECT
    if (!exists && !spares_.empty()) {
      // The new header goes in before the rename: under its segment name, a spare never shows
      // its previous life's nonce, so none of its old records can pass for this segment's.
      const std::string spare = spares_.back();
      spares_.pop_back();
      fd = OpenSegment(spare, O_WRONLY | O_CLOEXEC, &direct);
      if (fd >= 0 && (!WriteHeader(fd, direct, sh).ok() || (sync_ && ::fdatasync(fd) != 0) ||
                      ::rename(spare.c_str(), path.c_str()) != 0)) {
        ::close(fd);
        fd = -1;
      }
      if (fd < 0) ::unlink(spare.c_str());  // a spare that cannot be reused: a new file instead
      reused = fd >= 0;
    }
    if (fd < 0) {
      fd = OpenSegment(path, O_WRONLY | O_CREAT | O_CLOEXEC, &direct);
      if (fd < 0) return Internal("cannot create push log segment " + path + ": " + std::strerror(errno));
      Status ws = WriteHeader(fd, direct, sh);
      if (ws.ok() && sync_ && ::fdatasync(fd) != 0) ws = Internal(std::string("fsync: ") + std::strerror(errno));
      if (!ws.ok()) {
        ::close(fd);
        return ws.WithContext("starting push log segment " + path);
      }
    }
    if (fd_ >= 0) {
      // Records of the closing segment still waiting for a group sync.
      if (Status ss = Sync(); !ss.ok()) {
        ::close(fd);
        return ss;
      }
    }
    ++(reused ? reused_ : created_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
    fd_direct_.store(direct, std::memory_order_relaxed);
    off_ = kHeaderBytes;
    nonce_ = sh.nonce;
    if (!exists) segments_.push_back(next_seq);
    if (sync_) SyncDir();
    return Status::Ok();
  }

  // Appends one record made of `parts`. REQUIRES: Rotate was called. A failed append leaves the
  // write offset where the record began, so the next record overwrites whatever part of it
  // reached the file. With `sync` (the log's sync option) and sync_now false, the record is
  // durable only after the next Sync() (or a Rotate, which syncs the segment it closes): the log
  // thread syncs a batch of records at once (group commit).
  Status Append(uint64_t seq, std::initializer_list<std::pair<const void*, size_t>> parts, bool sync_now = true) {
    size_t total = 0;
    for (const auto& part : parts) total += part.second;
    if (total > UINT32_MAX) return InvalidArgument("push too large for one log record");
    const size_t record = sizeof(RecordHeader) + total;
    // A full segment is closed first: the record's checksum takes the nonce of the one it goes in.
    if (off_ > kHeaderBytes && static_cast<uint64_t>(off_) + record > segment_bytes_) {
      METAPS_RETURN_IF_ERROR(Rotate(seq).WithContext("starting the next push log segment"));
    }
    RecordHeader h{kRecordMagic, static_cast<uint32_t>(total), seq, 0};
    internal::Xxh3Checksum c(nonce_);  // internal::RecordChecksum of version kSegmentVersion
    c.Update(&seq, 8);
    const bool direct = writing_direct();
    char* dst = nullptr;  // where the record is staged for a direct write, if it fits the stage
    if (direct) {
      dst = appender_->Reserve(record);
      if (dst == nullptr && appender_->staged() > 0) {
        METAPS_RETURN_IF_ERROR(FlushStaged());
        dst = appender_->Reserve(record);
      }
    }
    const off_t start = off_;
    if (dst != nullptr) {
      // Staged and checksummed in one pass: each piece is hashed from the stage right after its
      // copy, while it is still in the core's cache. Written by Sync (or a later FlushStaged).
      char* p = dst + sizeof(h);
      for (const auto& [src, size] : parts) {
        constexpr size_t kPiece = 64 << 10;
        for (size_t done = 0; done < size; done += kPiece) {
          const size_t n = std::min(kPiece, size - done);
          std::memcpy(p, static_cast<const char*>(src) + done, n);
          c.Update(p, n);
          p += n;
        }
      }
      h.checksum = c.Finish();
      std::memcpy(dst, &h, sizeof(h));
    } else {
      iovec iov[8];
      int n = 1;
      for (const auto& [p, size] : parts) {
        c.Update(p, size);
        iov[n++] = iovec{const_cast<void*>(p), size};
      }
      h.checksum = c.Finish();
      iov[0] = iovec{&h, sizeof(h)};
      METAPS_RETURN_IF_ERROR((direct ? appender_->Append(iov, n) : WriteAll(fd_, iov, n, off_)).WithContext("push log"));
    }
    unsynced_ = sync_;
    off_ = start + static_cast<off_t>(record);
    if (sync_now) {
      if (Status ss = Sync(); !ss.ok()) {
        off_ = start;
        return ss;
      }
    }
    return Status::Ok();
  }

  // Makes the records appended with sync_now false durable: writes those still staged (direct
  // I/O), then fdatasync with `sync`.
  Status Sync() {
    METAPS_RETURN_IF_ERROR(FlushStaged());
    if (!unsynced_) return Status::Ok();
    if (::fdatasync(fd_) != 0) return Internal(std::string("push log fsync failed: ") + std::strerror(errno));
    ++syncs_;
    unsynced_ = false;
    return Status::Ok();
  }
  bool sync_enabled() const { return sync_; }
  uint64_t fsyncs() const { return syncs_; }

  // Retires the segments that hold only records <= cut (never the current one): kept as spares
  // while the log's files number at most max_files, deleted beyond.
  void DropThrough(uint64_t cut) {
    while (segments_.size() > 1 && segments_[1] <= cut + 1) {
      const std::string path = SegmentPath(segments_.front());
      bool kept = false;
      // Renaming a retired segment to a spare leaves the number of log files as it is: they are
      // all kept, up to max_files_ (a log that outgrew it, behind a slow write-back, shrinks back).
      if (segments_.size() + spares_.size() <= max_files_) {
        const std::string spare = dir_ + "/spare-" + std::to_string(++spare_counter_);
        kept = ::rename(path.c_str(), spare.c_str()) == 0;
        if (kept) spares_.push_back(spare);
      }
      if (!kept) ::unlink(path.c_str());
      segments_.erase(segments_.begin());
    }
  }

  uint64_t torn_bytes() const { return torn_bytes_; }
  uint64_t segments_created() const { return created_; }
  uint64_t segments_reused() const { return reused_; }
  // Whether the current segment is written with direct I/O (read by Stats).
  bool writing_direct() const { return fd_direct_.load(std::memory_order_relaxed); }

 private:
  FileLog() = default;
  std::string SegmentPath(uint64_t first) const {
    char name[32];
    std::snprintf(name, sizeof(name), "%020llu.seg", static_cast<unsigned long long>(first));
    return dir_ + "/" + name;
  }
  void SyncDir() {
    int d = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      (void)::fsync(d);
      ::close(d);
    }
  }
  uint64_t NextNonce() {
    nonce_state_ += 0x9e3779b97f4a7c15ULL;
    return Mix64(nonce_state_);
  }

  static void ReadAhead(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
    ::close(fd);
  }
  // Writes all of iov[0..n) at offset `at`. pwritev may write less than asked (e.g. a signal):
  // it goes on until all is written or a call fails. (iov is consumed.)
  static Status WriteAll(int fd, iovec* iov, int n, off_t at) {
    int first = 0;
    while (first < n) {
      ssize_t w = ::pwritev(fd, iov + first, n - first, at);
      if (w < 0) {
        if (errno == EINTR) continue;
        return Internal(std::string("write failed: ") + std::strerror(errno));
      }
      at += w;
      size_t left = static_cast<size_t>(w);
      while (first < n && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (first < n) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    return Status::Ok();
  }
  // Writes the direct stream's staged records. On failure the write offset goes back to where
  // the first of them began.
  Status FlushStaged() {
    if (!writing_direct() || appender_->staged() == 0) return Status::Ok();
    const size_t n = appender_->staged();
    if (Status s = appender_->Flush(); !s.ok()) {
      off_ -= static_cast<off_t>(n);
      return s.WithContext("push log");
    }
    return Status::Ok();
  }
  // A direct segment's header is its stream's start (the rest of its first block zeroed: the
  // previous life's records there are gone, which a spare's records may be).
  Status WriteHeader(int fd, bool direct, const SegmentHeader& sh) {
    if (direct) return appender_->Start(fd, &sh, sizeof(sh));
    iovec iov{const_cast<SegmentHeader*>(&sh), sizeof(sh)};
    return WriteAll(fd, &iov, 1, 0);
  }
  // Opens a segment file, with O_DIRECT if wanted and the file system takes it. A refusal
  // (EINVAL: tmpfs before Linux 6.6, some FUSE and network file systems) turns direct writes
  // off for the rest of the log's life.
  int OpenSegment(const std::string& path, int flags, bool* direct) {
    *direct = false;
    if (direct_ && !appender_) {
      appender_ = std::make_unique<internal::DirectAppender>(kDirectStageBytes);
      if (!appender_->ok()) direct_ = false;
    }
    if (direct_) {
      int fd = ::open(path.c_str(), flags | O_DIRECT, 0644);
      if (fd >= 0) {
        *direct = true;
        return fd;
      }
      if (errno != EINVAL) return fd;
      direct_ = false;
    }
    return ::open(path.c_str(), flags, 0644);
  }

  std::string dir_;
  bool sync_ = false;
  bool direct_ = false;     // direct writes wanted (and, once refused, given up)
  // The current segment is written through appender_ (atomic: Stats reads it).
  std::atomic<bool> fd_direct_{false};
  std::unique_ptr<internal::DirectAppender> appender_;
  uint64_t segment_bytes_ = 0;
  size_t max_files_ = 0;  // segments and spares together
  int fd_ = -1;
  off_t off_ = 0;                   // where the next record goes in the current segment
  uint64_t nonce_ = 0;              // the current segment's
  uint64_t nonce_state_ = 0;
  std::vector<uint64_t> segments_;  // first seq of each segment, ascending
  std::vector<std::string> spares_;
  uint64_t spare_counter_ = 0;
  uint64_t torn_bytes_ = 0;
  // Segments started from a new file / from a spare (read by Stats while the log thread appends).
  std::atomic<uint64_t> created_{0}, reused_{0};
  std::atomic<uint64_t> syncs_{0};  // fdatasync calls for records (with `sync`)
  bool unsynced_ = false;           // records appended since the last sync (with `sync`)
};

// Appends big pushes' log records to the FileLog on its own thread ("ps-log-side"), one after
// the other in seq order, while the request thread applies the push and goes on to its next
// request: a push's reply waits until durable() reaches it (ParamStore::PushDeferred), not the
// request thread. It also keeps the store's durable sequence number for records written by the
// other paths (MarkDurable).
//
// Threading: Enqueue, Drain and MarkDurable are called with the store's mu held, which orders
// them; durable(), WaitDurable() and error() from any thread. While records are queued only the
// log thread touches the FileLog; once Drain() has returned, and as long as mu stays held (no
// record can be queued), the caller may use it. The log thread never takes mu.
//
// A failed append stops it for good: the records queued behind it are dropped (the log must
// not go on past a gap), durable() stays where it was, and error() says why.
class LogAppender {
 public:
  struct Record {
    uint64_t seq = 0;
    std::string head;  // the LogHeader; in a PLG2 record also the LogOrigin and the sender name
    const void* keys = nullptr;
    size_t key_bytes = 0;
    const void* grads = nullptr;
    size_t grad_bytes = 0;
    std::shared_ptr<const void> hold;  // keeps keys and grads alive until appended
  };
  // At most this many records wait (each holds its request's buffers, ~1.4 MB for 10k rows of
  // 32 floats); Enqueue blocks beyond.
  static constexpr size_t kMaxQueued = 4;

  explicit LogAppender(StageProfile& prof) : prof_(prof) {}
  ~LogAppender() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  LogAppender(const LogAppender&) = delete;
  LogAppender& operator=(const LogAppender&) = delete;

  // Not OK once an append failed: the record was not queued.
  Status Enqueue(FileLog* log, Record r) {
    std::unique_lock<std::mutex> l(mu_);
    if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
    space_cv_.wait(l, [&] { return queue_.size() < kMaxQueued || !error_.ok(); });
    if (!error_.ok()) return error_;
    log_ = log;
    queue_.push_back(std::move(r));
    work_cv_.notify_one();
    return Status::Ok();
  }
  // Waits until nothing is queued or being appended; returns the failure, if an append failed.
  Status Drain() {
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [&] { return (queue_.empty() && !busy_) || !error_.ok(); });
    return error_;
  }
  // Records up to `seq` are durable (written by the caller itself with nothing queued, or by
  // the log thread).
  void MarkDurable(uint64_t seq) {
    {
      std::lock_guard<std::mutex> l(mu_);
      durable_.store(seq, std::memory_order_release);
    }
    done_cv_.notify_all();
  }
  // The hook called on the log thread, with no lock held, after each record it makes durable and
  // after an append fails (ParamStore::SetDurableHook). Once SetHook returns, the old hook is not
  // called again: it waits for the batch being appended.
  void SetHook(std::function<void()> hook) {
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [&] { return !busy_; });
    hook_ = std::move(hook);
  }
  uint64_t durable() const { return durable_.load(std::memory_order_acquire); }
  Status WaitDurable(uint64_t seq) const {
    if (durable() >= seq) return Status::Ok();
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [&] { return durable() >= seq || !error_.ok(); });
    return durable() >= seq ? Status::Ok() : error_;
  }
  Status error() const {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
  }

 private:
  // Takes every queued record at once. Without `sync` each is durable once written (to the page
  // cache, or with direct I/O to the device); with it, the batch is written (with direct I/O,
  // in one call) and made durable by one fdatasync after the last record (group commit: pushes
  // that queue up while a write or sync runs share the next one).
  void Loop() {
    NameThisThread("ps-log-side");
    std::vector<Record> batch;
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      work_cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      batch.clear();
      while (!queue_.empty()) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      busy_ = true;
      FileLog* log = log_;
      const std::function<void()> hook = hook_;
      l.unlock();
      space_cv_.notify_all();
      Status s;
      uint64_t written = 0;
      // Buffered without `sync`, each record is durable once Append returns (in the page cache)
      // and its push is acknowledged at once. Direct, the batch's records are staged and
      // written with one call (each write waits for the device: one per record would cap the
      // pushes per second at the device's latency); with `sync` made durable together.
      const bool each = !log->sync_enabled() && !log->writing_direct();
      for (Record& r : batch) {
        {
          StageTimer timer(prof_, StageProfile::kLogAppend);
          s = log->Append(r.seq, {{r.head.data(), r.head.size()}, {r.keys, r.key_bytes}, {r.grads, r.grad_bytes}},
                          /*sync_now=*/each);
        }
        if (!s.ok()) break;
        written = r.seq;
        if (each) {
          MarkDurable(written);
          if (hook) hook();
        }
      }
      if (s.ok() && !each) {
        StageTimer timer(prof_, StageProfile::kLogSync);
        s = log->Sync();
        if (s.ok()) {
          MarkDurable(written);
          if (hook) hook();
        }
      }
      batch.clear();  // the requests' buffers go now, not under the lock
      l.lock();
      if (!s.ok()) {
        error_ = s;
        queue_.clear();
        done_cv_.notify_all();
        space_cv_.notify_all();
        if (hook) {  // after error_ is set (the hook's caller looks for it), before busy_ clears
          l.unlock();
          hook();
          l.lock();
        }
      }
      busy_ = false;
      done_cv_.notify_all();
      space_cv_.notify_all();
    }
  }
  StageProfile& prof_;
  mutable std::mutex mu_;
  mutable std::condition_variable done_cv_;
  std::condition_variable work_cv_, space_cv_;
  std::deque<Record> queue_;
  std::function<void()> hook_;
  FileLog* log_ = nullptr;
  bool busy_ = false, stop_ = false;
  Status error_;
  std::atomic<uint64_t> durable_{0};
  std::thread thread_;
};

}  // namespace

struct ParamStore::Impl {
  struct Table {
    TableSpec spec;
    uint32_t id = 0;
    uint32_t index = 0;  // position in tables
    std::unique_ptr<Optimizer> opt;
    uint32_t state_floats = 0;
    uint32_t row_floats = 0;      // dim + state_floats
    uint64_t init_seed = 0;       // Hash64(name)
    size_t stride = 0;            // bytes per slot
    size_t meta_offset = 0;       // of the SlotMeta in a slot: after the row, 8-byte aligned
    uint64_t charge = 0;          // bytes charged per cached row
    uint32_t chunk_shift = 0;     // slots per chunk = 1 << chunk_shift
    std::vector<std::unique_ptr<std::byte[], HugeDeleter>> chunks;  // from AllocateMaybeHuge
    uint32_t slots_allocated = 0;
    std::vector<uint32_t> free_slots;
    KeyIndex index_map;
    uint32_t clock_hand = 0;
    // Rows that are resident, neither dirty nor in flight (evictable unless pinned), and how many
    // of them the current op has pinned: eviction gives up at once when clean_rows <=
    // pinned_clean instead of sweeping the whole clock for nothing (guarded by mu).
    uint64_t clean_rows = 0;
    uint64_t pinned_clean = 0;

    std::vector<uint64_t> ref_bits;  // CLOCK reference bit per allocated slot
    // Per allocated slot: the stamp the last push whose keys included the slot's row gave it
    // (Impl::TakeStamps); finds and sums repeated keys in a push from the slots its lookup yields
    // (HasRepeatedSlot, SumRepeatsBySlot).
    std::vector<uint32_t> push_stamps;

    std::byte* Slot(uint32_t slot) const {
      return chunks[slot >> chunk_shift].get() + (slot & ((1u << chunk_shift) - 1)) * stride;
    }
    float* Weights(uint32_t slot) const { return reinterpret_cast<float*>(Slot(slot)); }
    float* State(uint32_t slot) const { return Weights(slot) + spec.dim; }
    SlotMeta* Meta(uint32_t slot) const { return reinterpret_cast<SlotMeta*>(Slot(slot) + meta_offset); }
    void SetRef(uint32_t slot) {
      uint64_t& w = ref_bits[slot >> 6];
      const uint64_t bit = uint64_t{1} << (slot & 63);
      if (!(w & bit)) w |= bit;
    }
    // SetRef for threads that share one op's rows (a word holds 64 slots' bits).
    void SetRefShared(uint32_t slot) {
      std::atomic_ref<uint64_t> w(ref_bits[slot >> 6]);
      const uint64_t bit = uint64_t{1} << (slot & 63);
      if (!(w.load(std::memory_order_relaxed) & bit)) w.fetch_or(bit, std::memory_order_relaxed);
    }
    // Clears the slot's reference bit and says whether it was set.
    bool TakeRef(uint32_t slot) {
      uint64_t& w = ref_bits[slot >> 6];
      const uint64_t bit = uint64_t{1} << (slot & 63);
      const bool was = (w & bit) != 0;
      w &= ~bit;
      return was;
    }
  };

  StoreOptions options;
  std::unique_ptr<Storage> storage;
  std::unique_ptr<FileLog> file_log;  // null: the log lives in the storage's "log" space
  bool replaying = false;             // set by Open around Replay
  StorageSpace rows_space = 0, log_space = 0, meta_space = 0;
  std::vector<std::unique_ptr<Table>> tables;
  std::vector<Table*> by_id;  // table id -> table (nullptr for unknown ids)
  uint64_t dirty_threshold = 0;

  // Guards everything below (and the cache inside tables).
  mutable std::mutex mu;
  uint32_t epoch = 0;
  uint32_t push_stamp = 0;  // the last stamp taken (TakeStamps; Table::push_stamps)
  uint64_t next_seq = 1;
  uint64_t applied_seq = 0;   // last log record applied to the cache
  uint64_t written_seq = 0;   // cut of the last committed write-back
  uint64_t cached_bytes = 0;
  uint64_t rows_cached = 0;
  uint64_t dirty_bytes = 0;
  uint64_t log_bytes_pending = 0;
  uint64_t log_records_pending = 0;
  bool eviction_blocked = false;  // a full sweep found no victim; retry after the next write-back
  std::vector<DirtyRef> dirty;
  bool in_push = false;  // for the profile: EnsureResident is on behalf of a push
  StoreStats stats{};
  StageProfile prof;
  bool stop = false;
  bool writeback_requested = false;
  std::condition_variable cv;
  bool writeback_running = false;      // between a write-back's taking of the dirty list and its end
  uint64_t writeback_chunks_done = 0;  // write-back batches finished (ok or not)
  Status last_writeback_error;
  std::condition_variable progress_cv;  // notified when a write-back batch finishes

  // Scratch, reused across calls (single caller thread, under mu).
  std::vector<uint32_t> slots;
  std::vector<RowUpdate> row_updates;  // ApplyToRows
  std::vector<uint32_t> miss_idx;
  std::vector<uint32_t> pull_miss_pos;  // Pull: positions of the keys that were not resident
  std::vector<Key> pull_miss_keys;
  std::vector<Key> miss_keys;
  std::vector<uint32_t> miss_slot;
  KeyIndex miss_map;
  std::string miss_key_bytes;
  std::vector<std::string_view> miss_key_views;
  StorageBatch log_batch;

  // Serializes write-backs (background thread, Flush, backpressure); taken before mu.
  std::mutex wb_mu;
  StorageBatch wb_batch;                                // guarded by wb_mu
  StorageBatch cut_batch;                               // guarded by wb_mu
  std::deque<std::pair<uint64_t, uint64_t>> pending_log;  // (seq, bytes) after the cut; guarded by mu
  std::thread writer;

  // Pushes applied, by origin; guarded by mu. Changes when a push is applied (or on Open); an
  // answer that shows it waits for the push to be durable (AppliedSeq).
  DedupeWindow applied_pushes;
  Lineage lineage;  // this store's history, ending with the segment its Open started

  // Pushes of at least this many rows (to a file log) have their record appended by `appender`
  // on its thread while the optimizer runs and the request thread goes on; smaller ones are
  // appended by the caller, durable before their rows change.
  static constexpr size_t kOverlapLogRows = 1024;
  // Rows per chunk of a big push's optimizer work shared with the helpers.
  static constexpr size_t kApplyChunkRows = 256;
  LogAppender appender{prof};  // declared after prof and file_log: its thread stops first
  std::function<void()> progress_hook;  // ParamStore::SetProgressHook
  // Rows of a big push's optimizer work between two calls of the progress hook.
  static constexpr size_t kProgressRows = 2048;
  std::atomic<uint64_t> visible_seq{0};  // applied_seq, for readers without mu (AppliedSeq)
  // options.helper_threads threads (started on first use) that join a big request's row work;
  // see SharedWork (the caller never waits for a helper that has not started).
  std::unique_ptr<SharedWork> helpers;
  // Pulls of at least this many keys split their gather across the helpers, in chunks.
  static constexpr size_t kSharedPullRows = 2048, kPullChunkRows = 512;
  std::vector<std::vector<uint32_t>> helper_miss_pos;  // per worker of a shared pull

  size_t NumHelpers() const { return static_cast<size_t>(std::max(0, options.helper_threads)); }
  // Runs task(0) here and task(w) on each helper that joins. REQUIRES: mu held (the helpers work
  // under this thread's lock).
  void RunShared(const std::function<void(size_t)>& task) {
    if (!helpers) helpers = std::make_unique<SharedWork>(NumHelpers(), "ps-helper");
    helpers->Run(task);
  }
  // Set when a log append failed after the optimizer had changed rows (guarded by mu): the
  // memory holds an update the log does not, so every call fails with it from then on. Read it
  // through Failed(), which also picks up a failure of the log thread.
  Status failed;
  static constexpr const char* kLogStopped =
      "appending a push to the log (the store has stopped: restart it to recover)";
  Status Failed() {
    if (failed.ok()) {
      Status e = appender.error();
      if (!e.ok()) failed = e.WithContext(kLogStopped);
    }
    return failed;
  }
  // Waits until no log record is queued or being appended, so that the caller may use file_log.
  // REQUIRES: mu held.
  Status DrainLog() {
    if (!appender.Drain().ok()) return Failed();
    return Status::Ok();
  }

  // A pull's pass over keys[begin, end): copies each resident row's weights to its place in
  // `out` and appends the positions of the keys that are not resident to `misses`. One
  // software-pipelined pass: index entries prefetched kIndexAhead keys ahead, a row's lines
  // kSlotAhead keys before its copy. Resident rows need no pin: nothing can evict them before
  // they are copied (mu is held). `shared`: other threads run the same pass over other keys.
  // The distances: 16/8 gathered 48M rows/s (param_store_benchmark, 200k resident rows of 408 B),
  // 32/16 65M, 48/24 70-75M, 64/32 and 96/48 no more; a table far larger than the CPU caches
  // needs that many index and row misses in flight to cover DRAM latency. With the fixed-size
  // loop of whole-line rows (an in-process harness, 10k-key pulls of that table, alternated):
  // 40/32 0.099-0.109 ms, 48/24 0.104-0.124, 48/32 0.111-0.114, 56/32 0.110-0.114, 32/32
  // 0.112-0.119, 32/16 0.118-0.128.
  void GatherResident(Table* t, std::span<const Key> keys, size_t begin, size_t end, float* out, bool shared,
                      std::vector<uint32_t>* misses) {
    // Rows of whole cache lines (dim 16, 32, 64, 128) get a loop whose prefetches and copy have
    // a fixed size (inlined vector moves): with the row's size known only at run time, the
    // prefetch loop and the libc memcpy call cost ~0.03 ms of a 0.16 ms 10k-row gather.
    switch (size_t{t->spec.dim} * 4) {
      case 64: return GatherRows<1>(t, keys, begin, end, out, shared, misses);
      case 128: return GatherRows<2>(t, keys, begin, end, out, shared, misses);
      case 256: return GatherRows<4>(t, keys, begin, end, out, shared, misses);
      case 512: return GatherRows<8>(t, keys, begin, end, out, shared, misses);
      default: return GatherRows<0>(t, keys, begin, end, out, shared, misses);
    }
  }

  // kLines > 0: rows of exactly kLines cache lines; 0: any dim.
  template <size_t kLines>
  void GatherRows(Table* t, std::span<const Key> keys, size_t begin, size_t end, float* out, bool shared,
                  std::vector<uint32_t>* misses) {
    constexpr size_t kIndexAhead = 40, kSlotAhead = 32;
    const uint32_t dim = t->spec.dim;
    // Compile-time constants for whole-line rows.
    const size_t bytes = kLines > 0 ? kLines * 64 : size_t{dim} * 4;
    const size_t lines = kLines > 0 ? kLines : std::min<size_t>(8, (bytes + 63) / 64);
    uint32_t* found = slots.data();
    IndexProber<kIndexAhead> index(t->index_map, keys, begin, end);
    for (size_t i = begin; i < end + kSlotAhead; ++i) {
      if (i < end) {
        const uint32_t s = index.Find(i);
        found[i] = s;
        if (s != KeyIndex::kNone) {
          const char* p = reinterpret_cast<const char*>(t->Weights(s));
          for (size_t l = 0; l < lines; ++l) PrefetchLine(p + 64 * l);
        }
      }
      if (i >= begin + kSlotAhead) {
        const size_t j = i - kSlotAhead;
        const uint32_t s = found[j];
        if (s != KeyIndex::kNone) {
          // No store (dirty line) when the bit is already set.
          if (shared) {
            t->SetRefShared(s);
          } else {
            t->SetRef(s);
          }
          std::memcpy(out + j * dim, t->Weights(s), bytes);
        } else {
          misses->push_back(static_cast<uint32_t>(j));
        }
      }
    }
  }

  // ---- Cache -----------------------------------------------------------------------------------

  // Starts a new op: rows pinned by the previous one become evictable again. REQUIRES: mu held.
  //
  // It also lets eviction try again: a sweep that found no victim may have failed only because
  // the previous op pinned the clean rows (a 2000-key pull in a 40 KB cache). Retrying costs a
  // counter check per table (EvictOne knows without a sweep when every clean row is pinned), and
  // waiting for the next write-back instead let the cache grow without bound meanwhile when
  // there was nothing dirty to write back (or a write-back was busy persisting).
  void NewEpoch() {
    ++epoch;
    for (auto& t : tables) t->pinned_clean = 0;
    eviction_blocked = false;
  }

  // Pins a resident row for the current op. REQUIRES: mu held.
  void Pin(Table* t, uint32_t s) {
    SlotMeta* m = t->Meta(s);
    t->SetRef(s);
    if (m->pin != epoch) {
      m->pin = epoch;
      if (!(m->flags & (kDirty | kInflight))) ++t->pinned_clean;
    }
  }

  // Frees one clean, unpinned, not-in-flight row. False if there is none (known without a sweep).
  bool EvictOne(Table* prefer) {
    const size_t n = tables.size();
    for (size_t k = 0; k < n; ++k) {
      Table* t = (k == 0) ? prefer : tables[(prefer->index + k) % n].get();
      if (t->slots_allocated == 0 || t->clean_rows <= t->pinned_clean) continue;
      const uint64_t limit = 2ull * t->slots_allocated;
      for (uint64_t step = 0; step < limit; ++step) {
        uint32_t s = t->clock_hand;
        t->clock_hand = (t->clock_hand + 1 == t->slots_allocated) ? 0 : t->clock_hand + 1;
        SlotMeta* m = t->Meta(s);
        if (!(m->flags & kUsed) || (m->flags & (kDirty | kInflight)) || m->pin == epoch) continue;
        if (t->TakeRef(s)) continue;
        t->index_map.Erase(m->key);
        m->flags = 0;
        --t->clean_rows;
        t->free_slots.push_back(s);
        cached_bytes -= t->charge;
        --rows_cached;
        return true;
      }
    }
    return false;
  }

  // A fresh slot for `key` in `t` (not yet in the index), evicting as the budget requires. The
  // budget is soft: when every cached row is dirty, pinned or in flight, the cache grows and a
  // write-back is requested.
  //
  // When the cache is over its budget (it grew while rows could not be evicted), it shrinks back
  // a few rows per allocation rather than all at once: evicting many rows in one sweep would clear
  // the reference bits of, and evict, the rows the workload is using.
  uint32_t AllocateSlot(Table* t) {
    if (cached_bytes + t->charge > options.cache_bytes && !eviction_blocked) {
      StageTimer timer(prof, StageProfile::kEvict);
      for (int victims = 0; victims < 4 && cached_bytes + t->charge > options.cache_bytes; ++victims) {
        if (!EvictOne(t)) {
          eviction_blocked = true;
          writeback_requested = true;
          cv.notify_one();
          break;
        }
      }
    }
    uint32_t s;
    if (!t->free_slots.empty()) {
      s = t->free_slots.back();
      t->free_slots.pop_back();
    } else {
      s = t->slots_allocated;
      if ((s >> t->chunk_shift) >= t->chunks.size()) {
        size_t bytes = (size_t{1} << t->chunk_shift) * t->stride;
        auto* chunk = static_cast<std::byte*>(AllocateMaybeHuge(bytes));
        if (chunk == nullptr) throw std::bad_alloc();
        t->chunks.emplace_back(chunk, HugeDeleter{bytes});
      }
      ++t->slots_allocated;
      if (t->ref_bits.size() * 64 < t->slots_allocated) t->ref_bits.push_back(0);
      if (t->push_stamps.size() < t->slots_allocated) t->push_stamps.push_back(0);
      t->Meta(s)->flags = 0;
    }
    cached_bytes += t->charge;
    ++rows_cached;
    return s;
  }

  // Makes every key resident and pinned for this epoch; slots_out[i] is keys[i]'s slot. Rows read
  // from storage or initialized are clean. Misses are fetched with one MultiGet.
  Status EnsureResident(Table* t, std::span<const Key> keys, uint32_t* slots_out) {
    StageTimer hit_timer(prof, in_push ? StageProfile::kPushResident : StageProfile::kPullResident);
    miss_idx.clear();
    const size_t n = keys.size();
    // One software-pipelined pass so that memory latency overlaps: index entries are prefetched
    // kIndexAhead keys ahead. It reads no slot: a pin matters only if this op evicts, which only
    // loading misses does, so the hits are pinned (their metadata lines read) only then.
    constexpr size_t kIndexAhead = 48, kSlotAhead = 24;
    IndexProber<kIndexAhead> index(t->index_map, keys, 0, n);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t s = index.Find(i);
      slots_out[i] = s;
      if (s != KeyIndex::kNone) {
        t->SetRef(s);
      } else {
        miss_idx.push_back(static_cast<uint32_t>(i));
      }
    }
    if (!miss_idx.empty()) {
      for (size_t i = 0; i < n + kSlotAhead; ++i) {
        if (i < n && slots_out[i] != KeyIndex::kNone) PrefetchLine(t->Meta(slots_out[i]));
        if (i >= kSlotAhead && slots_out[i - kSlotAhead] != KeyIndex::kNone) Pin(t, slots_out[i - kSlotAhead]);
      }
    }
    stats.cache_hits += n - miss_idx.size();
    if (miss_idx.empty()) return Status::Ok();
    hit_timer.Stop();
    StageTimer miss_timer(prof, in_push ? StageProfile::kPushMiss : StageProfile::kPullMiss);

    // Unique missing keys.
    miss_map.Reset(miss_idx.size());
    miss_keys.clear();
    for (uint32_t i : miss_idx) {
      if (miss_map.FindOrInsert(keys[i], static_cast<uint32_t>(miss_keys.size())) == KeyIndex::kNone) {
        miss_keys.push_back(keys[i]);
      }
    }
    stats.cache_misses += miss_keys.size();
    if (prof.on()) prof.Add(StageProfile::kMissKeys, 0, miss_keys.size());
    miss_key_bytes.resize(miss_keys.size() * 12);
    miss_key_views.resize(miss_keys.size());
    for (size_t j = 0; j < miss_keys.size(); ++j) {
      WriteRowKey(miss_key_bytes.data() + 12 * j, t->id, miss_keys[j]);
    }
    for (size_t j = 0; j < miss_keys.size(); ++j) {
      miss_key_views[j] = std::string_view(miss_key_bytes.data() + 12 * j, 12);
    }
    miss_slot.assign(miss_keys.size(), KeyIndex::kNone);
    Status bad;
    const size_t row_bytes = sizeof(DiskRowHeader) + size_t{t->row_floats} * 4;
    StageTimer multiget_timer(prof, StageProfile::kMultiGet);
    Status st = storage->MultiGet(rows_space, miss_key_views, [&](size_t j, std::string_view v) {
      if (!bad.ok()) return;
      DiskRowHeader h;
      if (v.size() != row_bytes) {
        bad = DataLoss("table " + t->spec.name + " key " + std::to_string(miss_keys[j]) + ": stored row has " +
                       std::to_string(v.size()) + " bytes, expected " + std::to_string(row_bytes));
        return;
      }
      std::memcpy(&h, v.data(), sizeof(h));
      if (h.version != kRowVersion || h.dim != t->spec.dim || h.state_floats != t->state_floats) {
        bad = DataLoss("table " + t->spec.name + " key " + std::to_string(miss_keys[j]) +
                       ": stored row header does not match the table");
        return;
      }
      uint32_t s = AllocateSlot(t);
      SlotMeta* m = t->Meta(s);
      m->key = miss_keys[j];
      m->update_count = h.update_count;
      m->last_step = h.last_step;
      m->last_seq = h.last_seq;
      m->pin = epoch;
      m->flags = kUsed;
      t->SetRef(s);
      ++t->clean_rows;
      ++t->pinned_clean;
      std::memcpy(t->Weights(s), v.data() + sizeof(h), size_t{t->row_floats} * 4);
      t->index_map.FindOrInsert(miss_keys[j], s);
      miss_slot[j] = s;
    });
    multiget_timer.Stop();
    if (st.ok()) st = bad;
    if (!st.ok()) {
      // Rows already inserted are valid clean rows; the rest stays absent.
      return st.WithContext("reading rows of table " + t->spec.name);
    }
    StageTimer init_timer(prof, StageProfile::kInit);
    for (size_t j = 0; j < miss_keys.size(); ++j) {
      if (miss_slot[j] != KeyIndex::kNone) continue;
      uint32_t s = AllocateSlot(t);
      SlotMeta* m = t->Meta(s);
      m->key = miss_keys[j];
      m->update_count = 0;
      m->last_step = 0;
      m->last_seq = 0;
      m->pin = epoch;
      m->flags = kUsed;
      t->SetRef(s);
      ++t->clean_rows;
      ++t->pinned_clean;
      InitializeRow(t->spec.init, t->init_seed, miss_keys[j], t->Weights(s), t->spec.dim);
      t->opt->InitState(t->State(s), t->spec.dim);
      t->index_map.FindOrInsert(miss_keys[j], s);
      miss_slot[j] = s;
    }
    for (uint32_t i : miss_idx) slots_out[i] = miss_slot[miss_map.Find(keys[i])];
    return Status::Ok();
  }

  // Applies log record `seq` to resident rows `slots` (one per key, unique keys). Rows that
  // already include the record (last_seq >= seq, possible only in replay) are skipped.
  void ApplyToRows(Table* t, uint64_t seq, uint64_t step, size_t n, const uint32_t* row_slots, const float* grads) {
    PrepareRowUpdates(t, seq, step, n, row_slots, grads);
    t->opt->ApplyBatch(row_updates.data(), row_updates.size(), t->spec.dim);
  }

  // ApplyToRows' bookkeeping: counts, steps and dirty marks, and the optimizer's work list in
  // row_updates (rows already at seq are left out). The optimizer itself is left to the caller.
  void PrepareRowUpdates(Table* t, uint64_t seq, uint64_t step, size_t n, const uint32_t* row_slots,
                         const float* grads) {
    const uint32_t dim = t->spec.dim;
    // The bookkeeping first (each row's metadata line, which the lookups of resident rows do not
    // read: prefetched kAhead rows ahead), then the optimizer on the whole batch in one call,
    // which prefetches the rows' weights and state ahead of its vector loop. The loop does little
    // per row, so it needs many misses in flight: push.apply CPU per 10k-row push
    // (param_store_benchmark, 200k resident rows, METAPS_PROFILE, 3 alternated runs each) was
    // 0.24-0.26 ms at 16 rows ahead, 0.20-0.22 at 48, 0.19-0.20 at 96.
    constexpr size_t kAhead = 96;
    row_updates.clear();
    for (size_t i = 0; i < std::min(n, kAhead); ++i) PrefetchLine(t->Meta(row_slots[i]));
    for (size_t i = 0; i < n; ++i) {
      if (i + kAhead < n) PrefetchLine(t->Meta(row_slots[i + kAhead]));
      const uint32_t s = row_slots[i];
      SlotMeta* m = t->Meta(s);
      if (m->last_seq >= seq) continue;
      m->update_count += 1;
      row_updates.push_back({t->Weights(s), t->State(s), grads + i * dim, m->update_count});
      m->last_step = step;
      m->last_seq = seq;
      if (!(m->flags & kDirty)) {
        if (!(m->flags & kInflight)) {
          --t->clean_rows;
          if (m->pin == epoch) --t->pinned_clean;
        }
        m->flags |= kDirty;
        dirty.push_back({t->index, s});
        dirty_bytes += t->charge;
      }
    }
    applied_seq = std::max(applied_seq, seq);
  }

  // Dirty bytes call for an early write-back only when the cache is within the threshold of its
  // budget (new rows will soon need clean rows to evict). A cache with room to spare lets hot
  // rows absorb many pushes per row write; the log bound and the interval still apply.
  bool WritebackDue() const {
    const bool pressure = cached_bytes + dirty_threshold > options.cache_bytes;
    return (dirty_bytes >= dirty_threshold && pressure) || log_bytes_pending >= options.writeback_log_bytes;
  }

  // ---- Write-back ------------------------------------------------------------------------------

  // Writes back every row dirty when it starts, then records the cut C (applied_seq at the start)
  // and deletes the log records <= C, in the last batch.
  //
  // Rows are copied under `mu` a chunk (~kChunkBytes) at a time and each chunk is written as its
  // own batch with `mu` released, so pushes interleave with a long write-back instead of waiting
  // for it. A row copied later than the start may include pushes after C; that is fine because
  // every stored row records the sequence number of the last push applied to it (last_seq), and
  // replay skips, per row, the records the row already includes. Storage applies batches in
  // order, so when the cut is durable every row before it is too; a crash in between leaves rows
  // that are newer than the cut, which replay handles the same way.
  Status WriteBack() {
    std::lock_guard<std::mutex> wb_lock(wb_mu);
    StageTimer total_timer(prof, StageProfile::kWbTotal);
    constexpr size_t kChunkBytes = 1 << 20;
    uint64_t cut;
    std::vector<DirtyRef> todo;
    // In key order: RocksDB's memtable inserts sorted keys much faster (its skiplist reuses the
    // previous insert's position), and it is the order the rows end up in anyway. The sort keys
    // are gathered under the lock and sorted outside it: a comparator that read the slots would
    // miss the cache on every comparison (hundreds of ms for 100k rows, under the lock).
    struct SortKey {
      uint32_t table_id;
      uint32_t pos;
      Key key;
    };
    std::vector<SortKey> order;
    uint64_t row_bytes = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      METAPS_RETURN_IF_ERROR(Failed());
      if (dirty.empty() && applied_seq == written_seq) return Status::Ok();
      cut = applied_seq;
      // Records after the cut go to a new segment, so the old ones can be deleted after it.
      // (Not while replaying: Open reads the segments then, and rotates once replay is done.)
      // The records up to the cut are appended first (the log thread may still hold some).
      if (file_log && !replaying) {
        METAPS_RETURN_IF_ERROR(DrainLog());
        METAPS_RETURN_IF_ERROR(file_log->Rotate(cut + 1).WithContext("write-back"));
      }
      writeback_running = true;
      todo.swap(dirty);  // rows keep kDirty (not evictable) until their chunk is copied
      dirty_bytes = 0;
      order.resize(todo.size());
      for (size_t i = 0; i < todo.size(); ++i) {
        const Table* t = tables[todo[i].table].get();
        order[i] = {t->id, static_cast<uint32_t>(i), t->Meta(todo[i].slot)->key};
        row_bytes += sizeof(DiskRowHeader) + size_t{t->row_floats} * 4;
      }
    }
    struct RunningGuard {
      Impl* impl;
      ~RunningGuard() {
        {
          std::lock_guard<std::mutex> lock(impl->mu);
          impl->writeback_running = false;
        }
        impl->progress_cv.notify_all();
      }
    } running_guard{this};
    {
      StageTimer sort_timer(prof, StageProfile::kWbSort);
      std::sort(order.begin(), order.end(), [](const SortKey& a, const SortKey& b) {
        return a.table_id != b.table_id ? a.table_id < b.table_id : a.key < b.key;
      });
      std::vector<DirtyRef> sorted(todo.size());
      for (size_t i = 0; i < order.size(); ++i) sorted[i] = todo[order[i].pos];
      todo.swap(sorted);
      std::vector<SortKey>().swap(order);
    }
    StorageBatch& batch = wb_batch;
    // A big write-back (StoreOptions::writeback_ingest_bytes) writes its rows as sorted runs
    // (Storage::NewSortedWriter; RocksDB: table files written directly and ingested, with no
    // WAL, memtable or flush: half the CPU of writing them through memtables), each committed,
    // durable, once it holds writeback_run_bytes or the last row. Its rows stay in flight (not evictable)
    // until their run is committed. Small write-backs (a periodic one of a few dirty rows) write
    // batches through the WAL: a table file per trickle of rows would litter the storage with
    // tiny files for compaction to merge and reads to search.
    const bool ingest = row_bytes >= options.writeback_ingest_bytes;
    const uint64_t run_bytes = std::max<uint64_t>(1, options.writeback_run_bytes);
    const size_t chunk_bytes = ingest ? std::min<uint64_t>(kChunkBytes, run_bytes) : kChunkBytes;
    std::unique_ptr<SortedWriter> run;
    size_t unsettled = 0;  // todo[unsettled, pos): rows copied out, not yet written or failed
    Status st;
    size_t pos = 0;
    char key[12];
    uint64_t copied_seq = 0;  // applied_seq when the chunk was copied: its rows include no later push
    while (st.ok()) {
      {
        StageTimer wait_timer(prof, StageProfile::kWbLockWait);
        std::lock_guard<std::mutex> lock(mu);
        wait_timer.Stop();
        StageTimer copy_timer(prof, StageProfile::kWbCopy);
        copied_seq = applied_seq;
        batch.Clear();
        while (pos < todo.size() && batch.ByteSize() < chunk_bytes) {
          const DirtyRef& d = todo[pos++];
          Table* t = tables[d.table].get();
          SlotMeta* m = t->Meta(d.slot);
          WriteRowKey(key, t->id, m->key);
          const size_t fbytes = size_t{t->row_floats} * 4;
          char* v = batch.PutUninitialized(rows_space, std::string_view(key, 12), sizeof(DiskRowHeader) + fbytes);
          DiskRowHeader h{};
          h.version = kRowVersion;
          h.optimizer = static_cast<uint8_t>(t->spec.optimizer.kind);
          h.dim = t->spec.dim;
          h.state_floats = t->state_floats;
          h.update_count = m->update_count;
          h.last_step = m->last_step;
          h.last_seq = m->last_seq;
          std::memcpy(v, &h, sizeof(h));
          std::memcpy(v + sizeof(h), t->Weights(d.slot), fbytes);
          m->flags = (m->flags & ~kDirty) | kInflight;
        }
        if (pos == todo.size()) {
          std::string seq_value(8, '\0');
          std::memcpy(seq_value.data(), &cut, 8);
          cut_batch.Clear();
          cut_batch.Put(meta_space, kAppliedSeqKey, seq_value);
          // The window with the cut: ids of the pushes whose records the cut drops stay known.
          // (It may also hold ids of pushes after C; their records are kept, so that is exact.)
          if (!applied_pushes.empty()) cut_batch.Put(meta_space, kDedupeWindowKey, applied_pushes.Encode());
          if (cut > 0 && !file_log) cut_batch.DeleteRange(log_space, SeqKey(0), SeqKey(cut + 1));
        }
      }
      // Rows are written with `mu` released. Rows through the WAL count as written (clean,
      // evictable: the storage serves them) once their batch is; rows of a run once it is committed.
      bool settle = true;
      // Rows are stored only once every push they include is durable in the log: a row holding
      // a push whose append then failed must not outlive the failure (a restart replays the log
      // over the stored rows). Big pushes are appended on the log thread, so this may wait for it.
      st = appender.WaitDurable(copied_seq);
      {
        StageTimer write_timer(prof, StageProfile::kWbWrite);
        if (!st.ok()) {
          run.reset();  // abandoned
        } else if (!ingest) {
          if (!batch.empty()) st = storage->Write(batch, false);
        } else {
          if (!run && !batch.empty()) {
            auto r = storage->NewSortedWriter(rows_space);
            if (r.ok()) run = std::move(*r);
            st = r.status();
          }
          if (run) {
            batch.ForEach([&](StorageBatch::Op, StorageSpace, std::string_view k, std::string_view v) {
              if (st.ok()) st = run->Add(k, v);
            });
          }
          settle = !st.ok() || pos == todo.size() || (run && run->bytes() >= run_bytes);
          if (st.ok() && settle && run) {
            StageTimer commit_timer(prof, StageProfile::kWbCommit);
            st = run->Commit();
          }
          if (settle) run.reset();
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        ++writeback_chunks_done;
        if (settle) {
          for (size_t i = unsettled; i < pos; ++i) {
            const DirtyRef& d = todo[i];
            Table* t = tables[d.table].get();
            SlotMeta* m = t->Meta(d.slot);
            m->flags &= ~kInflight;
            if (!st.ok() && !(m->flags & kDirty)) {
              m->flags |= kDirty;
              dirty.push_back(d);
              dirty_bytes += t->charge;
            } else if (!(m->flags & kDirty)) {
              ++t->clean_rows;
              if (m->pin == epoch) ++t->pinned_clean;
            }
          }
          eviction_blocked = false;
          if (st.ok()) stats.rows_written += pos - unsettled;
          unsettled = pos;
        }
        progress_cv.notify_all();
        if (!st.ok()) {
          last_writeback_error = st;
          // Rows not yet copied are still flagged dirty: hand them back to the dirty list.
          for (size_t i = pos; i < todo.size(); ++i) {
            dirty.push_back(todo[i]);
            dirty_bytes += tables[todo[i].table]->charge;
          }
          ++stats.writeback_errors;
        }
        if (st.ok() && pos == todo.size()) break;
      }
    }
    if (st.ok()) {
      // Every row up to the cut is in the storage (runs durable; batches through the WAL, which
      // the logged cut batch follows), so the cut is recorded and log records are dropped only
      // now (until then a crash replays the log over the rows stored earlier). With `sync` the
      // cut batch reaches the disk before log files go.
      st = storage->Write(cut_batch, options.sync);
      std::lock_guard<std::mutex> lock(mu);
      if (!st.ok()) {
        last_writeback_error = st;
        ++stats.writeback_errors;
      } else {
        ++stats.writebacks;
        written_seq = std::max(written_seq, cut);
        while (!pending_log.empty() && pending_log.front().first <= cut) {
          log_bytes_pending -= pending_log.front().second;
          pending_log.pop_front();
        }
        log_records_pending = pending_log.size();
        if (file_log && !replaying && DrainLog().ok()) file_log->DropThrough(cut);
      }
    }
    if (batch.ByteSize() > 4 * kChunkBytes) batch = StorageBatch();
    return st.WithContext("write-back");
  }

  // Records a log record as pending (not covered by a write-back). REQUIRES: mu held.
  void AddPendingLog(uint64_t seq, uint64_t bytes) {
    pending_log.emplace_back(seq, bytes);
    log_bytes_pending += bytes;
    log_records_pending = pending_log.size();
  }

  void WriterLoop() {
    // Background work yields to the request loop when the cores are contended (a failure to
    // change the nice value only costs that).
    if (options.writeback_nice != 0) {
      (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), options.writeback_nice);
    }
    std::unique_lock<std::mutex> lock(mu);
    while (!stop) {
      cv.wait_for(lock, std::chrono::milliseconds(options.writeback_interval_ms),
                  [&] { return stop || writeback_requested; });
      if (stop) break;
      writeback_requested = false;
      if (dirty.empty() && applied_seq == written_seq) {
        progress_cv.notify_all();  // a throttled pusher may wait for this request
        continue;
      }
      lock.unlock();
      (void)WriteBack();  // failures are counted; rows stay dirty and the log keeps the pushes
      lock.lock();
    }
  }

  // ---- Open ------------------------------------------------------------------------------------

  Status LoadRegistry(bool* fresh) {
    std::string v;
    Status st = storage->Get(meta_space, kFormatKey, &v);
    *fresh = st.code() == StatusCode::kNotFound;
    if (!st.ok() && !*fresh) return st;
    if (!*fresh && v != kFormatValue && v != kFormatValueV1) {
      return FailedPrecondition("data is format \"" + v + "\", this build reads \"" + kFormatValue + "\" and \"" +
                                kFormatValueV1 + "\"");
    }
    std::vector<std::pair<std::string, TableRecord>> known;
    METAPS_RETURN_IF_ERROR(storage->Scan(meta_space, kTablePrefix, "table0", [&](std::string_view k, std::string_view val) {
      TableRecord r{};
      if (val.size() == sizeof(r)) std::memcpy(&r, val.data(), sizeof(r));
      known.emplace_back(std::string(k.substr(std::strlen(kTablePrefix))), r);
      return true;
    }));
    uint32_t next_id = 1;
    for (const auto& [name, r] : known) next_id = std::max(next_id, r.id + 1);
    StorageBatch batch;
    // (An older store is upgraded: the records this build appends are PLG2, which it cannot read.)
    if (*fresh || v != kFormatValue) batch.Put(meta_space, kFormatKey, kFormatValue);
    for (auto& t : tables) {
      auto it = std::find_if(known.begin(), known.end(), [&](const auto& p) { return p.first == t->spec.name; });
      if (it != known.end()) {
        const TableRecord& r = it->second;
        if (r.dim != t->spec.dim || r.dense != t->spec.dense) {
          return FailedPrecondition("table " + t->spec.name + ": stored data has dim " + std::to_string(r.dim) +
                                    (r.dense ? " (dense)" : "") + ", the config says dim " +
                                    std::to_string(t->spec.dim) + (t->spec.dense ? " (dense)" : ""));
        }
        if (r.optimizer != static_cast<uint8_t>(t->spec.optimizer.kind) || r.state_floats != t->state_floats) {
          return FailedPrecondition("table " + t->spec.name + ": stored data was trained with optimizer " +
                                    std::string(OptimizerKindName(static_cast<OptimizerKind>(r.optimizer))) +
                                    ", the config says " + std::string(OptimizerKindName(t->spec.optimizer.kind)));
        }
        t->id = r.id;
      } else {
        t->id = next_id++;
        TableRecord r{};
        r.id = t->id;
        r.dim = t->spec.dim;
        r.state_floats = t->state_floats;
        r.dense = t->spec.dense;
        r.optimizer = static_cast<uint8_t>(t->spec.optimizer.kind);
        batch.Put(meta_space, std::string(kTablePrefix) + t->spec.name,
                  std::string_view(reinterpret_cast<const char*>(&r), sizeof(r)));
      }
      if (by_id.size() <= t->id) by_id.resize(t->id + 1, nullptr);
      by_id[t->id] = t.get();
    }
    if (!batch.empty()) METAPS_RETURN_IF_ERROR(storage->Write(batch, true));
    return Status::Ok();
  }

  // Starts this Open's lineage segment (after Replay: it begins after the pushes replayed) and
  // stores the lineage, so that a checkpoint taken from now on carries it.
  Status StartLineageSegment() {
    std::string v;
    Status st = storage->Get(meta_space, kLineageKey, &v);
    if (st.ok()) {
      auto j = nlohmann::json::parse(v, nullptr, false);
      METAPS_ASSIGN_OR_RETURN(lineage, LineageFromJson(j, std::string("meta ") + kLineageKey));
    } else if (st.code() != StatusCode::kNotFound) {
      return st;
    }
    lineage.push_back({NewLineageId(), applied_seq});
    StorageBatch batch;
    batch.Put(meta_space, kLineageKey, LineageToJson(lineage).dump());
    return storage->Write(batch, true);
  }

  // Applies the log records after the last write-back's cut, in order.
  Status Replay() {
    std::string v;
    Status st = storage->Get(meta_space, kAppliedSeqKey, &v);
    if (st.ok()) {
      if (v.size() != 8) return DataLoss("meta applied_seq is corrupt");
      std::memcpy(&written_seq, v.data(), 8);
    } else if (st.code() != StatusCode::kNotFound) {
      return st;
    }
    applied_seq = written_seq;
    next_seq = written_seq + 1;
    // The window as of the cut, then the origins of the records after it.
    std::string window;
    Status ws = storage->Get(meta_space, kDedupeWindowKey, &window);
    if (ws.ok()) {
      METAPS_RETURN_IF_ERROR(applied_pushes.Decode(window).WithContext("meta " + std::string(kDedupeWindowKey)));
    } else if (ws.code() != StatusCode::kNotFound) {
      return ws;
    }
    std::vector<float> grads;
    std::vector<Key> keys;
    std::vector<uint32_t> row_slots;
    auto replay_one = [&](uint64_t seq, std::string_view val) -> Status {
      LogHeader h;
      if (val.size() < sizeof(h)) return DataLoss("log record " + std::to_string(seq) + " is truncated");
      std::memcpy(&h, val.data(), sizeof(h));
      Table* t = h.table_id < by_id.size() ? by_id[h.table_id] : nullptr;
      LogOrigin origin{};
      std::string_view sender;
      size_t body = sizeof(h);  // where the keys start
      if (h.magic == kLogMagicOrigin) {
        if (val.size() < sizeof(h) + sizeof(origin)) return DataLoss("log record " + std::to_string(seq) + " is truncated");
        std::memcpy(&origin, val.data() + sizeof(h), sizeof(origin));
        body += sizeof(origin) + origin.sender_bytes;
        if (val.size() < body) return DataLoss("log record " + std::to_string(seq) + " is corrupt");
        sender = val.substr(sizeof(h) + sizeof(origin), origin.sender_bytes);
      }
      const size_t need = body + size_t{h.n} * 8 + size_t{h.n} * h.dim * 4;
      if ((h.magic != kLogMagic && h.magic != kLogMagicOrigin) || val.size() != need) {
        return DataLoss("log record " + std::to_string(seq) + " is corrupt");
      }
      if (t == nullptr) {
        return FailedPrecondition("log record " + std::to_string(seq) + " updates table id " +
                                  std::to_string(h.table_id) + ", which the config no longer has");
      }
      if (h.dim != t->spec.dim) {
        return DataLoss("log record " + std::to_string(seq) + " has dim " + std::to_string(h.dim) + ", table " +
                        t->spec.name + " has " + std::to_string(t->spec.dim));
      }
      keys.resize(h.n);
      grads.resize(size_t{h.n} * h.dim);
      std::memcpy(keys.data(), val.data() + body, size_t{h.n} * 8);
      std::memcpy(grads.data(), val.data() + body + size_t{h.n} * 8, grads.size() * 4);
      {
        std::lock_guard<std::mutex> lock(mu);
        NewEpoch();
        row_slots.resize(h.n);
        METAPS_RETURN_IF_ERROR(EnsureResident(t, keys, row_slots.data()));
        ApplyToRows(t, seq, h.step, h.n, row_slots.data(), grads.data());
        if (h.magic == kLogMagicOrigin) applied_pushes.Add(sender, origin.request_id);
        next_seq = seq + 1;
        ++stats.replayed_records;
        AddPendingLog(seq, val.size());
        appender.MarkDurable(seq);  // read back from the log (a write-back during replay waits for it)
      }
      if (WritebackDue() || eviction_blocked) METAPS_RETURN_IF_ERROR(WriteBack());
      return Status::Ok();
    };
    // The log's place is recorded; switching places is refused while the old one may hold
    // records after the cut (they would be silently skipped).
    const std::string mode = file_log ? "file" : "storage";
    std::string stored_mode;
    Status ms = storage->Get(meta_space, kLogModeKey, &stored_mode);
    if (!ms.ok() && ms.code() != StatusCode::kNotFound) return ms;
    if (ms.ok() && stored_mode != mode) {
      bool pending = false;
      if (stored_mode == "storage") {
        METAPS_RETURN_IF_ERROR(storage->Scan(log_space, SeqKey(written_seq + 1), "", [&](std::string_view, std::string_view) {
          pending = true;
          return false;
        }));
      } else if (options.data_dir.empty()) {
        pending = true;  // cannot look
      } else {
        METAPS_ASSIGN_OR_RETURN(auto old_log, FileLog::Open(options.data_dir + "/" + kPushLogDir, false,
                                                                  options.log_segment_bytes, 0));
        METAPS_RETURN_IF_ERROR(old_log->Replay(written_seq, [&](uint64_t, std::string_view) {
          pending = true;
          return Status::Ok();
        }));
      }
      if (pending) {
        return FailedPrecondition("the push log holds acknowledged pushes in " +
                                  (stored_mode == "file" ? options.data_dir + "/" + kPushLogDir + " (files)"
                                                         : std::string("the storage's log space")) +
                                  ", but the store was opened with its log in " + mode +
                                  (mode == "storage" ? " (data_dir empty or log_in_storage set)" : "") +
                                  "; open it as it was written");
      }
    }
    if (!ms.ok() || stored_mode != mode) {
      StorageBatch b;
      b.Put(meta_space, kLogModeKey, mode);
      METAPS_RETURN_IF_ERROR(storage->Write(b, true));
    }
    Status apply_error;
    if (file_log) {
      replaying = true;
      apply_error = file_log->Replay(written_seq, replay_one);
      replaying = false;
      if (apply_error.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        apply_error = file_log->Rotate(next_seq);
      }
    } else {
      METAPS_RETURN_IF_ERROR(storage->Scan(log_space, SeqKey(written_seq + 1), "", [&](std::string_view k, std::string_view val) {
        if (k.size() != 8) {
          apply_error = DataLoss("log key of " + std::to_string(k.size()) + " bytes");
          return false;
        }
        apply_error = replay_one(DecodeBigEndian64(k.data()), val);
        return apply_error.ok();
      }));
    }
    if (apply_error.ok()) {
      appender.MarkDurable(next_seq - 1);  // what the log holds
      visible_seq.store(applied_seq, std::memory_order_release);
    }
    return apply_error.WithContext("replaying the log");
  }

  Table* Lookup(std::string_view name) const {
    for (const auto& t : tables) {
      if (t->spec.name == name) return t.get();
    }
    return nullptr;
  }

  Result<Table*> FindOrError(std::string_view name, bool dense) const {
    Table* t = Lookup(name);
    if (t == nullptr) return NotFound("unknown table \"" + std::string(name) + "\"");
    if (t->spec.dense != dense) {
      return InvalidArgument("table \"" + std::string(name) + "\" is " + (t->spec.dense ? "dense" : "sparse") +
                             "; use " + (t->spec.dense ? "PullDense/PushDense" : "Pull/Push"));
    }
    return t;
  }

  // Reserves `count` consecutive push stamps that no slot holds yet (Table::push_stamps) and
  // returns the first. Stamps only grow, so every stamp a slot holds is below the ones reserved.
  uint32_t TakeStamps(uint32_t count) {
    if (push_stamp > UINT32_MAX - count) {  // would wrap: no stale stamp may equal a new one
      for (auto& x : tables) std::fill(x->push_stamps.begin(), x->push_stamps.end(), 0);
      push_stamp = 0;
    }
    const uint32_t first = push_stamp + 1;
    push_stamp += count;
    return first;
  }

  // Whether two of slots[0, n) (a push's keys, made resident) are the same row, i.e. the push
  // repeats a key. Workers' clients sum repeats before they push, so this is nearly always false;
  // knowing it from the slots costs one small array access per key instead of a hash set of the
  // keys. REQUIRES: mu held.
  bool HasRepeatedSlot(Table* t, const uint32_t* row_slots, size_t n) {
    const uint32_t stamp = TakeStamps(1);
    uint32_t* stamps = t->push_stamps.data();
    constexpr size_t kAhead = 32;
    for (size_t i = 0; i < std::min(n, kAhead); ++i) PrefetchLine(stamps + row_slots[i]);
    for (size_t i = 0; i < n; ++i) {
      if (i + kAhead < n) PrefetchLine(stamps + row_slots[i + kAhead]);
      uint32_t& x = stamps[row_slots[i]];
      if (x == stamp) return true;
      x = stamp;
    }
    return false;
  }

  // A push's keys with their repeats summed, in first-occurrence order; the logged record's
  // buffers (they live until the log thread has appended it).
  struct SummedPush {
    std::vector<Key> keys;
    std::vector<float> grads;
  };

  // Sums the gradients of the keys that slots[0, n) (the rows of `keys`, resident and pinned)
  // show repeated, in first-occurrence order, and leaves slots[0, u) the rows of the u distinct
  // keys. The rows tell repeats apart, so no hash of the keys is needed: each distinct row gets
  // the stamp base + its index among the distinct keys (stamps below base are older pushes').
  // A key's summed gradient is its first occurrence's plus the later ones, in push order.
  // REQUIRES: mu held.
  std::shared_ptr<SummedPush> SumRepeatsBySlot(Table* t, std::span<const Key> keys, const float* grads) {
    const size_t n = keys.size();
    const uint32_t dim = t->spec.dim;
    auto summed = std::make_shared<SummedPush>();
    summed->keys.reserve(n);
    summed->grads.reserve(n * size_t{dim});
    const uint32_t base = TakeStamps(static_cast<uint32_t>(n));
    uint32_t* stamps = t->push_stamps.data();
    uint32_t u = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t s = slots[i];
      const uint32_t seen = stamps[s] - base;  // < u: the index of this row's first occurrence
      const float* src = grads + i * dim;
      if (seen < u) {
        float* dst = summed->grads.data() + size_t{seen} * dim;
        for (uint32_t d = 0; d < dim; ++d) dst[d] += src[d];
      } else {
        stamps[s] = base + u;
        slots[u++] = s;  // (u <= i: the positions not read yet are left as they are)
        summed->keys.push_back(keys[i]);
        summed->grads.insert(summed->grads.end(), src, src + dim);
      }
    }
    slots.resize(u);
    return summed;
  }

  // Logs and applies a push; *durable_at: the seq whose durability acknowledges it. `hold` keeps
  // keys and grads alive until a queued record is written (see PushDeferred). With
  // `may_repeat`, the keys may repeat: the repeats, found from the rows' slots under the lock,
  // are summed (SumRepeatsBySlot) and the summed push is the one logged and applied. Without
  // it the keys must be distinct.
  Status PushKeys(Table* t, std::span<const Key> keys, const float* grads, uint64_t step, const PushOrigin* origin,
                  std::shared_ptr<const void> hold, uint64_t* durable_at, bool may_repeat) {
    size_t n = keys.size();
    const uint32_t dim = t->spec.dim;
    {
      StageTimer lock_timer(prof, StageProfile::kPushLock);
      std::lock_guard<std::mutex> lock(mu);
      lock_timer.Stop();
      METAPS_RETURN_IF_ERROR(Failed());
      NewEpoch();
      slots.resize(n);
      in_push = true;
      Status rs = EnsureResident(t, keys, slots.data());
      in_push = false;
      METAPS_RETURN_IF_ERROR(rs);
      if (may_repeat) {
        StageTimer dedupe_timer(prof, StageProfile::kPushDedupe);
        if (HasRepeatedSlot(t, slots.data(), n)) {
          auto summed = SumRepeatsBySlot(t, keys, grads);
          // Hits count distinct keys, as misses do (EnsureResident counted hits per position).
          const size_t distinct_misses = miss_idx.empty() ? 0 : miss_keys.size();
          stats.cache_hits -= n - miss_idx.size();
          stats.cache_hits += summed->keys.size() - distinct_misses;
          keys = std::span<const Key>(summed->keys);
          grads = summed->grads.data();
          n = keys.size();
          hold = std::move(summed);  // the caller's buffers are not logged
        }
      }
      StageTimer log_timer(prof, StageProfile::kPushLog);
      const uint64_t seq = next_seq;
      LogHeader h{origin ? kLogMagicOrigin : kLogMagic, t->id, step, static_cast<uint32_t>(n), dim};
      // The origin rides in the push's own record: the push and its id are durable together.
      const LogOrigin o{origin ? origin->request_id : 0, origin ? static_cast<uint32_t>(origin->sender.size()) : 0, 0};
      // The record: this head, then the keys, then the gradients.
      std::string head(reinterpret_cast<const char*>(&h), sizeof(h));
      if (origin) {
        head.append(reinterpret_cast<const char*>(&o), sizeof(o));
        head.append(origin->sender);
      }
      const size_t key_bytes = n * 8, grad_bytes = n * size_t{dim} * 4;
      const size_t bytes = head.size() + key_bytes + grad_bytes;
      if (file_log && n >= kOverlapLogRows) {
        // A big push: its record (checksum and a ~1 MB writev into the page cache) is appended
        // on the log thread while this thread applies the optimizer and then goes on to the
        // next request; the push is acknowledged once the record is durable (durable_at). Rows
        // a push changed are visible before that, but no answer that could show them leaves
        // the server before (its replies wait for AppliedSeq() to be durable), and a write-back
        // stores rows only once the records they include are durable. A failed append cannot
        // undo the rows, so it stops the store (fail-stop): every later call returns the error,
        // nothing more is written back, and a restart replays the log, which ends before it.
        LogAppender::Record r;
        r.seq = seq;
        r.head = std::move(head);
        r.keys = keys.data();
        r.key_bytes = key_bytes;
        r.grads = grads;
        r.grad_bytes = grad_bytes;
        r.hold = hold;  // (a copy: this thread reads keys and grads until it returns)
        if (Status es = appender.Enqueue(file_log.get(), std::move(r)); !es.ok()) return Failed();
        log_timer.Stop();
        StageTimer apply_timer(prof, StageProfile::kPushApply);
        PrepareRowUpdates(t, seq, step, n, slots.data(), grads);
        const size_t rows = row_updates.size(), chunks = (rows + kApplyChunkRows - 1) / kApplyChunkRows;
        RowUpdate* updates = row_updates.data();
        if (NumHelpers() > 0 && chunks > 1) {
          // Helpers (machines with idle cores; none by default below 8 hardware threads) that
          // are free share the rows in chunks (distinct rows: safe in parallel, and a row's
          // result does not depend on the thread).
          std::atomic<size_t> next_chunk{0};
          RunShared([&next_chunk, this, t, updates, rows, chunks, dim](size_t worker) {
            for (size_t c; (c = next_chunk.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
              const size_t begin = c * kApplyChunkRows;
              t->opt->ApplyBatch(updates + begin, std::min(kApplyChunkRows, rows - begin), dim);
              if (worker == 0 && progress_hook && (c + 1) % (kProgressRows / kApplyChunkRows) == 0) progress_hook();
            }
          });
        } else {
          for (size_t begin = 0; begin < rows; begin += kProgressRows) {
            t->opt->ApplyBatch(updates + begin, std::min(kProgressRows, rows - begin), dim);
            if (progress_hook && begin + kProgressRows < rows) progress_hook();
          }
        }
      } else {
        // Durable before anything changes in memory: a failed write leaves the store as it was.
        if (file_log) {
          METAPS_RETURN_IF_ERROR(DrainLog());  // in seq order, after the queued records
          METAPS_RETURN_IF_ERROR(
              file_log->Append(seq, {{head.data(), head.size()}, {keys.data(), key_bytes}, {grads, grad_bytes}})
                  .WithContext("appending the push to the log"));
        } else {
          log_batch.Clear();
          char key[8];
          for (int i = 7; i >= 0; --i) key[7 - i] = static_cast<char>((seq >> (8 * i)) & 0xff);
          char* v = log_batch.PutUninitialized(log_space, std::string_view(key, 8), bytes);
          std::memcpy(v, head.data(), head.size());
          std::memcpy(v + head.size(), keys.data(), key_bytes);
          std::memcpy(v + head.size() + key_bytes, grads, grad_bytes);
          METAPS_RETURN_IF_ERROR(storage->Write(log_batch, options.sync).WithContext("appending the push to the log"));
        }
        appender.MarkDurable(seq);
        log_timer.Stop();
        StageTimer apply_timer(prof, StageProfile::kPushApply);
        ApplyToRows(t, seq, step, n, slots.data(), grads);
      }
      next_seq = seq + 1;
      visible_seq.store(applied_seq, std::memory_order_release);
      *durable_at = seq;
      if (origin) applied_pushes.Add(origin->sender, origin->request_id);
      ++stats.log_records;
      AddPendingLog(seq, bytes);
      if (log_batch.ByteSize() > (64u << 20)) log_batch = StorageBatch();
      if (WritebackDue() || eviction_blocked) {
        writeback_requested = true;
        cv.notify_one();
      }
    }
    return Status::Ok();
  }

  // Backpressure: a push of `n` rows of `t` may take the cache at most a quarter over its budget.
  // When it would go further because too few rows are clean to evict (the writer is falling
  // behind), the pusher waits for the background write-back to clean rows (one batch at a time)
  // and evicts them, instead of writing everything back itself: a full write-back per push, on
  // top of the background one, is what made pushes to a table 10x its cache crawl.
  Status MaybeThrottle(Table* t, size_t n) {
    StageTimer timer(prof, StageProfile::kPushThrottle);
    const uint64_t limit = options.cache_bytes + options.cache_bytes / 4;
    const uint64_t need = std::min<uint64_t>(limit / 2, n * t->charge);
    std::unique_lock<std::mutex> lock(mu);
    if (cached_bytes + need <= limit) return Status::Ok();
    const uint64_t errors_before = stats.writeback_errors;
    while (true) {
      while (cached_bytes + need > limit && EvictOne(t)) {
      }
      if (cached_bytes + need <= limit) return Status::Ok();
      if (stats.writeback_errors != errors_before) return last_writeback_error;
      if (!writeback_running && dirty.empty()) return Status::Ok();  // nothing a write-back could clean
      eviction_blocked = true;
      writeback_requested = true;
      cv.notify_one();
      const uint64_t done = writeback_chunks_done;
      // (With a timeout as well: a request the writer found nothing to do for is no progress.)
      progress_cv.wait_for(lock, std::chrono::milliseconds(50), [&] {
        return writeback_chunks_done != done || (!writeback_running && !writeback_requested);
      });
    }
  }

  Status ImportCheckpoint(const std::string& dir);

  // Log files (segments and spares) kept: twice what the log holds between two write-backs
  // (writeback_log_bytes), at least 4 and at most 128. The log grows past writeback_log_bytes
  // while a write-back runs; in a steady state its peak fits, so every new segment is a spare.
  size_t MaxLogFiles() const {
    return static_cast<size_t>(
        std::clamp<uint64_t>(2 * (options.writeback_log_bytes / options.log_segment_bytes) + 2, 4, 128));
  }
};

// ---- ParamStore ----------------------------------------------------------------------------------

int StoreOptions::ResolveHelperThreads(int configured) {
  if (configured >= 0) return configured;
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(hw / 4 - 1, 0, 7);
}

ParamStore::ParamStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::string ParamStore::CheckpointDbDir(const std::string& checkpoint_dir) { return checkpoint_dir + "/db"; }

namespace {
bool DirIsEmptyOrAbsent(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return true;
  return fs::is_directory(dir, ec) && fs::is_empty(dir, ec);
}

Result<nlohmann::json> ReadManifest(const std::string& dir) {
  std::ifstream in(dir + "/" + kManifestName);
  if (!in) return NotFound(dir + " is not a complete checkpoint: no " + kManifestName);
  try {
    nlohmann::json j;
    in >> j;
    if (j.value("format", "") != "metaps-ps-checkpoint") return DataLoss(dir + "/" + kManifestName + ": unknown format");
    return j;
  } catch (const std::exception& e) {
    return DataLoss(dir + "/" + kManifestName + ": " + e.what());
  }
}
}  // namespace

Status ParamStore::PrepareDataDir(const StoreOptions& options) {
  if (options.restore_from.empty() || !DirIsEmptyOrAbsent(options.data_dir)) return Status::Ok();
  METAPS_RETURN_IF_ERROR(ReadManifest(options.restore_from).status());
  const std::string src = CheckpointDbDir(options.restore_from);
  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  if (ec) return Internal("cannot create " + options.data_dir + ": " + ec.message());
  for (const auto& entry : fs::directory_iterator(src, ec)) {
    if (!entry.is_regular_file()) continue;
    const fs::path to = fs::path(options.data_dir) / entry.path().filename();
    std::error_code lec;
    // SST files are immutable: a hard link is a safe copy. Everything else (MANIFEST, CURRENT,
    // OPTIONS, WAL) may be appended to by the new database, so it is copied.
    if (entry.path().extension() == ".sst") fs::create_hard_link(entry.path(), to, lec);
    if (entry.path().extension() != ".sst" || lec) {
      fs::copy_file(entry.path(), to, fs::copy_options::overwrite_existing, lec);
      if (lec) return Internal("restoring " + entry.path().string() + ": " + lec.message());
    }
  }
  if (ec) return NotFound("cannot read checkpoint database " + src + ": " + ec.message());
  return Status::Ok();
}

// Copies a checkpoint's data into an empty storage through ordinary writes (the slow path, for a
// storage that was opened before PrepareDataDir could fill its directory).
Status ParamStore::Impl::ImportCheckpoint(const std::string& dir) {
  METAPS_ASSIGN_OR_RETURN(auto opened, ParamStore::OpenCheckpoint(dir));
  std::unique_ptr<Storage> src = std::move(opened.second);
  StorageBatch batch;
  for (const char* name : ParamStore::kSpaces) {
    METAPS_ASSIGN_OR_RETURN(StorageSpace from, src->FindSpace(name));
    METAPS_ASSIGN_OR_RETURN(StorageSpace to, storage->FindSpace(name));
    Status wst;
    METAPS_RETURN_IF_ERROR(src->Scan(from, "", "", [&](std::string_view k, std::string_view v) {
      batch.Put(to, k, v);
      if (batch.ByteSize() >= (8u << 20)) {
        wst = storage->Write(batch, false);
        batch.Clear();
        if (!wst.ok()) return false;
      }
      return true;
    }));
    METAPS_RETURN_IF_ERROR(wst);
  }
  METAPS_RETURN_IF_ERROR(storage->Write(batch, true));
  return src->Close();
}

Result<std::pair<nlohmann::json, std::unique_ptr<Storage>>> ParamStore::OpenCheckpoint(
    const std::string& dir) {
  METAPS_ASSIGN_OR_RETURN(nlohmann::json manifest, ReadManifest(dir));
  const std::string db = CheckpointDbDir(dir);
  std::unique_ptr<Storage> src;
  if (fs::exists(db + "/memory_storage.dump")) {
    METAPS_ASSIGN_OR_RETURN(src, MemoryStorage::Load(db));
  } else {
    RocksDbOptions ro;
    ro.read_only = true;
    ro.create_if_missing = false;
    METAPS_ASSIGN_OR_RETURN(src, RocksDbStorage::Open(db, ro));
  }
  return std::make_pair(std::move(manifest), std::move(src));
}

Result<std::unique_ptr<ParamStore>> ParamStore::Open(StoreOptions options, std::vector<TableSpec> tables,
                                                     std::unique_ptr<Storage> storage) {
  if (!storage) return InvalidArgument("ParamStore::Open: no storage");
  if (options.cache_bytes == 0) return InvalidArgument("cache_bytes must be > 0");
  if (options.writeback_interval_ms == 0) options.writeback_interval_ms = 1;
  auto impl = std::make_unique<Impl>();
  impl->storage = std::move(storage);
  METAPS_ASSIGN_OR_RETURN(impl->rows_space, impl->storage->FindSpace("rows"));
  METAPS_ASSIGN_OR_RETURN(impl->log_space, impl->storage->FindSpace("log"));
  METAPS_ASSIGN_OR_RETURN(impl->meta_space, impl->storage->FindSpace("meta"));
  impl->dirty_threshold = std::max<uint64_t>(1, std::min(options.writeback_dirty_bytes, options.cache_bytes / 2));
  if (options.writeback_log_bytes == 0) options.writeback_log_bytes = 1;
  if (options.log_segment_bytes < 4096) options.log_segment_bytes = 4096;
  options.helper_threads = StoreOptions::ResolveHelperThreads(options.helper_threads);
  for (size_t i = 0; i < tables.size(); ++i) {
    const TableSpec& spec = tables[i];
    if (spec.name.empty()) return InvalidArgument("tables[" + std::to_string(i) + "]: empty name");
    if (spec.dim == 0) return InvalidArgument("table " + spec.name + ": dim must be >= 1");
    if (impl->Lookup(spec.name)) return InvalidArgument("duplicate table name \"" + spec.name + "\"");
    auto t = std::make_unique<Impl::Table>();
    t->spec = spec;
    t->index = static_cast<uint32_t>(i);
    auto opt = Optimizer::Create(spec.optimizer);
    if (!opt.ok()) return opt.status().WithContext("table " + spec.name);
    t->opt = std::move(opt).value();
    t->state_floats = t->opt->StateFloats(spec.dim);
    t->row_floats = spec.dim + t->state_floats;
    t->init_seed = Hash64(spec.name);
    // Slots start on a cache line when that wastes at most an eighth of the slot (a pull then
    // reads ceil(dim * 4 / 64) lines per row); otherwise on 8 bytes.
    t->meta_offset = MetaOffset(t->row_floats);
    t->stride = ParamStore::SlotBytes(t->row_floats);
    t->charge = t->stride + kIndexOverheadBytes;
    // Chunks of about 16 MiB (at least one row): huge pages (AllocateMaybeHuge).
    uint32_t shift = 0;
    while (shift < 16 && (size_t{2} << shift) * t->stride <= (16u << 20)) ++shift;
    t->chunk_shift = shift;
    impl->tables.push_back(std::move(t));
  }
  impl->applied_pushes = DedupeWindow(options.dedupe_senders, options.dedupe_ids_per_sender);
  impl->options = std::move(options);

  bool fresh = false;
  {
    std::string v;
    Status st = impl->storage->Get(impl->meta_space, kFormatKey, &v);
    fresh = st.code() == StatusCode::kNotFound;
    if (!st.ok() && !fresh) return st;
  }
  if (fresh && !impl->options.restore_from.empty()) {
    METAPS_RETURN_IF_ERROR(impl->ImportCheckpoint(impl->options.restore_from)
                               .WithContext("restoring from " + impl->options.restore_from));
  }
  if (!impl->options.data_dir.empty() && !impl->options.log_in_storage) {
    METAPS_ASSIGN_OR_RETURN(impl->file_log,
                            FileLog::Open(impl->options.data_dir + "/" + kPushLogDir, impl->options.sync,
                                          impl->options.log_segment_bytes, impl->MaxLogFiles(),
                                          impl->options.LogDirect()));
  }
  METAPS_RETURN_IF_ERROR(impl->LoadRegistry(&fresh));
  METAPS_RETURN_IF_ERROR(impl->Replay());
  METAPS_RETURN_IF_ERROR(impl->StartLineageSegment());
  Impl* raw = impl.get();
  raw->writer = std::thread([raw] {
    NameThisThread("ps-writeback");
    raw->WriterLoop();
  });
  return std::unique_ptr<ParamStore>(new ParamStore(std::move(impl)));
}

ParamStore::~ParamStore() {
  if (!impl_) return;
  if (impl_->options.final_flush_on_close) (void)impl_->WriteBack();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
  (void)impl_->storage->Close();
}

size_t ParamStore::SlotBytes(uint32_t row_floats) {
  const size_t packed = MetaOffset(row_floats) + sizeof(SlotMeta);
  const size_t lined = (packed + 63) & ~size_t{63};
  return (lined - packed) * 8 <= packed ? lined : packed;
}

const TableSpec* ParamStore::FindTable(std::string_view name) const {
  Impl::Table* t = impl_->Lookup(name);
  return t ? &t->spec : nullptr;
}

Status ParamStore::Pull(std::string_view table, std::span<const Key> keys, float* out) {
  METAPS_ASSIGN_OR_RETURN(Impl::Table * t, impl_->FindOrError(table, false));
  if (keys.empty()) return Status::Ok();
  Impl& m = *impl_;
  StageTimer lock_timer(m.prof, StageProfile::kPullLock);
  std::lock_guard<std::mutex> lock(m.mu);
  lock_timer.Stop();
  METAPS_RETURN_IF_ERROR(m.Failed());
  m.NewEpoch();
  const size_t n = keys.size();
  const uint32_t dim = t->spec.dim;
  const size_t bytes = size_t{dim} * 4;
  // Resident rows are copied out as they are found (GatherResident: on this thread, or shared
  // with the helpers for a big pull). The misses are then loaded (pinned) and copied.
  StageTimer copy_timer(m.prof, StageProfile::kPullCopy);
  m.slots.resize(n);
  m.pull_miss_pos.clear();
  const size_t workers = n >= Impl::kSharedPullRows ? m.NumHelpers() + 1 : 1;
  if (workers == 1) {
    m.GatherResident(t, keys, 0, n, out, false, &m.pull_miss_pos);
  } else {
    // Chunks of keys to whichever thread is free; each gathers its chunks' resident rows and
    // notes its misses, which are then loaded here as for a pull on one thread.
    const size_t chunks = (n + Impl::kPullChunkRows - 1) / Impl::kPullChunkRows;
    std::atomic<size_t> next_chunk{0};
    m.helper_miss_pos.resize(workers);
    for (auto& v : m.helper_miss_pos) v.clear();  // a helper may not join this pull
    const std::function<void(size_t)> work = [&](size_t w) {
      std::vector<uint32_t>* misses = w == 0 ? &m.pull_miss_pos : &m.helper_miss_pos[w];
      for (size_t c; (c = next_chunk.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
        const size_t begin = c * Impl::kPullChunkRows;
        m.GatherResident(t, keys, begin, std::min(n, begin + Impl::kPullChunkRows), out, true, misses);
      }
    };
    m.RunShared(work);
    for (size_t w = 1; w < workers; ++w) {
      m.pull_miss_pos.insert(m.pull_miss_pos.end(), m.helper_miss_pos[w].begin(), m.helper_miss_pos[w].end());
    }
  }
  copy_timer.Stop();
  m.stats.cache_hits += n - m.pull_miss_pos.size();
  if (!m.pull_miss_pos.empty()) {
    m.pull_miss_keys.resize(m.pull_miss_pos.size());
    for (size_t j = 0; j < m.pull_miss_pos.size(); ++j) m.pull_miss_keys[j] = keys[m.pull_miss_pos[j]];
    m.slots.resize(m.pull_miss_pos.size());
    METAPS_RETURN_IF_ERROR(m.EnsureResident(t, m.pull_miss_keys, m.slots.data()));
    for (size_t j = 0; j < m.pull_miss_pos.size(); ++j) {
      std::memcpy(out + size_t{m.pull_miss_pos[j]} * dim, t->Weights(m.slots[j]), bytes);
    }
  }
  if (m.prof.on()) m.prof.Op(false, keys.size());
  return Status::Ok();
}

Status ParamStore::Push(std::string_view table, std::span<const Key> keys, std::span<const float> grads,
                        uint64_t step, const PushOrigin* origin) {
  uint64_t durable_at = 0;
  METAPS_RETURN_IF_ERROR(PushDeferred(table, keys, grads, step, origin, nullptr, &durable_at));
  return WaitDurable(durable_at);
}

Status ParamStore::PushDeferred(std::string_view table, std::span<const Key> keys, std::span<const float> grads,
                                uint64_t step, const PushOrigin* origin, std::shared_ptr<const void> hold,
                                uint64_t* durable_at) {
  *durable_at = 0;
  METAPS_ASSIGN_OR_RETURN(Impl::Table * t, impl_->FindOrError(table, false));
  const uint32_t dim = t->spec.dim;
  if (grads.size() != keys.size() * size_t{dim}) {
    return InvalidArgument("push to table " + t->spec.name + ": " + std::to_string(keys.size()) + " keys need " +
                           std::to_string(keys.size() * size_t{dim}) + " gradient floats (dim " +
                           std::to_string(dim) + "), got " + std::to_string(grads.size()));
  }
  if (keys.empty()) return Status::Ok();
  // (Far beyond any message the server accepts; SumRepeatsBySlot numbers the keys in 32 bits.)
  if (keys.size() > UINT32_MAX / 2) return InvalidArgument("push to table " + t->spec.name + ": too many keys");
  Impl& m = *impl_;
  METAPS_RETURN_IF_ERROR(m.MaybeThrottle(t, keys.size()));
  if (m.prof.on()) m.prof.Op(true, keys.size());
  // Nearly every push has distinct keys (clients sum repeats); PushKeys sums any repeats its
  // rows' slots show.
  return m.PushKeys(t, keys, grads.data(), step, origin, std::move(hold), durable_at, /*may_repeat=*/true);
}

void ParamStore::SetProgressHook(std::function<void()> hook) { impl_->progress_hook = std::move(hook); }

void ParamStore::SetDurableHook(std::function<void()> hook) { impl_->appender.SetHook(std::move(hook)); }

uint64_t ParamStore::AppliedSeq() const { return impl_->visible_seq.load(std::memory_order_acquire); }

uint64_t ParamStore::DurableSeq() const { return impl_->appender.durable(); }

Status ParamStore::WaitDurable(uint64_t seq) const {
  Status s = impl_->appender.WaitDurable(seq);
  if (s.ok()) return s;
  return s.WithContext(Impl::kLogStopped);
}

Status ParamStore::PullDense(std::string_view table, float* out) {
  METAPS_ASSIGN_OR_RETURN(Impl::Table * t, impl_->FindOrError(table, true));
  Impl& m = *impl_;
  const Key key = 0;
  std::lock_guard<std::mutex> lock(m.mu);
  METAPS_RETURN_IF_ERROR(m.Failed());
  m.NewEpoch();
  uint32_t slot;
  METAPS_RETURN_IF_ERROR(m.EnsureResident(t, std::span<const Key>(&key, 1), &slot));
  std::memcpy(out, t->Weights(slot), size_t{t->spec.dim} * 4);
  return Status::Ok();
}

Status ParamStore::PushDense(std::string_view table, std::span<const float> grads, uint64_t step,
                             const PushOrigin* origin) {
  METAPS_ASSIGN_OR_RETURN(Impl::Table * t, impl_->FindOrError(table, true));
  if (grads.size() != t->spec.dim) {
    return InvalidArgument("push to dense tensor " + t->spec.name + ": expected " + std::to_string(t->spec.dim) +
                           " gradient floats, got " + std::to_string(grads.size()));
  }
  METAPS_RETURN_IF_ERROR(impl_->MaybeThrottle(t, 1));
  const Key key = 0;
  uint64_t durable_at = 0;  // one row: appended before it is applied
  return impl_->PushKeys(t, std::span<const Key>(&key, 1), grads.data(), step, origin, nullptr, &durable_at,
                         /*may_repeat=*/false);
}

Status ParamStore::Failure() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Failed();
}

bool ParamStore::PushApplied(std::string_view sender, uint64_t request_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->applied_pushes.Seen(sender, request_id);
}

Status ParamStore::Flush() { return impl_->WriteBack(); }

Status ParamStore::Checkpoint(const std::string& dir) {
  if (!DirIsEmptyOrAbsent(dir)) return Status(StatusCode::kAlreadyExists, "checkpoint dir " + dir + " is not empty");
  METAPS_RETURN_IF_ERROR(Flush().WithContext("checkpoint"));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir + ": " + ec.message());
  METAPS_RETURN_IF_ERROR(impl_->storage->Checkpoint(CheckpointDbDir(dir)));
  nlohmann::json j;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    j["format"] = "metaps-ps-checkpoint";
    j["version"] = 1;
    j["data_format"] = kFormatValue;
    j["created_unix_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    j["applied_seq"] = impl_->applied_seq;
    j["lineage"] = LineageToJson(impl_->lineage);
    j["written_seq"] = impl_->written_seq;
    j["next_seq"] = impl_->next_seq;
    j["db"] = "db";
    nlohmann::json tabs = nlohmann::json::array();
    for (const auto& t : impl_->tables) {
      tabs.push_back({{"name", t->spec.name},
                      {"id", t->id},
                      {"dim", t->spec.dim},
                      {"dense", t->spec.dense},
                      {"optimizer", std::string(OptimizerKindName(t->spec.optimizer.kind))},
                      {"state_floats", t->state_floats}});
    }
    j["tables"] = tabs;
  }
  return WriteFileAtomically(dir + "/" + kManifestName, j.dump(2) + "\n");
}

Result<RowInfo> ParamStore::GetRow(std::string_view table, Key key) {
  Impl::Table* t = impl_->Lookup(table);
  if (t == nullptr) return NotFound("unknown table \"" + std::string(table) + "\"");
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  METAPS_RETURN_IF_ERROR(m.Failed());
  m.NewEpoch();
  uint32_t slot;
  METAPS_RETURN_IF_ERROR(m.EnsureResident(t, std::span<const Key>(&key, 1), &slot));
  SlotMeta* meta = t->Meta(slot);
  RowInfo r;
  r.value.assign(t->Weights(slot), t->Weights(slot) + t->spec.dim);
  r.update_count = meta->update_count;
  r.last_step = meta->last_step;
  return r;
}

StoreStats ParamStore::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  StoreStats s = impl_->stats;
  s.rows_cached = impl_->rows_cached;
  s.cache_bytes = impl_->cached_bytes;
  s.rows_dirty = impl_->dirty.size();
  s.log_records_pending = impl_->log_records_pending;
  s.log_segments_created = impl_->file_log ? impl_->file_log->segments_created() : 0;
  s.log_segments_reused = impl_->file_log ? impl_->file_log->segments_reused() : 0;
  s.log_direct_io = impl_->file_log && impl_->file_log->writing_direct();
  s.log_syncs = impl_->file_log ? impl_->file_log->fsyncs() : 0;
  s.helper_threads = impl_->NumHelpers();
  s.helper_joins = impl_->helpers ? impl_->helpers->joins() : 0;
  return s;
}

}  // namespace metaps::ps
