// Model configuration: the FlatBuffers object (schema/olm.fbs) as the user wrote it, plus the
// resolved specification the model is built from (every default filled in, every field
// validated). Only this file and the resolution steps (core/config/internal.h lists their
// files) know how optional fields default.
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "olm_generated.h"

namespace olm {

struct LayerNormSpec {
  std::string name;  // "default" | "rms" | "qwen_rms" | "l2_norm"
  double eps = 1e-5;
  bool elementwise_affine = true;
  bool bias = true;
  bool full_precision = true;
  int64_t num_params(int64_t size) const;
};

struct RoPEScalingSpec {
  std::string name;  // "abf" | "pi" | "stepwise" | "yarn" | "dynamic_ntk"
  double attention_rescale_factor = 1.0;
  double new_theta = 8000000;
  double factor = 1.0;
  double low_freq_proportion = 0.0;
  double high_freq_proportion = 0.25;
  int64_t old_context_len = 8192;
  int64_t beta_fast = 32;
  int64_t beta_slow = 1;
};

struct RoPESpec {
  std::string name;  // "default"
  double theta = 500000;
  bool full_precision = true;
  double partial_rotary_factor = 1.0;
  std::optional<RoPEScalingSpec> scaling;
  bool interleaved = false;               // pairs (2i, 2i+1) instead of (i, i + dim/2)
  std::optional<double> xpos_scale_base;  // xPos; nullopt: none
};

struct GateSpec {
  bool elementwise = false;  // else headwise
  bool full_precision = true;
};

struct AttentionSpec {
  // nGPT's NormalizedAttention: learned per-dimension q/k scales (sq, sk) and softmax scale
  // sqrt(head_dim) instead of 1/sqrt(head_dim).
  bool normalized = false;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  bool bias = true;
  std::optional<RoPESpec> rope;
  std::optional<double> clip_qkv;
  std::optional<LayerNormSpec> qk_norm;
  bool use_head_qk_norm = false;
  double dropout = 0.0;
  std::string backend;  // "torch" (SDPA) | "explicit" (explicit softmax)
  std::optional<GateSpec> gate;
  std::optional<int64_t> window_size;  // this layer's sliding window; nullopt: full attention
  std::optional<double> softcap;  // scores -> softcap * tanh(scores / softcap); "explicit" only
  bool alibi = false;             // ALiBi score bias
  int64_t num_params(int64_t d_model) const;
};

// olmo_core.nn.attention.recurrent.GatedDeltaNetConfig, resolved (a block's sequence mixer
// when set; see BlockSpec::gated_delta_net).
struct GatedDeltaNetSpec {
  int64_t n_heads = 0;    // key/query heads
  int64_t n_v_heads = 0;  // value heads (a multiple of n_heads)
  int64_t head_dim = 0;   // head_k_dim
  int64_t head_v_dim = 0; // head_dim * expand_v
  double expand_v = 2.0;
  bool allow_neg_eigval = true;
  int64_t conv_size = 4;
  bool conv_bias = false;
  double norm_eps = 1e-5;
  int64_t key_dim() const { return n_heads * head_dim; }
  int64_t value_dim() const { return n_v_heads * head_v_dim; }
  int64_t num_params(int64_t d_model) const;
  int64_t num_flops_per_token(int64_t d_model) const;  // GatedDeltaNet.num_flops_per_token
};

struct FeedForwardSpec {
  std::string name = "default";  // "default" (gated) | "classic" | "normalized" (nGPT)
  int64_t hidden_size = 0;
  bool bias = true;
  std::string activation;  // one of activation_names()
  int64_t num_params(int64_t d_model) const;
};

// olmo_core.nn.moe.MoERouterConfig, resolved.
struct MoERouterSpec {
  int64_t top_k = 1;
  std::optional<double> jitter_eps;
  std::optional<double> normalize_expert_weights;  // the p of the p-norm
  std::optional<double> bias_gamma;
  bool sigmoid = false;  // else softmax
};

// olmo_core.nn.moe.MoEConfig, resolved. The loss weights are the effective ones (already
// divided by n_layers when scale_loss_by_num_layers); nullopt: that loss is off.
struct MoESpec {
  bool dropless = false;
  int64_t num_experts = 0;
  int64_t hidden_size = 0;
  double capacity_factor = 1.2;  // capacity ("default") mode only
  MoERouterSpec router;
  std::optional<FeedForwardSpec> shared_mlp;
  std::optional<double> lb_loss_weight;
  bool lb_loss_instance = false;  // granularity "instance", else "local_batch"
  std::optional<double> z_loss_weight;
  int64_t num_params(int64_t d_model) const;
  int64_t num_active_params(int64_t d_model) const;
};

struct BlockSpec {
  // "default" | "reordered_norm" | "default_scaled" | "peri_norm" | "normalized" | "moe"
  // | "moe_reordered_norm" | "moe_hybrid" | "moe_hybrid_reordered_norm"
  std::string name;
  AttentionSpec attention;  // its n_heads/head_dim only, when gated_delta_net is set
  // Set when the block's sequence mixer ("attention" slot) is a GatedDeltaNet.
  std::optional<GatedDeltaNetSpec> gated_delta_net;
  LayerNormSpec layer_norm;
  FeedForwardSpec feed_forward;  // unused (hidden_size 0) by "moe" and "moe_reordered_norm"
  std::optional<MoESpec> moe;    // set exactly for the moe* blocks
  double dropout = 0.0;
  double attention_residual_alpha = 1.0;
  double feed_forward_residual_alpha = 1.0;
  std::string parallel_merge = "sum";  // "parallel" blocks: "sum" | "mean" of the two branches
  bool has_feed_forward() const { return !moe || name == "moe_hybrid" || name == "moe_hybrid_reordered_norm"; }
  int64_t num_params(int64_t d_model) const;
  int64_t num_active_params(int64_t d_model) const;
};

struct LMHeadSpec {
  bool normalized = false;  // nGPT: logits scaled by a learned per-token sz, no final norm
  std::optional<LayerNormSpec> layer_norm;
  bool bias = true;
  std::string loss_implementation = "default";  // "default" | "fused_linear"
  int64_t num_params(int64_t d_model, int64_t vocab_size) const;
};

struct PositionEmbeddingSpec {
  std::string name;                 // "learned" | "sinusoidal"
  int64_t max_sequence_length = 0;  // learned: rows of the table; sinusoidal: 0 (unbounded)
};

struct ModelSpec {
  // nGPT (OLMo-core's NormalizedTransformer): hidden states on the unit sphere; the weight
  // matrices are renormalized after every optimizer step (Transformer::normalize_matrices).
  bool normalized = false;
  int64_t d_model = 0;
  int64_t vocab_size = 0;
  int64_t n_layers = 0;
  std::vector<BlockSpec> blocks;  // one per layer
  LMHeadSpec lm_head;
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::string init_method;  // "normal" | "llama" | "llama_depth" | "fan_in" | "normalized"
  int64_t init_seed = 0;
  double init_std = 0.02;
  double embedding_init_std = 0.02;
  std::optional<LayerNormSpec> embedding_norm;
  std::optional<double> embed_scale;
  std::vector<std::string> freeze_params;  // fnmatch globs over parameter names
  std::optional<PositionEmbeddingSpec> position_embedding;
  bool tie_word_embeddings = false;
  bool moe = false;  // name "moe" (MoETransformer; required by MoE blocks)
};

struct ParamCounts {
  int64_t total = 0;
  int64_t non_embedding = 0;
  // MoE: the parameters one token uses (top_k of num_experts experts); equal to the above
  // for dense models.
  int64_t active = 0;
  int64_t active_non_embedding = 0;
};

class Config {
 public:
  // Each validates and throws olm::Error (kParse for malformed input, kInvalidConfig for an
  // impossible configuration, naming the field).
  // `source` names the text in messages (a file name; default "config JSON").
  static Config from_json(std::string_view text, const std::string& source = "");
  // Reads and parses a JSON file; messages name the file (Error(kIo) when it cannot be read).
  static Config from_json_file(const std::string& path);
  static Config from_flatbuffer(const void* data, size_t size);
  static Config from_native(const fb::TransformerConfigT& native);

