// Hugging Face model directories: config.json, model.safetensors or shards listed by
// model.safetensors.index.json, generation_config.json and the tokenizer files.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/convert/hf_config.h"
#include "core/model.h"

namespace olm::convert {

// Reads DIR/config.json only (no weights): see config_from_hf.
HfModelConfig read_hf_config(const std::string& dir, std::optional<c10::ScalarType> dtype = std::nullopt);

struct HfLoadOptions {
  std::optional<c10::ScalarType> dtype;  // the model's; default config.json's torch_dtype
  std::string device = "cpu";
};

struct HfModel {
  std::shared_ptr<Model> model;
  HfModelConfig hf;
};

// Builds the model config.json describes and fills it from the safetensors files. Every file
// is checked before any weight is copied: each file the index names exists; no tensor is in
// two files; the index and the files list the same tensors; every tensor the config needs is
// there with its shape and a floating dtype, and no other. Errors (kIo, kParse, kMismatch,
// kInvalidConfig) name the file and the tensor or field. The files are memory-mapped and read
// one at a time; each tensor is copied once, straight into the model.
HfModel load_hf_model(const std::string& dir, const HfLoadOptions& options = {});

struct HfSaveOptions {
  int64_t max_shard_bytes = int64_t{5} << 30;  // a tensor larger than this gets a file of its own
  std::string tokenizer_source_dir;            // empty: no tokenizer files
  std::optional<c10::ScalarType> dtype;         // the files'; default the model's parameter dtype
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
};

// Writes a directory transformers' AutoModelForCausalLM.from_pretrained loads: config.json,
// generation_config.json, model.safetensors (or model-0000k-of-0000n.safetensors and the
// index when the weights exceed max_shard_bytes) and the tokenizer files found in
// tokenizer_source_dir. Everything is written into a temporary directory next to `dir` and
// renamed into place; `dir` must not exist or be empty. kInvalidConfig names the feature of a
// model no supported transformers class computes.
void save_hf_model(Model& model, const std::string& dir, const HfSaveOptions& options = {});

// The tokenizer files save_hf_model copies, in this order, when present.
const std::vector<std::string>& hf_tokenizer_files();

}  // namespace olm::convert
