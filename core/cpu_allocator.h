// A caching allocator for LibTorch's host tensors. glibc serves every block of 128 KiB and
// more with its own mmap and returns it with munmap on free, so a training step that frees
// and re-requests the same large buffers (logits, their log-softmax and gradient: 256 MiB each
// for a 16k vocabulary at 4096 tokens) has the kernel clear and fault in every page of them
// again, every step (18% of a 30M step's CPU time, issue 17). Blocks of 1 MiB and more are
// kept on free and handed out again for a request of the same rounded size; smaller ones go
// to LibTorch's own allocator. Numerics are untouched: only where the bytes live changes.
//
// The allocator is LibTorch's CPU allocator for the whole process once installed; libolm
// ships a private LibTorch, so this affects olm's tensors only. Cached bytes are bounded
// (a quarter of physical memory); past the bound, freed blocks go back to the system.
#pragma once
#include <cstddef>
#include <cstdint>

namespace olm {

// Installs the allocator (idempotent, thread-safe). Model construction calls it.
void install_caching_cpu_allocator();

// Whether new large blocks come from the cache (default true). False sends every request to
// LibTorch's allocator, for A/B measurements (`olm bench --no-caching-allocator`); blocks
// handed out before are still freed correctly.
void set_cpu_allocator_caching(bool enabled);

struct CpuAllocatorStats {
  uint64_t hits = 0;          // large requests served from the cache
  uint64_t misses = 0;        // large requests that allocated a new block
  size_t cached_bytes = 0;    // held in the cache, free for reuse
  size_t cache_limit = 0;     // cached_bytes never exceeds this
};
CpuAllocatorStats cpu_allocator_stats();

// Returns every cached block to the system.
void release_cached_cpu_memory();

}  // namespace olm
