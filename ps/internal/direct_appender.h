// Appending a byte stream to a file opened with O_DIRECT (the push log, ps/param_store.cc FileLog).
//
// Direct I/O reads and writes whole blocks from block-aligned memory at block-aligned offsets.
// The appender keeps the stream's last, partial block in memory and writes it again, completed
// by the next bytes, with the next append: the file's bytes are exactly the stream's, in the
// same places as a buffered writer would put them, so readers (the log's replay, through the
// page cache) see no difference. Past the stream's end, the last block written is zero-filled.
//
// Why: a buffered append copies every pushed byte into the page cache, and the log's pages
// stay dirty there until the kernel writes them back. From a staging buffer on huge pages the
// same append costs less CPU (one user-space copy; the device reads the buffer), and the log
// no longer counts against the kernel's dirty-page thresholds (docs/storage.md).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace metaps::ps::internal {

class DirectAppender {
 public:
  // Alignment of offsets, lengths and memory: the largest logical block size of common devices.
  static constexpr size_t kBlock = 4096;

  // `stage_bytes` (rounded up to 2 MiB) of staging memory, on transparent huge pages where the
  // kernel gives them (fewer pages to pin per write).
  explicit DirectAppender(size_t stage_bytes = size_t{4} << 20);
  ~DirectAppender();
  DirectAppender(const DirectAppender&) = delete;
  DirectAppender& operator=(const DirectAppender&) = delete;

  // Whether the staging memory could be mapped; if not, every call fails.
  bool ok() const { return stage_ != nullptr; }

  // Starts the stream of `fd` (opened with O_DIRECT) at offset 0 with `head`: writes the first
  // block, `head` then zeros. REQUIRES: head_bytes <= kBlock.
  Status Start(int fd, const void* head, size_t head_bytes);

  // Room for `n` more bytes in the staging memory, after the stream's end and what earlier
  // Reserve calls staged: the caller writes them there; Flush writes them to the file. Null if
  // they do not fit (Flush first, or use Append).
  char* Reserve(size_t n);
  // Bytes reserved since the last Flush.
  size_t staged() const { return staged_; }
  // Writes the staged bytes; the stream then ends after them. On failure the staged bytes are
  // dropped and the stream's end stays where it was: the next append overwrites whatever part of
  // them reached the file.
  Status Flush();

  // Appends the concatenation of iov[0..count), staged and written a stage at a time (Flush
  // first). On failure the stream's end stays where it was.
  Status Append(const iovec* iov, int count);

  // Where the stream ends in the file (not counting staged bytes).
  off_t end() const { return end_; }

 private:
  // Writes stage_[0, len) rounded up to whole blocks (zero-filled) at `at`.
  Status WriteStage(size_t len, off_t at);

  int fd_ = -1;
  char* map_ = nullptr;    // the mapping
  size_t map_bytes_ = 0;
  char* stage_ = nullptr;  // 2 MiB aligned, within map_
  size_t stage_bytes_ = 0;
  off_t end_ = 0;          // the stream's end; its last partial block is stage_[0, end_ % kBlock)
  size_t staged_ = 0;      // reserved bytes, after that partial block
};

}  // namespace metaps::ps::internal
