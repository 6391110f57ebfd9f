#include "core/convert/hf_config.h"

#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/io/json.h"

namespace olm::convert {
namespace {

struct ArchitectureInfo {
  HfArchitecture architecture;
  const char* class_name;
  const char* model_type;
};

const std::vector<ArchitectureInfo>& architectures() {
  static const std::vector<ArchitectureInfo> table = {
      {HfArchitecture::kLlama, "LlamaForCausalLM", "llama"},
      {HfArchitecture::kOlmo2, "Olmo2ForCausalLM", "olmo2"},
      {HfArchitecture::kOlmo3, "Olmo3ForCausalLM", "olmo3"},
      {HfArchitecture::kQwen3, "Qwen3ForCausalLM", "qwen3"},
      {HfArchitecture::kOlmoe, "OlmoeForCausalLM", "olmoe"},
      {HfArchitecture::kQwen3Moe, "Qwen3MoeForCausalLM", "qwen3_moe"},
      {HfArchitecture::kGemma3, "Gemma3ForCausalLM", "gemma3_text"},
  };
  return table;
}

const ArchitectureInfo& info(HfArchitecture a) {
  for (const auto& i : architectures())
    if (i.architecture == a) return i;
  fail(ErrorCode::kInternal, "unknown HfArchitecture");
}

std::string known_architectures() {
  std::string out;
  for (const auto& i : architectures()) out += (out.empty() ? "" : ", ") + std::string(i.class_name);
  return out;
}

// Keys of PretrainedConfig and generation defaults that never change a causal LM's forward
// pass; accepted anywhere and not kept.
const std::set<std::string>& inert_keys() {
  static const std::set<std::string> keys = {
      "transformers_version", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
      "decoder_start_token_id", "_name_or_path", "initializer_range", "attention_dropout", "tokenizer_class",
      "id2label", "label2id", "return_dict", "output_hidden_states", "output_attentions", "torchscript",
      "use_return_dict", "chunk_size_feed_forward", "is_decoder", "is_encoder_decoder", "add_cross_attention",
      "tie_encoder_decoder", "problem_type", "finetuning_task", "task_specific_params", "prefix",
      "pruned_heads", "tf_legacy_loss", "use_bfloat16", "num_labels", "max_length", "min_length", "do_sample",
      "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
      "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
      "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
      "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
      "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
      "output_router_logits", "router_aux_loss_coef", "max_position_embeddings", "architectures", "model_type",
      "torch_dtype", "dtype", "cross_attention_hidden_size",
      // Generation settings some config.json files carry (transformers' GenerationConfig).
      "max_new_tokens", "min_new_tokens", "max_time", "stop_strings", "cache_implementation", "cache_config",
      "return_legacy_cache", "prefill_chunk_size", "min_p", "epsilon_cutoff", "eta_cutoff",
      "encoder_repetition_penalty", "renormalize_logits", "sequence_bias", "token_healing", "guidance_scale",
      "watermarking_config", "output_logits", "low_memory", "penalty_alpha", "dola_layers", "constraints",
      "force_words_ids", "_from_model_config", "disable_compile"};
  return keys;
}

const char* kind_name(io::Json::Kind k) {
  switch (k) {
    case io::Json::kNull: return "null";
    case io::Json::kBool: return "a boolean";
    case io::Json::kInt:
    case io::Json::kOther: return "a number";
    case io::Json::kString: return "a string";
    case io::Json::kArray: return "an array";
    case io::Json::kObject: return "an object";
  }
  return "a value";
}

// One JSON object's members, read by name; remembers which were read so that unread ones can
// be refused by name.
class Fields {
 public:
  Fields(const io::Json& object, std::string source, std::string prefix = "")
      : source_(std::move(source)), prefix_(std::move(prefix)) {
    for (const auto& [key, value] : object.object) {
      require(!members_.count(key), ErrorCode::kParse, where(key) + " is given twice");
      members_[key] = &value;
    }
  }

  std::string where(const std::string& key) const { return source_ + ": field '" + prefix_ + key + "'"; }

  // nullptr when absent or null.
  const io::Json* get(const std::string& key) {
    used_.insert(key);
    auto it = members_.find(key);
    if (it == members_.end() || it->second->kind == io::Json::kNull) return nullptr;
    return it->second;
  }
  bool has(const std::string& key) { return get(key) != nullptr; }

  std::optional<double> number(const std::string& key) {
    const io::Json* v = get(key);
    if (!v) return std::nullopt;
    require(v->kind == io::Json::kInt || v->kind == io::Json::kOther, ErrorCode::kParse,
            where(key) + " must be a number (got " + kind_name(v->kind) + ")");
    if (v->kind == io::Json::kInt) return static_cast<double>(v->integer);
    char* end = nullptr;
    const double d = std::strtod(v->number.c_str(), &end);
    require(end && *end == '\0' && std::isfinite(d), ErrorCode::kParse,
            where(key) + ": '" + v->number + "' is not a finite number");
    return d;
  }
  double number(const std::string& key, double fallback) { return number(key).value_or(fallback); }

  std::optional<int64_t> integer(const std::string& key) {
    const io::Json* v = get(key);
    if (!v) return std::nullopt;
    require(v->kind == io::Json::kInt, ErrorCode::kParse,
            where(key) + " must be an integer (got " + (v->kind == io::Json::kOther ? v->number : kind_name(v->kind)) + ")");
    return v->integer;
  }
  int64_t integer(const std::string& key, int64_t fallback) { return integer(key).value_or(fallback); }
  int64_t positive(const std::string& key, int64_t fallback, int64_t max = int64_t{1} << 31) {
    const int64_t v = integer(key, fallback);
    require(v > 0 && v < max, ErrorCode::kInvalidConfig,
            where(key) + " must be in [1, " + std::to_string(max) + ") (got " + std::to_string(v) + ")");
    return v;
  }

  bool boolean(const std::string& key, bool fallback) {
    const io::Json* v = get(key);
    if (!v) return fallback;
    require(v->kind == io::Json::kBool, ErrorCode::kParse, where(key) + " must be true or false (got " + kind_name(v->kind) + ")");
    return v->boolean;
  }

  std::optional<std::string> string(const std::string& key) {
    const io::Json* v = get(key);
    if (!v) return std::nullopt;
    require(v->kind == io::Json::kString, ErrorCode::kParse, where(key) + " must be a string (got " + kind_name(v->kind) + ")");
    return v->string;
  }

  // Refuses a field that changes the model unless it has the value olm computes.
  void require_value(const std::string& key, bool expected, bool fallback, const std::string& why) {
    require(boolean(key, fallback) == expected, ErrorCode::kInvalidConfig,
            where(key) + " is " + (expected ? "false" : "true") + ": " + why + " (refused rather than dropped)");
  }

