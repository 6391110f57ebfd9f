// OLMo-core's preset configurations (olmo_core.nn.transformer.TransformerConfig classmethods),
// built the way OLMo-core's `llama_like` builds them, including its float arithmetic for the
// feed-forward hidden size.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "core/config/config.h"
#include "core/error.h"

namespace olm {
namespace {

struct LlamaLike {
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  std::optional<int64_t> n_kv_heads;
  std::optional<int64_t> head_dim;
  bool qk_norm = false;
  double layer_norm_eps = 1e-5;
  double rope_theta = 500000;
  int64_t hidden_size_multiple_of = 256;
  std::optional<double> hidden_size_multiplier;
  std::string block_name = "default";
  // OLMo-3: sliding windows of 4096 on three layers of every four, the last layer full.
  bool olmo3_sliding_window = false;
  // Qwen-3: every norm Qwen's RMSNorm, per-head QK-norm, RoPE not in full precision, an
  // explicit feed-forward size, and (small models) the LM head tied to the embeddings.
  std::string layer_norm_name = "rms";
  bool use_head_qk_norm = false;
  bool rope_full_precision = true;
  std::optional<int64_t> hidden_size;
  bool tie_word_embeddings = false;
  // MoE presets (llama_like with feed_forward_moe): the MoEConfig instead of a feed-forward.
  struct MoE {
    bool dropless = false;
    int64_t num_experts = 0, hidden_size = 0, top_k = 1;
    std::optional<int64_t> shared_hidden_size;  // FeedForwardConfig(hidden_size) with default bias
    double lb_loss_weight = 0.01;
    std::optional<double> z_loss_weight;
  };
  std::optional<MoE> moe;
};

// OLMo-core: hidden = int(8 * d_model / 3); hidden = int(multiplier * hidden);
// ensure_multiple_of(hidden, of) = of * ceil(hidden / of). Python floats are IEEE doubles.
int64_t llama_hidden_size(const LlamaLike& a) {
  auto hidden = static_cast<int64_t>(8.0 * static_cast<double>(a.d_model) / 3.0);
  if (a.hidden_size_multiplier)
    hidden = static_cast<int64_t>(*a.hidden_size_multiplier * static_cast<double>(hidden));
  const int64_t of = a.hidden_size_multiple_of;
  return of * static_cast<int64_t>(std::ceil(static_cast<double>(hidden) / static_cast<double>(of)));
}

std::unique_ptr<fb::LayerNormConfigT> rms_norm(double eps, const std::string& name = "rms") {
  auto norm = std::make_unique<fb::LayerNormConfigT>();
  norm->name = name;
  norm->eps = eps;
  norm->bias = false;
  return norm;
}

fb::TransformerConfigT llama_like(const LlamaLike& a, int64_t vocab_size) {
  require(vocab_size > 0 && vocab_size < (int64_t{1} << 31), ErrorCode::kInvalidArgument,
          "vocab_size must be in [1, 2^31) (got " + std::to_string(vocab_size) + ")");
  fb::TransformerConfigT c;
  c.d_model = static_cast<int32_t>(a.d_model);
  c.vocab_size = static_cast<int32_t>(vocab_size);
  c.n_layers = static_cast<int32_t>(a.n_layers);
  c.dtype = "float32";
  c.init_method = "normal";

  auto attention = std::make_unique<fb::AttentionConfigT>();
  attention->name = "default";
  attention->n_heads = static_cast<int32_t>(a.n_heads);
  if (a.n_kv_heads) attention->n_kv_heads = static_cast<int32_t>(*a.n_kv_heads);
  if (a.head_dim) attention->head_dim = static_cast<int32_t>(*a.head_dim);
  attention->bias = false;
  attention->rope = std::make_unique<fb::RoPEConfigT>();
  attention->rope->name = "default";
  attention->rope->theta = a.rope_theta;
  attention->rope->full_precision = a.rope_full_precision;
  if (a.qk_norm) {
    attention->qk_norm = rms_norm(a.layer_norm_eps, a.layer_norm_name);
    attention->use_head_qk_norm = a.use_head_qk_norm;
  }
  if (a.olmo3_sliding_window) {
    attention->sliding_window = std::make_unique<fb::SlidingWindowAttentionConfigT>();
    attention->sliding_window->pattern = {4096, 4096, 4096, -1};
    attention->sliding_window->force_full_attention_on_first_layer = false;
    attention->sliding_window->force_full_attention_on_last_layer = true;
  }

  auto feed_forward = std::make_unique<fb::FeedForwardConfigT>();
  feed_forward->hidden_size = static_cast<int32_t>(a.hidden_size.value_or(llama_hidden_size(a)));
  feed_forward->bias = false;
  feed_forward->activation = "silu";

  c.block = std::make_unique<fb::TransformerBlockConfigT>();
  c.block->name = a.block_name;
  c.block->attention = std::move(attention);
  if (a.moe) {
    c.name = "moe";
    auto moe = std::make_unique<fb::MoEConfigT>();
    moe->name = a.moe->dropless ? "dropless" : "default";
    moe->num_experts = static_cast<int32_t>(a.moe->num_experts);
    moe->hidden_size = static_cast<int32_t>(a.moe->hidden_size);
    moe->router = std::make_unique<fb::MoERouterConfigT>();
    moe->router->top_k = static_cast<int32_t>(a.moe->top_k);
    if (a.moe->shared_hidden_size) {
      moe->shared_mlp = std::make_unique<fb::FeedForwardConfigT>();
      moe->shared_mlp->hidden_size = static_cast<int32_t>(*a.moe->shared_hidden_size);
    }
    moe->lb_loss_weight = a.moe->lb_loss_weight;
    if (a.moe->z_loss_weight) moe->z_loss_weight = *a.moe->z_loss_weight;
    c.block->feed_forward_moe = std::move(moe);
  } else {
    c.block->feed_forward = std::move(feed_forward);
  }
  c.block->layer_norm = rms_norm(a.layer_norm_eps, a.layer_norm_name);

  c.lm_head = std::make_unique<fb::LMHeadConfigT>();
  c.lm_head->name = "default";
  c.lm_head->layer_norm = rms_norm(a.layer_norm_eps, a.layer_norm_name);
  c.lm_head->bias = false;
  c.tie_word_embeddings = a.tie_word_embeddings;
  return c;
}

// OLMo-2 shapes: reordered-norm blocks, QK-norm, RMSNorm eps 1e-6, RoPE theta 500k.
LlamaLike olmo2(int64_t d_model, int64_t n_layers, int64_t n_heads,
                std::optional<double> multiplier) {
  LlamaLike a;
  a.d_model = d_model;
  a.n_layers = n_layers;
  a.n_heads = n_heads;
  a.hidden_size_multiplier = multiplier;
  a.block_name = "reordered_norm";
  a.qk_norm = true;
  a.rope_theta = 500000;
  a.layer_norm_eps = 1e-6;
  return a;
}

LlamaLike llama(int64_t d_model, int64_t n_layers, int64_t n_heads, double theta,
                std::optional<int64_t> n_kv_heads = std::nullopt,
                std::optional<double> multiplier = std::nullopt, int64_t multiple_of = 256) {
  LlamaLike a;
  a.d_model = d_model;
  a.n_layers = n_layers;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.rope_theta = theta;
  a.hidden_size_multiplier = multiplier;
  a.hidden_size_multiple_of = multiple_of;
  return a;
}

// OLMo-2 presets derived from llama2_* keep the llama shape and add the OLMo-2 changes.
LlamaLike as_olmo2(LlamaLike a) {
  a.block_name = "reordered_norm";
  a.qk_norm = true;
  a.rope_theta = 500000;
  a.layer_norm_eps = 1e-6;
  return a;
}

const std::map<std::string, std::function<LlamaLike()>>& registry();

// TransformerConfig.qwen3_*: llama_like with Qwen-3's norms, per-head QK-norm, theta 1M.
LlamaLike qwen3(int64_t d_model, int64_t n_layers, int64_t n_heads, int64_t hidden_size, bool tied) {
  LlamaLike a;
  a.d_model = d_model;
  a.n_layers = n_layers;
  a.n_heads = n_heads;
  a.n_kv_heads = 8;
  a.head_dim = 128;
  a.rope_theta = 1000000;
  a.rope_full_precision = false;
  a.layer_norm_eps = 1e-6;
  a.layer_norm_name = "qwen_rms";
  a.qk_norm = true;
  a.use_head_qk_norm = true;
  a.hidden_size = hidden_size;
  a.tie_word_embeddings = tied;
  return a;
}

// OLMo-3 presets are the OLMo-2 preset of the same size with OLMo-3's sliding windows.
LlamaLike registry_olmo2(const std::string& name) { return registry().at(name)(); }
LlamaLike as_olmo3(LlamaLike a) {
  a.olmo3_sliding_window = true;
  return a;
}

const std::map<std::string, std::function<LlamaLike()>>& registry() {
  static const std::map<std::string, std::function<LlamaLike()>> presets = {
      {"olmo2_1M",
       [] {
         auto a = olmo2(12, 4, 4, 1.0);
         a.head_dim = 4;
         return a;
       }},
      {"olmo2_14M", [] { return olmo2(128, 4, 8, std::nullopt); }},
      {"olmo2_30M", [] { return olmo2(256, 4, 8, std::nullopt); }},
      {"olmo2_60M", [] { return olmo2(384, 8, 8, 1.5); }},
      {"olmo2_100M", [] { return olmo2(512, 12, 8, 1.5); }},
      {"olmo2_190M", [] { return olmo2(768, 12, 12, 1.5); }},
      {"olmo2_370M", [] { return olmo2(1024, 16, 16, 1.5); }},
      {"olmo2_600M", [] { return olmo2(1344, 16, 16, 1.5); }},
      {"olmo2_760M", [] { return olmo2(1536, 16, 16, 1.5); }},
      {"olmo2_1B",
       [] {
         auto a = as_olmo2(llama(2048, 18, 16, 10000));
         a.hidden_size_multiplier = 1.5;
         return a;
       }},
      {"olmo2_1B_v2",
       [] {
         auto a = as_olmo2(llama(2048, 16, 16, 10000));
         a.hidden_size_multiplier = 1.5;
         return a;
       }},
      {"olmo2_3B", [] { return olmo2(3328, 16, 16, 1.5); }},
      {"olmo2_7B", [] { return as_olmo2(llama(4096, 32, 32, 10000)); }},
      {"olmo2_13B", [] { return as_olmo2(llama(5120, 40, 40, 10000)); }},
      {"olmo2_32B",
       [] {
         const double d_model = 5120;
         auto a = olmo2(5120, 64, 40, 27648 / (8 * d_model / 3));
         a.n_kv_heads = 8;
         a.hidden_size_multiple_of = 512;
         return a;
       }},
      {"olmo3_1M", [] { return as_olmo3(registry_olmo2("olmo2_1M")); }},
      {"olmo3_14M", [] { return as_olmo3(registry_olmo2("olmo2_14M")); }},
      {"olmo3_30M", [] { return as_olmo3(registry_olmo2("olmo2_30M")); }},
      {"olmo3_60M", [] { return as_olmo3(registry_olmo2("olmo2_60M")); }},
      {"olmo3_100M", [] { return as_olmo3(registry_olmo2("olmo2_100M")); }},
      {"olmo3_190M", [] { return as_olmo3(registry_olmo2("olmo2_190M")); }},
      {"olmo3_370M", [] { return as_olmo3(registry_olmo2("olmo2_370M")); }},
      {"olmo3_600M",
       [] {
         auto a = as_olmo3(registry_olmo2("olmo2_600M"));
         a.d_model = 1280;  // OLMo-core narrows OLMo-3's 600M model
         return a;
       }},
      {"olmo3_760M", [] { return as_olmo3(registry_olmo2("olmo2_760M")); }},
      {"olmo3_3B", [] { return as_olmo3(registry_olmo2("olmo2_3B")); }},
      {"olmo3_7B", [] { return as_olmo3(registry_olmo2("olmo2_7B")); }},
      {"olmo3_13B", [] { return as_olmo3(registry_olmo2("olmo2_13B")); }},
      {"olmo3_32B", [] { return as_olmo3(registry_olmo2("olmo2_32B")); }},
      {"olmo3_1B", [] { return as_olmo3(registry_olmo2("olmo2_1B_v2")); }},
      {"qwen3_0_6B", [] { return qwen3(1024, 28, 16, 3072, true); }},
      {"qwen3_1_7B", [] { return qwen3(2048, 28, 16, 6144, true); }},
      {"qwen3_4B", [] { return qwen3(2560, 36, 32, 9728, true); }},
      {"qwen3_8B", [] { return qwen3(4096, 36, 32, 12288, false); }},
      {"qwen3_14B", [] { return qwen3(5120, 48, 40, 17408, false); }},
      {"qwen3_32B", [] { return qwen3(5120, 64, 40, 25600, false); }},
      {"llama2_271M", [] { return llama(1024, 16, 8, 10000); }},
      {"llama2_1B", [] { return llama(2048, 18, 16, 10000); }},
      {"llama2_7B", [] { return llama(4096, 32, 32, 10000); }},
      {"llama2_13B", [] { return llama(5120, 40, 40, 10000); }},
      {"llama2_26B", [] { return llama(5120, 80, 40, 10000); }},
      {"llama2_70B", [] { return llama(8192, 80, 64, 10000, 8, 1.3, 4096); }},
      {"llama3_1B", [] { return llama(2048, 16, 32, 500000, 8, 1.5); }},
      {"llama3_8B", [] { return llama(4096, 32, 32, 500000, 8, 1.3, 1024); }},
      {"llama3_70B",
       [] {
         // OLMo-core's d_model 8196 is not divisible by 64 heads; it floors the head size to
         // d_model // n_heads = 128, which we state explicitly.
         auto a = llama(8196, 80, 64, 500000, 8, 1.3, 4096);
         a.head_dim = 128;
         return a;
       }},
      {"llama3_405B", [] { return llama(16384, 126, 128, 500000, 8, 1.2, 4096); }},
      // TransformerConfig.smallmoe / olmoe_1B_7B: OLMo-2-style attention (QK-norm, RMSNorm eps
      // 1e-6, theta 500k) in moe_reordered_norm blocks; experts of int(0.5 * d_model).
      {"smallmoe",
       [] {
         auto a = olmo2(768, 12, 12, std::nullopt);
         a.block_name = "moe_reordered_norm";
         a.moe = LlamaLike::MoE{false, 32, 384, 4, 768 * 2, 0.01, 0.001};
         return a;
       }},
      {"olmoe_1B_7B",
       [] {
         auto a = olmo2(2048, 16, 16, std::nullopt);
         a.block_name = "moe_reordered_norm";
         a.moe = LlamaLike::MoE{true, 64, 1024, 8, std::nullopt, 0.01, 0.001};
         return a;
       }},
  };
  return presets;
}

// TransformerConfig.gemma3_like: peri-norm blocks, five local layers (sliding window 1024,
// RoPE theta 10k) per global one (full attention, theta 1M), per-head QK-norm, GeGLU with
// tanh GELU, embeddings scaled by sqrt(d_model).
fb::TransformerConfigT gemma3_like(int64_t d_model, int64_t n_layers, int64_t n_heads, int64_t n_kv_heads,
                                   int64_t hidden_size, int64_t vocab_size) {
  require(vocab_size > 0 && vocab_size < (int64_t{1} << 31), ErrorCode::kInvalidArgument,
          "vocab_size must be in [1, 2^31) (got " + std::to_string(vocab_size) + ")");
  constexpr double eps = 1e-6;
  auto block = [&](bool local) {
    auto b = std::make_unique<fb::TransformerBlockConfigT>();
    b->name = "peri_norm";
    b->attention = std::make_unique<fb::AttentionConfigT>();
    auto& att = *b->attention;
    att.name = "default";
    att.n_heads = static_cast<int32_t>(n_heads);
    att.n_kv_heads = static_cast<int32_t>(n_kv_heads);
    att.bias = false;
    att.rope = std::make_unique<fb::RoPEConfigT>();
    att.rope->name = "default";
    att.rope->theta = local ? 10000 : 1000000;
    att.qk_norm = rms_norm(eps);
    att.use_head_qk_norm = true;
    if (local) {
      att.sliding_window = std::make_unique<fb::SlidingWindowAttentionConfigT>();
      att.sliding_window->pattern = {1024};
      att.sliding_window->force_full_attention_on_first_layer = false;
      att.sliding_window->force_full_attention_on_last_layer = false;
    }
    b->feed_forward = std::make_unique<fb::FeedForwardConfigT>();
    b->feed_forward->hidden_size = static_cast<int32_t>(hidden_size);
    b->feed_forward->bias = false;
    b->feed_forward->activation = "gelu_tanh";
    b->layer_norm = rms_norm(eps);
    return b;
  };
  fb::TransformerConfigT c;
  c.d_model = static_cast<int32_t>(d_model);
  c.vocab_size = static_cast<int32_t>(vocab_size);
  c.n_layers = static_cast<int32_t>(n_layers);
  c.dtype = "float32";
  c.init_method = "normal";
  for (const char* name : {"local", "global"}) {
    auto named = std::make_unique<fb::NamedTransformerBlockConfigT>();
    named->name = name;
    named->block = block(std::string(name) == "local");
    c.named_blocks.push_back(std::move(named));
  }
  c.block_pattern = {"local", "local", "local", "local", "local", "global"};
  c.lm_head = std::make_unique<fb::LMHeadConfigT>();
  c.lm_head->name = "default";
  c.lm_head->layer_norm = rms_norm(eps);
  c.lm_head->bias = false;
  c.embed_scale = std::sqrt(static_cast<double>(d_model));
  return c;
}

// TransformerConfig.ngpt_like: normalized (nGPT) transformer, blocks, attention with L2
// QK-norm, feed-forward and head, the llama hidden-size rule, init "normalized".
fb::TransformerConfigT ngpt_like(int64_t d_model, int64_t n_layers, int64_t n_heads, int64_t vocab_size) {
  require(vocab_size > 0 && vocab_size < (int64_t{1} << 31), ErrorCode::kInvalidArgument,
          "vocab_size must be in [1, 2^31) (got " + std::to_string(vocab_size) + ")");
  LlamaLike shape;
  shape.d_model = d_model;
  fb::TransformerConfigT c;
  c.name = "normalized";
  c.d_model = static_cast<int32_t>(d_model);
  c.vocab_size = static_cast<int32_t>(vocab_size);
  c.n_layers = static_cast<int32_t>(n_layers);
  c.dtype = "float32";
  c.init_method = "normalized";
  c.block = std::make_unique<fb::TransformerBlockConfigT>();
  c.block->name = "normalized";
  c.block->attention = std::make_unique<fb::AttentionConfigT>();
  auto& att = *c.block->attention;
  att.name = "normalized";
  att.n_heads = static_cast<int32_t>(n_heads);
  att.qk_norm = std::make_unique<fb::LayerNormConfigT>();
  att.qk_norm->name = "l2_norm";
  att.rope = std::make_unique<fb::RoPEConfigT>();
  att.rope->name = "default";
  att.rope->theta = 500000;
  c.block->feed_forward = std::make_unique<fb::FeedForwardConfigT>();
  c.block->feed_forward->name = "normalized";
  c.block->feed_forward->hidden_size = static_cast<int32_t>(llama_hidden_size(shape));
  c.lm_head = std::make_unique<fb::LMHeadConfigT>();
  c.lm_head->name = "normalized";
  return c;
}

// Presets that are not llama-like.
const std::map<std::string, std::function<fb::TransformerConfigT(int64_t)>>& other_registry() {
  static const std::map<std::string, std::function<fb::TransformerConfigT(int64_t)>> presets = {
      {"gemma3_1B", [](int64_t v) { return gemma3_like(2304, 26, 8, 4, 9216, v); }},
      {"ngpt_271M", [](int64_t v) { return ngpt_like(1024, 16, 16, v); }},
      {"ngpt_1B", [](int64_t v) { return ngpt_like(2048, 18, 16, v); }},
      {"gemma3_4B", [](int64_t v) { return gemma3_like(2560, 34, 16, 4, 10240, v); }},
      {"gemma3_12B", [](int64_t v) { return gemma3_like(3840, 48, 24, 8, 15360, v); }},
      {"gemma3_27B", [](int64_t v) { return gemma3_like(5376, 62, 32, 16, 21504, v); }},
  };
  return presets;
}

}  // namespace

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& entry : registry()) out.push_back(entry.first);
    for (const auto& entry : other_registry()) out.push_back(entry.first);
    std::sort(out.begin(), out.end());
    return out;
  }();
  return names;
}

Config preset(const std::string& name, int64_t vocab_size) {
  const auto& others = other_registry();
  if (auto other = others.find(name); other != others.end()) return Config::from_native(other->second(vocab_size));
  const auto& presets = registry();
  auto it = presets.find(name);
  if (it == presets.end()) {
    std::string known;
    for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    fail(ErrorCode::kInvalidArgument, "name: unknown preset '" + name + "' (known: " + known + ")");
  }
  return Config::from_native(llama_like(it->second(), vocab_size));
}

}  // namespace olm
