#include "core/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace olm {
namespace {

constexpr size_t kMinCachedBytes = size_t(1) << 20;
// Rounding lets a request reuse a block a little larger than it (sequence lengths that vary
// by a few tokens), at most 64 KiB wasted per block of at least 1 MiB.
constexpr size_t kGranularity = size_t(1) << 16;

size_t cache_limit_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return size_t(1) << 30;
  return static_cast<size_t>(pages) * static_cast<size_t>(page) / 4;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(c10::Allocator* fallback) : fallback_(fallback), limit_(cache_limit_bytes()) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCachedBytes || !enabled_.load(std::memory_order_relaxed)) return fallback_->allocate(n);
    const size_t size = (n + kGranularity - 1) / kGranularity * kGranularity;
    void* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        block = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= size;
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (block == nullptr) block = c10::alloc_cpu(size);  // throws c10::Error when out of memory
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_[block] = size;
    }
    return {block, block, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &CachingCpuAllocator::release; }
  void copy_data(void* dest, const void* src, size_t count) const override { default_copy_data(dest, src, count); }

  void set_enabled(bool enabled) { enabled_.store(enabled, std::memory_order_relaxed); }

  CpuAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, misses_, cached_bytes_, limit_};
  }

  void release_cached() {
    std::vector<void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& [size, list] : free_) blocks.insert(blocks.end(), list.begin(), list.end());
      free_.clear();
      cached_bytes_ = 0;
    }
    for (void* b : blocks) c10::free_cpu(b);
  }

  static CachingCpuAllocator* instance;

 private:
  static void release(void* block) { instance->put_back(block); }

  void put_back(void* block) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = in_use_.find(block);
      if (it == in_use_.end()) {
        // Allocator::raw_allocate() of a small block: it came from the fallback (see
        // allocate()) but is freed through our raw_deleter().
        fallback_raw_delete(block);
        return;
      }
      const size_t size = it->second;
      in_use_.erase(it);
      if (cached_bytes_ + size <= limit_) {
        free_[size].push_back(block);
        cached_bytes_ += size;
        return;
      }
    }
    c10::free_cpu(block);
  }

  void fallback_raw_delete(void* block) const {
    if (c10::DeleterFnPtr d = fallback_->raw_deleter()) d(block);
    else c10::free_cpu(block);
  }

  c10::Allocator* fallback_;
  const size_t limit_;
  std::atomic<bool> enabled_{true};
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> in_use_;
  size_t cached_bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

CachingCpuAllocator* CachingCpuAllocator::instance = nullptr;

// Never destroyed: tensors may be freed during static destruction, after main returns.
CachingCpuAllocator& allocator() {
  static CachingCpuAllocator* a = [] {
    auto* created = new CachingCpuAllocator(c10::GetCPUAllocator());
    CachingCpuAllocator::instance = created;
    return created;
  }();
  return *a;
}

}  // namespace

void install_caching_cpu_allocator() {
  static std::once_flag once;
  // Priority 1: above LibTorch's own registration (0), so nothing in LibTorch replaces it.
  std::call_once(once, [] { c10::SetCPUAllocator(&allocator(), /*priority=*/1); });
}

void set_cpu_allocator_caching(bool enabled) { allocator().set_enabled(enabled); }

CpuAllocatorStats cpu_allocator_stats() { return allocator().stats(); }

void release_cached_cpu_memory() { allocator().release_cached(); }

}  // namespace olm
