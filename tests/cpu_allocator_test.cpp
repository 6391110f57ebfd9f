// core/cpu_allocator: large host blocks are reused instead of returned to the system, small
// ones bypass the cache, the cache stays within its bound, and training gives bit-identical
// numbers with the cache on and off.
#include "core/cpu_allocator.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <thread>
#include <vector>

#include "core/model.h"
#include "core/train/trainer.h"

namespace {

class CpuAllocator : public ::testing::Test {
 protected:
  void SetUp() override {
    olm::install_caching_cpu_allocator();
    olm::set_cpu_allocator_caching(true);
    olm::release_cached_cpu_memory();
  }
  void TearDown() override { olm::set_cpu_allocator_caching(true); }
};

TEST_F(CpuAllocator, ReusesAFreedLargeBlockOfTheSameRoundedSize) {
  void* first = nullptr;
  {
    auto t = at::empty({3 << 20}, at::kByte);  // 3 MiB
    first = t.data_ptr();
  }
  const auto before = olm::cpu_allocator_stats();
  EXPECT_EQ(before.cached_bytes, size_t(3) << 20);
  auto again = at::empty({(3 << 20) - 100}, at::kByte);  // rounds up to the same 3 MiB block
  EXPECT_EQ(again.data_ptr(), first);
  const auto after = olm::cpu_allocator_stats();
  EXPECT_EQ(after.hits, before.hits + 1);
  EXPECT_EQ(after.cached_bytes, 0u);
  EXPECT_LE(after.cached_bytes, after.cache_limit);
}

TEST_F(CpuAllocator, SmallBlocksAndDisabledCachingBypassTheCache) {
  const auto before = olm::cpu_allocator_stats();
  { auto small = at::empty({1000}, at::kFloat); }  // 4 KB
  olm::set_cpu_allocator_caching(false);
  { auto big = at::empty({2 << 20}, at::kByte); }
  const auto after = olm::cpu_allocator_stats();
  EXPECT_EQ(after.hits, before.hits);
  EXPECT_EQ(after.misses, before.misses);
  EXPECT_EQ(after.cached_bytes, 0u);
}

// raw_allocate()/raw_deallocate() (LibTorch's own scratch buffers) pair through raw_deleter(),
// for small blocks (served by LibTorch's allocator) and large ones alike.
TEST_F(CpuAllocator, RawAllocationsOfEverySizeFreeThroughTheRawDeleter) {
  c10::Allocator* allocator = c10::GetCPUAllocator();
  for (size_t n : {size_t(64), size_t(100000), size_t(3) << 20}) {
    void* p = allocator->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    std::memset(p, 1, n);
    allocator->raw_deallocate(p);
  }
  EXPECT_EQ(olm::cpu_allocator_stats().cached_bytes, size_t(3) << 20);
}

TEST_F(CpuAllocator, ReleaseReturnsEveryCachedBlock) {
  { auto a = at::empty({4 << 20}, at::kByte), b = at::empty({5 << 20}, at::kByte); }
  EXPECT_EQ(olm::cpu_allocator_stats().cached_bytes, size_t(9) << 20);
  olm::release_cached_cpu_memory();
  EXPECT_EQ(olm::cpu_allocator_stats().cached_bytes, 0u);
}

// Blocks handed out and freed on many threads at once: each thread's data survives intact and
// the books balance (every block is in use or cached, never both).
TEST_F(CpuAllocator, ConcurrentUseKeepsBlocksApart) {
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 1);
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([w, &ok] {
      for (int i = 0; i < 50; ++i) {
        auto t = at::full({(1 << 18) + 1024 * (i % 3)}, static_cast<float>(w * 1000 + i));  // >= 1 MiB
        auto u = at::full({1 << 18}, static_cast<float>(-w));
        if (t.min().item<float>() != w * 1000 + i || u.max().item<float>() != -w) ok[w] = 0;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int w = 0; w < 4; ++w) EXPECT_TRUE(ok[w]) << "thread " << w;
}

std::vector<double> train_losses(bool caching) {
  olm::set_cpu_allocator_caching(caching);
  // vocab 2048 at 4 x 64 tokens: the logits and their gradient are 2 MiB each, so cached.
  auto config = olm::Config::from_json(R"({"d_model": 32, "vocab_size": 2048, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
      "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}, "init_seed": 3})");
  auto model = std::make_shared<olm::Model>(config, "cpu", olm::ModelOptions{});
  auto train = olm::train::TrainConfig::from_json(R"({"sequence_length": 64, "global_batch_size": 256,
      "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.001}})");
  olm::train::Trainer trainer(model, train);
  std::vector<double> losses;
  for (uint64_t s = 0; s < 4; ++s) {
    auto g = at::detail::createCPUGenerator(s + 1);
    losses.push_back(trainer.train_batch(at::randint(2048, {4, 64}, g, at::kLong)).ce_loss);
  }
  for (auto& p : model->module().named_parameters()) losses.push_back(p.tensor->sum().item<double>());
  return losses;
}

TEST_F(CpuAllocator, TrainingIsBitIdenticalWithAndWithoutTheCache) {
  const auto without = train_losses(false);
  const auto hits_before = olm::cpu_allocator_stats().hits;
  const auto with = train_losses(true);
  EXPECT_GT(olm::cpu_allocator_stats().hits, hits_before);  // the cache was really used
  ASSERT_EQ(with.size(), without.size());
  for (size_t i = 0; i < with.size(); ++i) EXPECT_EQ(with[i], without[i]) << "value " << i;
}

}  // namespace
