// The Config doors: JSON, FlatBuffer and native in, JSON and FlatBuffer out, parameter counts.
#include "core/config/config.h"

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace olm {

Config Config::from_native(const fb::TransformerConfigT& native) {
  // The one validation, whatever door the config came in by (JSON, FlatBuffer, native, a
  // preset or a train config's `model`): the rules of resolve(), and what JSON can hold.
  // What JSON can hold is checked first, so later messages quote only valid UTF-8.
  Config config;
  config.native_ = std::make_shared<const fb::TransformerConfigT>(native);
  check_json_writable(config.to_flatbuffer().data(), "TransformerConfig");
  config.spec_ = std::make_shared<const ModelSpec>(resolve(native));
  return config;
}

Config Config::from_json_file(const std::string& path) { return from_json(read_text_file(path), path); }

Config Config::from_flatbuffer(const void* data, size_t size) {
  require(data != nullptr || size == 0, ErrorCode::kInvalidArgument, "data: NULL");
  const auto* bytes = static_cast<const uint8_t*>(data);
  require(size >= 8, ErrorCode::kParse,
          "config FlatBuffer: " + std::to_string(size) + " bytes is too short to be a buffer");
  require(size < (1ull << 31), ErrorCode::kParse, "config FlatBuffer: larger than 2 GiB");
  require(fb::TransformerConfigBufferHasIdentifier(bytes), ErrorCode::kParse,
          "config FlatBuffer: wrong file identifier (expected \"OLMC\")");
  // Verify an aligned copy: the verifier checks alignment of scalars against the base.
  std::vector<uint8_t> aligned(bytes, bytes + size);
  flatbuffers::Verifier verifier(aligned.data(), aligned.size(), /*max_depth=*/64,
                                 /*max_tables=*/100000);
  require(fb::VerifyTransformerConfigBuffer(verifier), ErrorCode::kParse,
          "config FlatBuffer: verification failed (truncated or corrupt buffer)");
  fb::TransformerConfigT native;
  fb::GetTransformerConfig(aligned.data())->UnPackTo(&native);
  return from_native(native);
}

Config Config::from_json(std::string_view text, const std::string& source) {
  const auto buffer = json_to_flatbuffer(text, "TransformerConfig", source.empty() ? "config JSON" : source);
  return from_flatbuffer(buffer.data(), buffer.size());
}

std::vector<uint8_t> Config::to_flatbuffer() const {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::TransformerConfig::Pack(builder, native_.get()),
                 fb::TransformerConfigIdentifier());
  return {builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize()};
}

std::string Config::to_json() const {
  return flatbuffer_to_json(to_flatbuffer().data(), "TransformerConfig");
}

ParamCounts Config::num_params() const {
  const ModelSpec& s = *spec_;
  ParamCounts counts;
  counts.total = s.d_model * s.vocab_size;
  if (s.embedding_norm) counts.total += s.embedding_norm->num_params(s.d_model);
  // Learned position embeddings are embedding parameters (Kaplan et al. leave them out of
  // the non-embedding count too).
  const int64_t positions =
      s.position_embedding && s.position_embedding->name == "learned" ? s.position_embedding->max_sequence_length * s.d_model : 0;
  counts.total += positions;
  for (const auto& block : s.blocks) counts.total += block.num_params(s.d_model);
  counts.total += s.lm_head.num_params(s.d_model, s.vocab_size);
  // OLMo-core: the LM head weight is shared with the embeddings when tied, counted once.
  if (s.tie_word_embeddings) counts.total -= s.d_model * s.vocab_size;
  counts.non_embedding = counts.total - s.d_model * s.vocab_size - positions;
  counts.active = counts.total;
  for (const auto& block : s.blocks) counts.active -= block.num_params(s.d_model) - block.num_active_params(s.d_model);
  counts.active_non_embedding = counts.active - s.d_model * s.vocab_size - positions;
  return counts;
}

}  // namespace olm