  // Every member not read, and not inert: refused by name.
  void refuse_unread(const std::string& what, const std::set<std::string>& also_inert = {}) const {
    for (const auto& [key, value] : members_) {
      if (used_.count(key) || also_inert.count(key) || (prefix_.empty() && inert_keys().count(key))) continue;
      fail(ErrorCode::kInvalidConfig, where(key) + " is not something olm's " + what +
                                          " import can express, so it is refused rather than silently dropped");
    }
  }

 private:
  std::string source_;
  std::string prefix_;
  std::map<std::string, const io::Json*> members_;
  std::set<std::string> used_;
};

struct Defaults {
  int64_t vocab, hidden, intermediate, layers, heads;
  std::optional<int64_t> kv_heads;  // nullopt: heads
  std::optional<int64_t> head_dim;  // nullopt: hidden / heads
  double rms_eps, rope_theta;
  int64_t max_position_embeddings;
  bool tie;
};

Defaults defaults_for(HfArchitecture a) {
  switch (a) {
    case HfArchitecture::kLlama: return {32000, 4096, 11008, 32, 32, std::nullopt, std::nullopt, 1e-6, 10000, 2048, false};
    case HfArchitecture::kOlmo2:
    case HfArchitecture::kOlmo3: return {50304, 4096, 11008, 32, 32, std::nullopt, std::nullopt, 1e-5, 10000, 2048, false};
    case HfArchitecture::kQwen3: return {151936, 4096, 22016, 32, 32, 32, 128, 1e-6, 10000, 32768, false};
    case HfArchitecture::kOlmoe: return {50304, 2048, 2048, 16, 16, std::nullopt, std::nullopt, 1e-5, 10000, 4096, false};
    case HfArchitecture::kQwen3Moe: return {151936, 2048, 6144, 24, 32, 4, std::nullopt, 1e-6, 10000, 32768, false};
    case HfArchitecture::kGemma3: return {262208, 2304, 9216, 26, 8, 4, 256, 1e-6, 1000000, 131072, true};
  }
  fail(ErrorCode::kInternal, "unknown HfArchitecture");
}

std::string format_number(double v) { return io::format_double(v); }

// transformers' activation names olm computes with the same kernel.
std::string activation_from_hf(Fields& f, const std::string& key, const std::string& fallback) {
  const std::string act = f.string(key).value_or(fallback);
  if (act == "silu" || act == "swish") return "silu";
  if (act == "gelu") return "gelu";
  if (act == "gelu_pytorch_tanh") return "gelu_tanh";
  if (act == "relu") return "relu";
  fail(ErrorCode::kInvalidConfig, f.where(key) + " is '" + act +
                                      "': olm computes silu, gelu, gelu_pytorch_tanh and relu as transformers does, not this one");
}

// YaRN's correction range ends at this dimension (before clamping). transformers clamps it at
// dim - 1, olm (as OLMo-core) at dim / 2 - 1: they agree unless it passes the last frequency.
double yarn_ramp_end(int64_t rotary_dim, int64_t old_context_len, int64_t beta_slow, double theta) {
  const double d = static_cast<double>(rotary_dim);
  return std::ceil(d * std::log(static_cast<double>(old_context_len) / (static_cast<double>(beta_slow) * 2 * M_PI)) /
                   (2 * std::log(theta)));
}

// rope_scaling -> olm's RoPE scaling, only where olm's numerics are transformers'.
std::optional<fb::RoPEScalingConfigT> rope_scaling_from_hf(Fields& top, const std::string& source, int64_t rotary_dim,
                                                           double theta, int64_t max_position_embeddings) {
  const io::Json* rs = top.get("rope_scaling");
  if (!rs) return std::nullopt;
  require(rs->kind == io::Json::kObject, ErrorCode::kParse,
          top.where("rope_scaling") + " must be an object or null (got " + kind_name(rs->kind) + ")");
  Fields f(*rs, source, "rope_scaling.");
  std::string type = f.string("rope_type").value_or("");
  const auto legacy = f.string("type");
  if (type.empty() && legacy) type = *legacy;
  require(!type.empty(), ErrorCode::kInvalidConfig, f.where("rope_type") + " is missing");
  fb::RoPEScalingConfigT s;
  auto factor = [&](double min) {
    const auto v = f.number("factor");
    require(v.has_value(), ErrorCode::kInvalidConfig, f.where("factor") + " is missing (rope_type '" + type + "')");
    require(*v >= min, ErrorCode::kInvalidConfig,
            f.where("factor") + " is " + format_number(*v) + ": olm matches transformers' '" + type + "' only for factor >= " +
                format_number(min));
    return *v;
  };
  if (type == "default") {
    f.refuse_unread("rope_scaling 'default'");
    return std::nullopt;
  }
  if (type == "linear") {
    s.name = "pi";
    s.factor = factor(std::numeric_limits<double>::min());
  } else if (type == "llama3") {
    s.name = "stepwise";
    s.factor = factor(std::numeric_limits<double>::min());
    const double low = f.number("low_freq_factor", 1.0), high = f.number("high_freq_factor", 4.0);
    const auto old = f.integer("original_max_position_embeddings");
    require(old.has_value() && *old > 0, ErrorCode::kInvalidConfig,
            f.where("original_max_position_embeddings") + " must be a positive integer for rope_type 'llama3'");
    // olm keeps proportions; take them only when they give back exactly transformers' factors.
    require(low >= 1 && high > low, ErrorCode::kInvalidConfig,
            f.where("low_freq_factor") + " and high_freq_factor must satisfy 1 <= low_freq_factor < high_freq_factor");
    s.low_freq_proportion = 1.0 - 1.0 / low;
    s.high_freq_proportion = 1.0 / high;
    require(1.0 / (1.0 - s.low_freq_proportion) == low && 1.0 / s.high_freq_proportion == high, ErrorCode::kInvalidConfig,
            f.where("low_freq_factor") + " (" + format_number(low) + ") and high_freq_factor (" + format_number(high) +
                ") do not round-trip through olm's frequency proportions exactly");
    s.old_context_len = *old;
  } else if (type == "dynamic") {
    s.name = "dynamic_ntk";
    s.factor = factor(1.0);
    s.old_context_len = max_position_embeddings;
  } else if (type == "yarn") {
    s.name = "yarn";
    const double fac = factor(1.0);
    s.factor = fac;
    for (const char* key : {"mscale", "mscale_all_dim"})
      require(!f.has(key), ErrorCode::kInvalidConfig,
              f.where(key) + " is set: olm's YaRN uses the attention temperature 0.1 ln(factor) + 1 only");
    // Some checkpoints (OLMo-3) state the default temperature explicitly: that one is olm's.
    if (auto af = f.number("attention_factor")) {
      const double own = 0.1 * std::log(fac) + 1.0;
      require(std::abs(*af - own) <= 1e-12 * own, ErrorCode::kInvalidConfig,
              f.where("attention_factor") + " is " + format_number(*af) + ": olm's YaRN uses 0.1 ln(factor) + 1 = " +
                  format_number(own));
    }
    require(f.boolean("truncate", true), ErrorCode::kInvalidConfig,
            f.where("truncate") + " is false: olm's YaRN truncates the correction range as transformers' default does");
    auto beta = [&](const char* key, double fallback) {
      const double b = f.number(key, fallback);
      require(b > 0 && b == std::floor(b) && b < (1 << 30), ErrorCode::kInvalidConfig,
              f.where(key) + " is " + format_number(b) + ": olm's YaRN takes a positive integer");
      return static_cast<int32_t>(b);
    };
    s.beta_fast = beta("beta_fast", 32);
    s.beta_slow = beta("beta_slow", 1);
    s.old_context_len = f.integer("original_max_position_embeddings").value_or(max_position_embeddings);
    require(s.old_context_len > 0, ErrorCode::kInvalidConfig, f.where("original_max_position_embeddings") + " must be positive");
    const double high = yarn_ramp_end(rotary_dim, s.old_context_len, s.beta_slow, theta);
    require(high <= static_cast<double>(rotary_dim / 2 - 1), ErrorCode::kInvalidConfig,
            f.where("beta_slow") + ": the YaRN correction range ends at dimension " + format_number(high) +
                ", past the last rotary frequency (" + std::to_string(rotary_dim / 2 - 1) +
                "), where transformers' and olm's ramps differ");
  } else {
    fail(ErrorCode::kInvalidConfig, f.where("rope_type") + " is '" + type +
                                        "': olm imports 'default', 'linear', 'llama3', 'dynamic' and 'yarn'");
  }
  f.refuse_unread("rope_scaling '" + type + "'");
  return s;
}

enum class QKNorm { kNone, kWhole, kPerHead };

struct BlockShape {
  std::string block_name;
  std::string norm_name;
  double eps = 1e-6;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  double theta = 10000;
  std::optional<fb::RoPEScalingConfigT> scaling;
  std::optional<int64_t> window;
  QKNorm qk_norm = QKNorm::kNone;
  int64_t ffn_hidden = 0;
  std::string activation = "silu";
  struct MoE {
    int64_t experts = 0, hidden = 0, top_k = 0;
    bool normalize = false;
    double lb_loss_weight = 0.01;
  };
  std::optional<MoE> moe;
};

std::unique_ptr<fb::LayerNormConfigT> rms(const std::string& name, double eps) {
  auto n = std::make_unique<fb::LayerNormConfigT>();
  n->name = name;
  n->eps = eps;
  n->bias = false;
  return n;
}

std::unique_ptr<fb::TransformerBlockConfigT> make_block(const BlockShape& s) {
  auto b = std::make_unique<fb::TransformerBlockConfigT>();
  b->name = s.block_name;
  b->attention = std::make_unique<fb::AttentionConfigT>();
  auto& a = *b->attention;
  a.name = "default";
  a.n_heads = static_cast<int32_t>(s.heads);
  a.n_kv_heads = static_cast<int32_t>(s.kv_heads);
  a.head_dim = static_cast<int32_t>(s.head_dim);
  a.bias = false;
  a.rope = std::make_unique<fb::RoPEConfigT>();
  a.rope->name = "default";
  a.rope->theta = s.theta;
  // transformers rotates in the activation dtype (cos/sin rounded to it).
  a.rope->full_precision = false;
  if (s.scaling) a.rope->scaling = std::make_unique<fb::RoPEScalingConfigT>(*s.scaling);
  if (s.qk_norm != QKNorm::kNone) {
    a.qk_norm = rms(s.norm_name, s.eps);
    a.use_head_qk_norm = s.qk_norm == QKNorm::kPerHead;
  }
  if (s.window) {
    a.sliding_window = std::make_unique<fb::SlidingWindowAttentionConfigT>();
    a.sliding_window->pattern = {static_cast<int32_t>(*s.window)};
    a.sliding_window->force_full_attention_on_first_layer = false;
    a.sliding_window->force_full_attention_on_last_layer = false;
  }
  b->layer_norm = rms(s.norm_name, s.eps);
  if (s.moe) {
    auto m = std::make_unique<fb::MoEConfigT>();
    m->name = "dropless";  // transformers' experts never drop a token
    m->num_experts = static_cast<int32_t>(s.moe->experts);
    m->hidden_size = static_cast<int32_t>(s.moe->hidden);
    m->router = std::make_unique<fb::MoERouterConfigT>();
    m->router->name = "default";
    m->router->top_k = static_cast<int32_t>(s.moe->top_k);
    if (s.moe->normalize) m->router->normalize_expert_weights = 1.0;
    m->lb_loss_weight = s.moe->lb_loss_weight;
    b->feed_forward_moe = std::move(m);
  } else {
    b->feed_forward = std::make_unique<fb::FeedForwardConfigT>();
    b->feed_forward->name = "default";
    b->feed_forward->hidden_size = static_cast<int32_t>(s.ffn_hidden);
    b->feed_forward->bias = false;
    b->feed_forward->activation = s.activation;
  }
  return b;
}

// The per-layer attention kinds: layer_types when given, else the architecture's rule.
std::vector<bool> sliding_layers(Fields& f, HfArchitecture arch, int64_t n_layers, bool windows_on) {
  std::vector<bool> sliding(static_cast<size_t>(n_layers), false);
  if (const io::Json* lt = f.get("layer_types")) {
    require(lt->kind == io::Json::kArray && static_cast<int64_t>(lt->array.size()) == n_layers, ErrorCode::kInvalidConfig,
            f.where("layer_types") + " must be an array of num_hidden_layers (" + std::to_string(n_layers) + ") strings");
    for (size_t i = 0; i < lt->array.size(); ++i) {
      const auto& t = lt->array[i];
      require(t.kind == io::Json::kString && (t.string == "sliding_attention" || t.string == "full_attention"),
              ErrorCode::kInvalidConfig,
              f.where("layer_types") + "[" + std::to_string(i) + "] must be \"sliding_attention\" or \"full_attention\"");
      sliding[i] = t.string == "sliding_attention";
    }
    return sliding;
  }
  for (int64_t i = 0; i < n_layers; ++i) {
    switch (arch) {
      case HfArchitecture::kOlmo3: sliding[i] = (i + 1) % 4 != 0; break;
      case HfArchitecture::kGemma3: {
        int64_t pattern = 6;
        if (auto p = f.integer("sliding_window_pattern")) pattern = *p;
        else if (auto q = f.integer("_sliding_window_pattern")) pattern = *q;
        require(pattern > 0, ErrorCode::kInvalidConfig, f.where("sliding_window_pattern") + " must be positive");
        sliding[i] = (i + 1) % pattern != 0;
        break;
      }
      default: sliding[i] = windows_on; break;
    }
  }
  return sliding;
}

}  // namespace

const char* hf_architecture_name(HfArchitecture architecture) { return info(architecture).class_name; }
const char* hf_model_type(HfArchitecture architecture) { return info(architecture).model_type; }

HfModelConfig config_from_hf(std::string_view text, const std::string& source, std::optional<c10::ScalarType> dtype) {
  const io::Json root = io::parse_json(text.data(), text.size(), source);
  require(root.kind == io::Json::kObject, ErrorCode::kParse, source + ": a config.json must be a JSON object");
  Fields f(root, source);

  // The architecture: architectures[0], else model_type.
  std::optional<HfArchitecture> arch;
  const auto model_type = f.string("model_type");
  if (const io::Json* list = f.get("architectures")) {
    require(list->kind == io::Json::kArray && list->array.size() == 1 && list->array[0].kind == io::Json::kString,
            ErrorCode::kInvalidConfig, f.where("architectures") + " must be an array of one class name");
    const std::string& name = list->array[0].string;
    for (const auto& i : architectures())
      if (name == i.class_name) arch = i.architecture;
    require(arch.has_value(), ErrorCode::kInvalidConfig,
            f.where("architectures") + ": unknown architecture '" + name + "' (olm imports " + known_architectures() + ")");
  } else {
    require(model_type.has_value(), ErrorCode::kInvalidConfig, source + ": neither 'architectures' nor 'model_type' is given");
    for (const auto& i : architectures())
      if (*model_type == i.model_type) arch = i.architecture;
    require(arch.has_value(), ErrorCode::kInvalidConfig,
            f.where("model_type") + ": unknown model type '" + *model_type + "' (olm imports " + known_architectures() + ")");
  }
  const auto& ai = info(*arch);
  if (model_type && *model_type != ai.model_type)
    fail(ErrorCode::kInvalidConfig,
         f.where("model_type") + " is '" + *model_type + "' but " + ai.class_name + " has model_type '" + ai.model_type + "'");
  const std::string what = ai.class_name;
  const Defaults d = defaults_for(*arch);

  HfModelConfig out;
  out.architecture = *arch;
  out.bos_token_id = f.integer("bos_token_id");
  if (const io::Json* eos = f.get("eos_token_id")) {
    if (eos->kind == io::Json::kInt) out.eos_token_id = eos->integer;
    else if (eos->kind == io::Json::kArray && !eos->array.empty() && eos->array[0].kind == io::Json::kInt)
      out.eos_token_id = eos->array[0].integer;
  }

  // dtype
  c10::ScalarType model_dtype = c10::ScalarType::Float;
  std::optional<std::string> file_dtype = f.string("torch_dtype");
  if (auto newer = f.string("dtype")) file_dtype = newer;
  if (dtype) {
    model_dtype = *dtype;
  } else if (file_dtype) {
    if (*file_dtype == "bfloat16") model_dtype = c10::ScalarType::BFloat16;
    else if (*file_dtype == "float32" || *file_dtype == "float16") model_dtype = c10::ScalarType::Float;
    else fail(ErrorCode::kInvalidConfig, f.where("torch_dtype") + " is '" + *file_dtype + "': olm reads bfloat16, float16 and float32 models");
  }
  require(model_dtype == c10::ScalarType::Float || model_dtype == c10::ScalarType::BFloat16, ErrorCode::kInvalidArgument,
          "dtype: olm models are float32 or bfloat16");

  const int64_t vocab = f.positive("vocab_size", d.vocab);
  const int64_t hidden = f.positive("hidden_size", d.hidden);
  const int64_t layers = f.positive("num_hidden_layers", d.layers, 1 << 20);
  const int64_t heads = f.positive("num_attention_heads", d.heads, 1 << 20);
  const int64_t kv_heads = f.positive("num_key_value_heads", d.kv_heads.value_or(heads), 1 << 20);
  require(heads % kv_heads == 0, ErrorCode::kInvalidConfig,
          f.where("num_key_value_heads") + " (" + std::to_string(kv_heads) + ") must divide num_attention_heads (" +
              std::to_string(heads) + ")");
  int64_t head_dim = 0;
  if (auto hd = f.integer("head_dim")) head_dim = *hd;
  else if (d.head_dim) head_dim = *d.head_dim;
  else head_dim = hidden / heads;
  require(head_dim > 0 && head_dim < (1 << 20) && head_dim % 2 == 0, ErrorCode::kInvalidConfig,
          f.where("head_dim") + " must be a positive even number (got " + std::to_string(head_dim) + ")");
  const double eps = f.number("rms_norm_eps", d.rms_eps);
  require(eps > 0, ErrorCode::kInvalidConfig, f.where("rms_norm_eps") + " must be positive");
  const double theta = f.number("rope_theta", d.rope_theta);
  require(theta > 1, ErrorCode::kInvalidConfig, f.where("rope_theta") + " must be > 1");
  const int64_t max_pos = f.positive("max_position_embeddings", d.max_position_embeddings, int64_t{1} << 40);
  const bool tie = f.boolean("tie_word_embeddings", d.tie);
  f.require_value("attention_bias", false, false, "olm's import has no attention biases for " + what);
  f.require_value("is_encoder_decoder", false, false, what + " is a decoder-only model");
  f.require_value("add_cross_attention", false, false, what + " has no cross-attention");
  f.require_value("tie_encoder_decoder", false, false, what + " is a decoder-only model");
  if (const io::Json* pruned = f.get("pruned_heads"))
    require(pruned->kind == io::Json::kObject && pruned->object.empty(), ErrorCode::kInvalidConfig,
            f.where("pruned_heads") + " must be empty: olm has no pruned attention heads");
  if (auto prf = f.number("partial_rotary_factor"))
    require(*prf == 1.0, ErrorCode::kInvalidConfig, f.where("partial_rotary_factor") + " must be 1 for " + what);

  BlockShape base;
  base.eps = eps;
  base.heads = heads;
  base.kv_heads = kv_heads;
  base.head_dim = head_dim;
  base.theta = theta;

  std::set<std::string> arch_inert;
  std::optional<fb::RoPEScalingConfigT> scaling;
  std::vector<bool> sliding(static_cast<size_t>(layers), false);
  std::optional<int64_t> window;
  double local_theta = theta;
  std::optional<double> embed_scale;

  auto read_window = [&]() {
    if (auto w = f.integer("sliding_window")) {
      require(*w > 0 && *w < (int64_t{1} << 31), ErrorCode::kInvalidConfig, f.where("sliding_window") + " must be positive");
      window = *w;
    }
  };

  switch (*arch) {
    case HfArchitecture::kLlama:
      base.block_name = "default";
      base.norm_name = "qwen_rms";  // LlamaRMSNorm: normalized, rounded to the input dtype, then scaled
      base.activation = activation_from_hf(f, "hidden_act", "silu");
      f.require_value("mlp_bias", false, false, "olm's import has no feed-forward biases for " + what);
      require(f.integer("pretraining_tp", 1) == 1, ErrorCode::kInvalidConfig,
              f.where("pretraining_tp") + " must be 1 (it changes the summation order of every linear layer)");
      base.ffn_hidden = f.positive("intermediate_size", d.intermediate);
      scaling = rope_scaling_from_hf(f, source, head_dim, theta, max_pos);
      break;
    case HfArchitecture::kOlmo2:
    case HfArchitecture::kOlmo3:
      base.block_name = "reordered_norm";
      base.norm_name = "rms";  // Olmo2RMSNorm scales in float32
      base.qk_norm = QKNorm::kWhole;
      base.activation = activation_from_hf(f, "hidden_act", "silu");
      base.ffn_hidden = f.positive("intermediate_size", d.intermediate);
      scaling = rope_scaling_from_hf(f, source, head_dim, theta, max_pos);
      if (*arch == HfArchitecture::kOlmo3) {
        window = 4096;
        read_window();
        sliding = sliding_layers(f, *arch, layers, true);
      }
      break;
    case HfArchitecture::kQwen3: {
      base.block_name = "default";
      base.norm_name = "qwen_rms";
      base.qk_norm = QKNorm::kPerHead;
      base.activation = activation_from_hf(f, "hidden_act", "silu");
      base.ffn_hidden = f.positive("intermediate_size", d.intermediate);
      scaling = rope_scaling_from_hf(f, source, head_dim, theta, max_pos);
      const bool use_sw = f.boolean("use_sliding_window", false);
      if (use_sw) read_window();
      else f.get("sliding_window");  // Qwen3Config drops it without use_sliding_window
      const int64_t max_window_layers = f.integer("max_window_layers", 28);
      if (f.has("layer_types")) {
        sliding = sliding_layers(f, *arch, layers, false);
      } else {
        for (int64_t i = 0; i < layers; ++i) sliding[i] = use_sw && i >= max_window_layers;
      }
      // transformers gives "sliding_attention" layers the window only when sliding_window is set.
      if (!window) std::fill(sliding.begin(), sliding.end(), false);
      break;
    }
    case HfArchitecture::kOlmoe:
    case HfArchitecture::kQwen3Moe: {
      base.block_name = "moe";
      base.norm_name = "qwen_rms";  // OlmoeRMSNorm / Qwen3MoeRMSNorm are LlamaRMSNorm
      base.qk_norm = *arch == HfArchitecture::kOlmoe ? QKNorm::kWhole : QKNorm::kPerHead;
      require(activation_from_hf(f, "hidden_act", "silu") == "silu", ErrorCode::kInvalidConfig,
              f.where("hidden_act") + " must be silu: olm's experts are SwiGLU");
      BlockShape::MoE moe;
      moe.experts = f.positive("num_experts", *arch == HfArchitecture::kOlmoe ? 64 : 128, 1 << 20);
      moe.top_k = f.positive("num_experts_per_tok", 8, moe.experts + 1);
      moe.normalize = f.boolean("norm_topk_prob", false);
      moe.lb_loss_weight = f.number("router_aux_loss_coef", *arch == HfArchitecture::kOlmoe ? 0.01 : 0.001);
      if (*arch == HfArchitecture::kOlmoe) {
        moe.hidden = f.positive("intermediate_size", d.intermediate);
        // transformers' OLMoE clamps q and k after its QK-norm; olm, as OLMo-core, before it.
        require(!f.has("clip_qkv"), ErrorCode::kInvalidConfig,
                f.where("clip_qkv") + " is set: transformers' OLMoE clamps queries and keys after the QK-norm, "
                                      "olm (as OLMo-core) before it, so the models would differ");
      } else {
        moe.hidden = f.positive("moe_intermediate_size", 768);
        f.integer("intermediate_size");  // only mlp_only_layers use it, and those are refused
        require(f.integer("decoder_sparse_step", 1) == 1, ErrorCode::kInvalidConfig,
                f.where("decoder_sparse_step") + " must be 1: olm imports models whose every layer is sparse");
        if (const io::Json* only = f.get("mlp_only_layers"))
          require(only->kind == io::Json::kArray && only->array.empty(), ErrorCode::kInvalidConfig,
                  f.where("mlp_only_layers") + " must be empty: olm imports models whose every layer is sparse");
        if (f.boolean("use_sliding_window", false)) read_window();
        else f.get("sliding_window");  // Qwen3MoeConfig drops it without use_sliding_window
        f.integer("max_window_layers");  // transformers' Qwen3-MoE attention does not read it
        if (window) std::fill(sliding.begin(), sliding.end(), true);
      }
      base.moe = moe;
      scaling = rope_scaling_from_hf(f, source, head_dim, theta, max_pos);
      break;
    }
    case HfArchitecture::kGemma3: {
      base.block_name = "peri_norm";
      base.norm_name = "rms";  // Gemma3RMSNorm: x * (1 + w) in float32; the 1 is folded into the weight
      base.qk_norm = QKNorm::kPerHead;
      base.activation = activation_from_hf(f, "hidden_activation", "gelu_pytorch_tanh");
      base.ffn_hidden = f.positive("intermediate_size", d.intermediate);
      const double qpas = f.number("query_pre_attn_scalar", 256);
      require(qpas > 0, ErrorCode::kInvalidConfig, f.where("query_pre_attn_scalar") + " must be positive");
      out.query_scale = std::sqrt(static_cast<double>(head_dim) / qpas);
      require(!f.has("final_logit_softcapping"), ErrorCode::kInvalidConfig,
              f.where("final_logit_softcapping") + " is set: olm has no final logit soft-capping");
      // transformers' Gemma3 attention never passes it on (Gemma2's does): the checkpoint's
      // own library computes no soft-capping, so there is no one model to reproduce.
      require(!f.has("attn_logit_softcapping"), ErrorCode::kInvalidConfig,
              f.where("attn_logit_softcapping") + " is set, but transformers' Gemma3 ignores it; refused rather than "
                                                  "guessing which of the two models is meant");
      f.require_value("use_bidirectional_attention", false, false, "olm's models are causal");
      window = 4096;
      read_window();
      local_theta = f.number("rope_local_base_freq", 10000);
      sliding = sliding_layers(f, *arch, layers, true);
      arch_inert = {"sliding_window_pattern", "_sliding_window_pattern"};
      scaling = rope_scaling_from_hf(f, source, head_dim, theta, max_pos);
      // Gemma3TextScaledWordEmbedding: sqrt(hidden_size) as a float32 tensor, cast to the
      // model dtype before it multiplies the embeddings.
      const float scale32 = static_cast<float>(std::sqrt(static_cast<double>(hidden)));
      embed_scale = model_dtype == c10::ScalarType::BFloat16 ? static_cast<double>(static_cast<float>(c10::BFloat16(scale32)))
                                                             : static_cast<double>(scale32);
      break;
    }
  }
  f.refuse_unread(what, arch_inert);

  // Blocks: one shape, or "full" and "sliding" ones in the order of layer_types.
  bool any_sliding = false, any_full = false;
  for (bool s : sliding) (s ? any_sliding : any_full) = true;
  auto shape_for = [&](bool is_sliding) {
    BlockShape s = base;
    if (is_sliding) {
      s.window = window;
      // Olmo3 and Gemma3 give sliding layers plain RoPE (Gemma3: its local base).
      const bool own_rope = *arch == HfArchitecture::kOlmo3 || *arch == HfArchitecture::kGemma3;
      if (own_rope) s.scaling.reset();
      else s.scaling = scaling;
      if (*arch == HfArchitecture::kGemma3) s.theta = local_theta;
    } else {
      s.scaling = scaling;
    }
    return s;
  };

  fb::TransformerConfigT c;
  c.d_model = static_cast<int32_t>(hidden);
  c.vocab_size = static_cast<int32_t>(vocab);
  c.n_layers = static_cast<int32_t>(layers);
  c.dtype = model_dtype == c10::ScalarType::BFloat16 ? "bfloat16" : "float32";
  c.init_method = "normal";
  if (base.moe) c.name = "moe";
  if (any_sliding && any_full) {
    for (const char* name : {"full", "sliding"}) {
      auto named = std::make_unique<fb::NamedTransformerBlockConfigT>();
      named->name = name;
      named->block = make_block(shape_for(std::string(name) == "sliding"));
      c.named_blocks.push_back(std::move(named));
    }
    for (bool s : sliding) c.block_pattern.push_back(s ? "sliding" : "full");
  } else {
    c.block = make_block(shape_for(any_sliding));
  }
  c.lm_head = std::make_unique<fb::LMHeadConfigT>();
  c.lm_head->name = "default";
  c.lm_head->layer_norm = rms(base.norm_name, eps);
  c.lm_head->bias = false;
  c.tie_word_embeddings = tie;
  if (embed_scale) c.embed_scale = *embed_scale;
  out.config = Config::from_native(c);
  return out;
}

namespace {

std::string refuse_prefix() { return "this model cannot be written as a Hugging Face model: "; }

void refuse_if(bool bad, const std::string& feature) {
  require(!bad, ErrorCode::kInvalidConfig, refuse_prefix() + feature);
}

bool is_rms(const LayerNormSpec& n) {
  return (n.name == "rms" || n.name == "qwen_rms") && n.elementwise_affine && !n.bias;
}

}  // namespace

HfArchitecture hf_architecture_of(const ModelSpec& spec) {
  refuse_if(spec.normalized, "nGPT's normalized transformer (no transformers class computes it)");
  refuse_if(spec.position_embedding.has_value(), "position_embedding (input position embeddings)");
  refuse_if(spec.embedding_norm.has_value(), "embedding_norm");
  refuse_if(spec.lm_head.normalized || !spec.lm_head.layer_norm || !is_rms(*spec.lm_head.layer_norm),
            "lm_head.layer_norm must be an RMSNorm with a weight and no bias");
  refuse_if(spec.lm_head.bias, "lm_head.bias");
  refuse_if(spec.blocks.empty(), "a model without blocks");
  const BlockSpec& b0 = spec.blocks[0];
  std::optional<HfArchitecture> arch;
  const auto& a0 = b0.attention;
  const bool head_qk = a0.qk_norm && a0.use_head_qk_norm;
  const bool whole_qk = a0.qk_norm && !a0.use_head_qk_norm;
  if (b0.name == "peri_norm") arch = HfArchitecture::kGemma3;
  else if (b0.name == "reordered_norm" && whole_qk) arch = HfArchitecture::kOlmo2;
  else if (b0.name == "default" && head_qk) arch = HfArchitecture::kQwen3;
  else if (b0.name == "default" && !a0.qk_norm) arch = HfArchitecture::kLlama;
  else if (b0.name == "moe" && whole_qk) arch = HfArchitecture::kOlmoe;
  else if (b0.name == "moe" && head_qk) arch = HfArchitecture::kQwen3Moe;
  refuse_if(!arch, "blocks '" + b0.name + "'" + (a0.qk_norm ? (a0.use_head_qk_norm ? " with per-head QK-norm" : " with QK-norm")
                                                             : " without QK-norm") +
                       " (Llama, Qwen3, OLMo-2/3, OLMoE, Qwen3-MoE and Gemma3 blocks are supported)");
  bool windows = false;
  for (size_t i = 0; i < spec.blocks.size(); ++i) {
    const BlockSpec& b = spec.blocks[i];
    const std::string at = "blocks[" + std::to_string(i) + "]: ";
    const AttentionSpec& a = b.attention;
    refuse_if(b.gated_delta_net.has_value(), at + "a GatedDeltaNet sequence mixer");
    refuse_if(b.name != b0.name, at + "block '" + b.name + "' differs from the first layer's '" + b0.name + "'");
    refuse_if(b.attention_residual_alpha != 1.0 || b.feed_forward_residual_alpha != 1.0, at + "residual alphas");
    refuse_if(!is_rms(b.layer_norm), at + "layer_norm '" + b.layer_norm.name + "' (RMSNorm with a weight and no bias needed)");
    refuse_if(a.normalized, at + "normalized attention");
    refuse_if(a.bias, at + "attention.bias");
    refuse_if(a.gate.has_value(), at + "attention.gate");
    refuse_if(a.alibi, at + "attention.alibi");
    refuse_if(!a.rope, at + "attention without RoPE");
    refuse_if(a.rope->interleaved, at + "attention.rope.interleaved");
    refuse_if(a.rope->xpos_scale_base.has_value(), at + "attention.rope.xpos_scale_base");
    refuse_if(a.rope->partial_rotary_factor != 1.0, at + "attention.rope.partial_rotary_factor");
    refuse_if(a.n_heads != a0.n_heads || a.n_kv_heads != a0.n_kv_heads || a.head_dim != a0.head_dim,
              at + "attention heads that differ between layers");
    refuse_if(static_cast<bool>(a.qk_norm) != static_cast<bool>(a0.qk_norm) || a.use_head_qk_norm != a0.use_head_qk_norm ||
                  (a.qk_norm && !is_rms(*a.qk_norm)),
              at + "attention.qk_norm (an RMSNorm with a weight, the same in every layer, needed)");
    refuse_if(a.clip_qkv.has_value(), at + "attention.clip_qkv (olm clamps before the QK-norm, transformers' OLMoE after it)");
    refuse_if(a.softcap.has_value(), at + "attention.softcap (transformers' Gemma3 ignores attn_logit_softcapping)");
    if (a.window_size) windows = true;
    if (b.moe) {
      const MoESpec& m = *b.moe;
      refuse_if(!m.dropless, at + "feed_forward_moe.name 'default' (capacity-limited experts drop tokens; transformers' are dropless)");
      refuse_if(m.shared_mlp.has_value(), at + "feed_forward_moe.shared_mlp");
      refuse_if(m.router.sigmoid, at + "feed_forward_moe.router.gating_function 'sigmoid'");
      refuse_if(m.router.bias_gamma.has_value(), at + "feed_forward_moe.router.bias_gamma");
      refuse_if(m.router.normalize_expert_weights && *m.router.normalize_expert_weights != 1.0,
                at + "feed_forward_moe.router.normalize_expert_weights other than 1");
    } else {
      refuse_if(b.feed_forward.name != "default", at + "feed_forward.name '" + b.feed_forward.name + "' (a gated feed-forward needed)");
      refuse_if(b.feed_forward.bias, at + "feed_forward.bias");
      const std::string want = *arch == HfArchitecture::kGemma3 ? "gelu_tanh" : "silu";
      refuse_if(b.feed_forward.activation != want && !(*arch == HfArchitecture::kLlama &&
                                                       (b.feed_forward.activation == "gelu" || b.feed_forward.activation == "gelu_tanh" ||
                                                        b.feed_forward.activation == "relu")),
                at + "feed_forward.activation '" + b.feed_forward.activation + "'");
      refuse_if(b.feed_forward.hidden_size != b0.feed_forward.hidden_size, at + "feed-forward sizes that differ between layers");
    }
  }
  if (*arch == HfArchitecture::kOlmo2 && windows) arch = HfArchitecture::kOlmo3;
  refuse_if(spec.embed_scale.has_value() && *arch != HfArchitecture::kGemma3, "embed_scale (Gemma3 only)");
  if (*arch == HfArchitecture::kGemma3) {
    const double want = std::sqrt(static_cast<double>(spec.d_model));
    refuse_if(!spec.embed_scale || std::abs(*spec.embed_scale - want) > want * (1.0 / 128),
              "Gemma3 blocks need embed_scale sqrt(d_model)");
    refuse_if(!head_qk, "Gemma3 blocks need per-head QK-norm");
  }
  return *arch;
}

namespace {

class JsonWriter {
 public:
  void key(const std::string& k) {
    out_ << (first_ ? "\n  " : ",\n  ") << io::quote_json(k) << ": ";
    first_ = false;
  }
  void str(const std::string& k, const std::string& v) { key(k), out_ << io::quote_json(v); }
  void num(const std::string& k, double v) { key(k), out_ << io::format_double(v); }
  void integer(const std::string& k, int64_t v) { key(k), out_ << v; }
  void boolean(const std::string& k, bool v) { key(k), out_ << (v ? "true" : "false"); }
  void null(const std::string& k) { key(k), out_ << "null"; }
  void raw(const std::string& k, const std::string& v) { key(k), out_ << v; }
  std::string finish() { return "{" + out_.str() + "\n}\n"; }

