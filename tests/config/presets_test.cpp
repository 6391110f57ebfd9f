// core/config/presets.cpp: the catalogue's parameter and FLOP counts against OLMo-core's.
#include <gtest/gtest.h>

#include "core/config/config.h"
#include "core/error.h"
#include "test_util.h"


namespace {

using olm::testing::expect_error;

TEST(Config, PresetsMatchOlmoCoreCounts) {
  // Numbers computed by OLMo-core 3.0.0 (TransformerConfig.<preset>(vocab).num_params and
  // .build(init_device="meta").num_flops_per_token(256)).
  const auto c = olm::preset("olmo2_30M", 16384);
  EXPECT_EQ(c.num_params().total, 11800832);
  EXPECT_EQ(c.num_params().non_embedding, 7606528);
  // Hand-derived from the formula: per layer 6 x (4 x 256 x 256 + 2 x 256) attention params
  // (q/k/v/out + q_norm/k_norm), 6 x 3 x 256 x 768 feed-forward params, 12 x 256 x 257 / 2
  // causal attention pairs per token at seq 256; plus 6 x (256 + 256 x 16384) for the head.
  const int64_t per_layer = 6 * (4 * 256 * 256 + 2 * 256) + 6 * 3 * 256 * 768 + 12 * 256 * (256 * 257 / 2) / 256;
  EXPECT_EQ(c.num_flops_per_token(256), 4 * per_layer + 6 * (256 + 256 * 16384));
  EXPECT_EQ(olm::preset("llama2_7B", 32000).num_params().total, 6738415616);
  EXPECT_GE(olm::preset_names().size(), 25u);
  expect_error([] { olm::preset("olmo9_1T", 10); }, olm::ErrorCode::kInvalidArgument, "olmo2_30M");
  expect_error([] { olm::preset("olmo2_30M", 0); }, olm::ErrorCode::kInvalidArgument, "vocab_size");
  expect_error([&] { c.num_flops_per_token(0); }, olm::ErrorCode::kInvalidArgument, "seq_len");
}

TEST(Config, Olmo3Gemma3AndQwen3PresetsMatchOlmoCoreCounts) {
  // OLMo-core 3.0.0: c = TransformerConfig.<preset>(vocab_size=V); c.num_params,
  // c.num_non_embedding_params, c.build(init_device="meta").num_flops_per_token(4096 and 512).
  // The FLOPs depend on the sliding windows (OLMo-3: 4096 on 3 of 4 layers; Gemma-3: 1024 on 5
  // of 6), so a wrong per-layer window changes them.
  struct Expected {
    const char* name;
    int64_t vocab, total, non_embedding, flops_4096, flops_512;
  };
  for (const auto& e : std::vector<Expected>{
           {"olmo3_7B", 100278, 7298011136, 6887272448, 44544073728, 41725501440},
           {"olmo3_30M", 16384, 11800832, 7606528, 70798848, 48778752},
           {"olmo3_1B", 100278, 1484613632, 1279244288, 8480575488, 7775932416},
           {"gemma3_1B", 262208, 3278793600, 2674666368, 16818181632, 16230945024},
           {"gemma3_27B", 262208, 29698899552, 28289269344, 174055307328, 170753550912},
           // Qwen-3: tied heads (0.6B-4B) count the embeddings once.
           {"qwen3_0_6B", 151936, 596049920, 440467456, 4985585664, -1},
           {"qwen3_1_7B", 151936, 1720574976, 1409410048, 11732391936, -1},
           {"qwen3_4B", 151936, 4022468096, 3633511936, 27758466048, -1},
           {"qwen3_8B", 151936, 8190735360, 7568405504, 49033426944, -1},
           {"qwen3_32B", 151936, 30748857344, 29970945024, 187876767744, -1}}) {
    SCOPED_TRACE(e.name);
    const auto c = olm::preset(e.name, e.vocab);
    EXPECT_EQ(c.num_params().total, e.total);
    EXPECT_EQ(c.num_params().non_embedding, e.non_embedding);
    EXPECT_EQ(c.num_flops_per_token(4096), e.flops_4096);
    if (e.flops_512 >= 0) EXPECT_EQ(c.num_flops_per_token(512), e.flops_512);
  }
  // Gemma-3's layer kinds: local layers have the window and theta 10k, every sixth is global.
  const auto gemma = olm::preset("gemma3_1B", 1000);  // kept alive: `blocks` refers into it
  const auto& blocks = gemma.spec().blocks;
  ASSERT_EQ(blocks.size(), 26u);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const bool global = i % 6 == 5;
    EXPECT_EQ(blocks[i].attention.window_size.has_value(), !global) << "layer " << i;
    EXPECT_EQ(blocks[i].attention.rope->theta, global ? 1e6 : 1e4) << "layer " << i;
  }
}

}  // namespace