  std::string to_json() const;
  std::vector<uint8_t> to_flatbuffer() const;

  const fb::TransformerConfigT& native() const { return *native_; }
  const ModelSpec& spec() const { return *spec_; }

  ParamCounts num_params() const;
  int64_t num_flops_per_token(int64_t seq_len) const;

 private:
  std::shared_ptr<const fb::TransformerConfigT> native_;
  std::shared_ptr<const ModelSpec> spec_;
};

// The activation registry's names (core/nn/activation.cpp implements them).
const std::vector<std::string>& activation_names();

// OLMo-core's presets (TransformerConfig.olmo2_30M(vocab_size) etc.).
Config preset(const std::string& name, int64_t vocab_size);
const std::vector<std::string>& preset_names();

// JSON text <-> FlatBuffer through the embedded schema, for any root table of schema/olm.fbs.
// Malformed JSON, unknown fields (with the nearest field name), values of the wrong kind or
// range and invalid UTF-8 are Error(kParse) prefixed with `what` (the source: a file name or
// "config JSON"), the line and column, and naming the field by its path ("optimizer.lr").
std::vector<uint8_t> json_to_flatbuffer(std::string_view text, const char* root_type,
                                        const std::string& what);
// Doubles are written as the shortest text that reads back to the same value.
std::string flatbuffer_to_json(const uint8_t* buffer, const char* root_type);
// Refuses, as Error(kInvalidConfig) naming the field, what JSON cannot hold: strings that are
// not UTF-8 and non-finite numbers. Part of every config's validation, whichever door it came
// in by, so that everything accepted can be written as JSON and read back.
void check_json_writable(const uint8_t* buffer, const char* root_type);
// Reads a whole text file (Error(kIo) naming the path).
std::string read_text_file(const std::string& path);

// Resolves and validates; exposed for tests.
ModelSpec resolve(const fb::TransformerConfigT& native);

// The sequence mixers a block's "attention" slot (an AttentionConfig) can hold: attention
// (names "default" and "normalized") or a GatedDeltaNet (name "gated_delta_net").
enum class SequenceMixer { kAttention, kGatedDeltaNet, kAny };

// One AttentionConfig field and the mixers that accept it: its (sequence_mixer: "attention" |
// "gated_delta_net" | "any") attribute in schema/olm.fbs. Resolving refuses, naming it, a field
// set for a mixer that does not accept it; there is no hand-kept list to forget a field in.
struct AttentionConfigField {
  std::string name;
  SequenceMixer accepted_by = SequenceMixer::kAny;
  uint16_t vtable_offset = 0;  // flatbuffers::voffset_t: where a packed table says it is set
};
// Every AttentionConfig field in schema order, read once from the embedded schema;
// Error(kInternal) naming the field if one has no valid sequence_mixer attribute. Exposed for
// tests.
const std::vector<AttentionConfigField>& attention_config_fields();

}  // namespace olm