 private:
  std::ostringstream out_;
  bool first_ = true;
};

std::string rope_scaling_json(const RoPEScalingSpec& s, int64_t rotary_dim, double theta) {
  std::ostringstream o;
  // transformers validates these as floats: an integral value keeps its ".0".
  auto n = [](double v) {
    std::string t = io::format_double(v);
    return t.find_first_of(".e") == std::string::npos ? t + ".0" : t;
  };
  refuse_if(s.name != "yarn" && s.attention_rescale_factor != 1.0, "rope.scaling.attention_rescale_factor other than 1");
  if (s.name == "pi") {
    o << "{\"rope_type\": \"linear\", \"factor\": " << n(s.factor) << "}";
  } else if (s.name == "stepwise") {
    o << "{\"rope_type\": \"llama3\", \"factor\": " << n(s.factor) << ", \"low_freq_factor\": "
      << n(1.0 / (1.0 - s.low_freq_proportion)) << ", \"high_freq_factor\": " << n(1.0 / s.high_freq_proportion)
      << ", \"original_max_position_embeddings\": " << s.old_context_len << "}";
  } else if (s.name == "dynamic_ntk") {
    o << "{\"rope_type\": \"dynamic\", \"factor\": " << n(s.factor) << "}";
  } else if (s.name == "yarn") {
    refuse_if(s.factor < 1.0, "rope.scaling 'yarn' with factor < 1");
    const double high = yarn_ramp_end(rotary_dim, s.old_context_len, s.beta_slow, theta);
    refuse_if(high > static_cast<double>(rotary_dim / 2 - 1),
              "rope.scaling 'yarn' whose correction range passes the last frequency (transformers' ramp differs)");
    o << "{\"rope_type\": \"yarn\", \"factor\": " << n(s.factor) << ", \"beta_fast\": " << n(s.beta_fast)
      << ", \"beta_slow\": " << n(s.beta_slow) << ", \"original_max_position_embeddings\": " << s.old_context_len << "}";
  } else {
    refuse_if(true, "rope.scaling '" + s.name + "'");
  }
  return o.str();
}

bool same_scaling(const std::optional<RoPEScalingSpec>& a, const std::optional<RoPEScalingSpec>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return a->name == b->name && a->factor == b->factor && a->attention_rescale_factor == b->attention_rescale_factor &&
         a->new_theta == b->new_theta && a->low_freq_proportion == b->low_freq_proportion &&
         a->high_freq_proportion == b->high_freq_proportion && a->old_context_len == b->old_context_len &&
         a->beta_fast == b->beta_fast && a->beta_slow == b->beta_slow;
}

// A RoPE's base: "abf" is plain RoPE at new_theta.
double effective_theta(const RoPESpec& r) {
  if (r.scaling && r.scaling->name == "abf") return r.scaling->new_theta;
  return r.theta;
}
std::optional<RoPEScalingSpec> effective_scaling(const RoPESpec& r) {
  if (r.scaling && r.scaling->name == "abf") {
    refuse_if(r.scaling->attention_rescale_factor != 1.0, "rope.scaling 'abf' with attention_rescale_factor other than 1");
    return std::nullopt;
  }
  return r.scaling;
}

}  // namespace

std::string hf_config_json(const Config& config, const HfConfigExport& options) {
  const ModelSpec& spec = config.spec();
  const HfArchitecture arch = hf_architecture_of(spec);
  const BlockSpec& b0 = spec.blocks[0];
  const AttentionSpec& a0 = b0.attention;

  // Layer kinds and their RoPE.
  std::vector<bool> sliding;
  std::optional<int64_t> window;
  for (size_t i = 0; i < spec.blocks.size(); ++i) {
    const auto& w = spec.blocks[i].attention.window_size;
    sliding.push_back(w.has_value());
    if (w) {
      refuse_if(window && *window != *w, "sliding windows of different sizes in different layers");
      window = *w;
    }
  }
  const RoPESpec* full_rope = nullptr;
  const RoPESpec* local_rope = nullptr;
  for (size_t i = 0; i < spec.blocks.size(); ++i) {
    const RoPESpec& r = *spec.blocks[i].attention.rope;
    const RoPESpec*& slot = (sliding[i] && (arch == HfArchitecture::kGemma3 || arch == HfArchitecture::kOlmo3)) ? local_rope : full_rope;
    if (!slot) slot = &r;
    refuse_if(effective_theta(r) != effective_theta(*slot) || !same_scaling(effective_scaling(r), effective_scaling(*slot)),
              "blocks[" + std::to_string(i) + "]: a RoPE that differs from the other layers of its kind");
  }
  if (!full_rope) full_rope = local_rope;  // every layer sliding
  if (local_rope && (arch == HfArchitecture::kOlmo3 || arch == HfArchitecture::kGemma3)) {
    refuse_if(effective_scaling(*local_rope).has_value(), "RoPE scaling on sliding-window layers (transformers scales only full-attention layers)");
    refuse_if(arch == HfArchitecture::kOlmo3 && effective_theta(*local_rope) != effective_theta(*full_rope),
              "different RoPE bases for sliding and full layers (OLMo-3 has one)");
  }
  if (arch == HfArchitecture::kLlama || arch == HfArchitecture::kOlmo2 || arch == HfArchitecture::kOlmoe)
    refuse_if(window.has_value(), std::string("sliding windows (") + hf_architecture_name(arch) + " has none)");
  if (arch == HfArchitecture::kQwen3Moe)
    for (bool s : sliding) refuse_if(window && !s, "sliding windows on some layers only (Qwen3-MoE windows all or none)");

  const auto scaling = effective_scaling(*full_rope);
  int64_t max_pos = 4096;
  if (scaling && (scaling->name == "dynamic_ntk" || scaling->name == "stepwise")) max_pos = scaling->old_context_len;
  if (scaling && scaling->name == "yarn")
    max_pos = static_cast<int64_t>(static_cast<double>(scaling->old_context_len) * scaling->factor);

  JsonWriter j;
  j.raw("architectures", std::string("[") + io::quote_json(hf_architecture_name(arch)) + "]");
  j.str("model_type", hf_model_type(arch));
  j.integer("vocab_size", spec.vocab_size);
  j.integer("hidden_size", spec.d_model);
  j.integer("num_hidden_layers", spec.n_layers);
  j.integer("num_attention_heads", a0.n_heads);
  j.integer("num_key_value_heads", a0.n_kv_heads);
  // OLMo-2/3 and OLMoE derive head_dim from hidden_size.
  if (arch == HfArchitecture::kOlmo2 || arch == HfArchitecture::kOlmo3 || arch == HfArchitecture::kOlmoe)
    refuse_if(a0.head_dim * a0.n_heads != spec.d_model,
              std::string(hf_architecture_name(arch)) + " needs head_dim * n_heads == d_model");
  else
    j.integer("head_dim", a0.head_dim);
  j.num("rms_norm_eps", b0.layer_norm.eps);
  j.num("rope_theta", effective_theta(*full_rope));
  if (scaling) j.raw("rope_scaling", rope_scaling_json(*scaling, a0.head_dim, effective_theta(*full_rope)));
  else j.null("rope_scaling");
  j.integer("max_position_embeddings", max_pos);
  j.boolean("attention_bias", false);
  j.num("attention_dropout", 0.0);
  j.boolean("tie_word_embeddings", spec.tie_word_embeddings);
  j.num("initializer_range", spec.init_std);
  j.boolean("use_cache", true);
  j.str("torch_dtype", options.dtype == c10::ScalarType::BFloat16 ? "bfloat16"
                       : options.dtype == c10::ScalarType::Half ? "float16"
                                                                : "float32");
  if (options.bos_token_id) j.integer("bos_token_id", *options.bos_token_id);
  else j.null("bos_token_id");
  if (options.eos_token_id) j.integer("eos_token_id", *options.eos_token_id);
  else j.null("eos_token_id");
  j.null("pad_token_id");

  auto layer_types = [&]() {
    std::string s = "[";
    for (size_t i = 0; i < sliding.size(); ++i)
      s += std::string(i ? ", " : "") + (sliding[i] ? "\"sliding_attention\"" : "\"full_attention\"");
    return s + "]";
  };
  const std::string act = b0.moe ? "silu" : b0.feed_forward.activation;
  const std::string hf_act = act == "gelu_tanh" ? "gelu_pytorch_tanh" : act;
  switch (arch) {
    case HfArchitecture::kLlama:
      j.integer("intermediate_size", b0.feed_forward.hidden_size);
      j.str("hidden_act", hf_act);
      j.boolean("mlp_bias", false);
      j.integer("pretraining_tp", 1);
      break;
    case HfArchitecture::kOlmo2:
    case HfArchitecture::kOlmo3:
      j.integer("intermediate_size", b0.feed_forward.hidden_size);
      j.str("hidden_act", hf_act);
      if (arch == HfArchitecture::kOlmo3) {
        j.integer("sliding_window", window.value_or(4096));
        j.raw("layer_types", layer_types());
      }
      break;
    case HfArchitecture::kQwen3: {
      j.integer("intermediate_size", b0.feed_forward.hidden_size);
      j.str("hidden_act", hf_act);
      j.boolean("use_sliding_window", window.has_value());
      if (window) j.integer("sliding_window", *window);
      else j.null("sliding_window");
      int64_t first = spec.n_layers;
      for (size_t i = 0; i < sliding.size(); ++i)
        if (sliding[i]) first = std::min<int64_t>(first, static_cast<int64_t>(i));
      j.integer("max_window_layers", first);
      j.raw("layer_types", layer_types());
      break;
    }
    case HfArchitecture::kOlmoe:
    case HfArchitecture::kQwen3Moe: {
      const MoESpec& m = *b0.moe;
      j.str("hidden_act", "silu");
      j.integer("num_experts", m.num_experts);
      j.integer("num_experts_per_tok", m.router.top_k);
      j.boolean("norm_topk_prob", m.router.normalize_expert_weights.has_value());
      j.boolean("output_router_logits", false);
      j.num("router_aux_loss_coef", m.lb_loss_weight.value_or(0.0));
      if (arch == HfArchitecture::kOlmoe) {
        j.integer("intermediate_size", m.hidden_size);
        j.null("clip_qkv");
      } else {
        j.integer("intermediate_size", m.hidden_size);
        j.integer("moe_intermediate_size", m.hidden_size);
        j.integer("decoder_sparse_step", 1);
        j.raw("mlp_only_layers", "[]");
        j.boolean("use_sliding_window", window.has_value());
        if (window) j.integer("sliding_window", *window);
        else j.null("sliding_window");
      }
      break;
    }
    case HfArchitecture::kGemma3:
      j.integer("intermediate_size", b0.feed_forward.hidden_size);
      j.str("hidden_activation", hf_act);
      j.integer("query_pre_attn_scalar", a0.head_dim);
      j.integer("sliding_window", window.value_or(4096));
      j.raw("layer_types", layer_types());
      j.num("rope_local_base_freq", local_rope ? effective_theta(*local_rope) : 10000.0);
      j.null("final_logit_softcapping");
      j.null("attn_logit_softcapping");
      j.boolean("use_bidirectional_attention", false);
      break;
  }
  return j.finish();
}

}  // namespace olm::convert
