// The stages of a tokenizer.json pipeline, each as the `tokenizers` package (0.22) defines it:
// normalizer -> pre-tokenizer -> model -> post-processor for encoding, decoder for decoding.
// Only ids are computed (no offsets), so text flows as plain UTF-8 strings.
// Every factory reads its component from a JsonNode and refuses what it does not implement
// with Error(kInvalidConfig) naming the member.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/tokenizer/json_node.h"

namespace olm::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
  // Whether it maps every string to itself (only an empty Sequence does).
  virtual bool identity() const { return false; }
};
std::unique_ptr<Normalizer> make_normalizer(const JsonNode& node);

class Regex;
// A pattern member: {"String": literal} or {"Regex": pattern}.
std::shared_ptr<const Regex> read_pattern(const JsonNode& node);
// The text with every match of `pattern` replaced by `content`.
std::string replace_all(const Regex& pattern, std::string_view text, std::string_view content);

// A piece of text between pre-tokenization steps. `at_start`: it begins at offset 0 of the
// original input (Metaspace's prepend_scheme "first" asks).
struct Piece {
  std::string text;
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their splits; empty pieces are dropped, as `tokenizers` does.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
  // Whether the pieces, concatenated, always spell the input (nothing removed or added).
  virtual bool keeps_text() const = 0;
  // Whether its output is byte-level characters (a ByteLevel step).
  virtual bool byte_level() const { return false; }
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonNode& node);

// The model's vocabulary: token <-> id; ids may have holes.
struct Vocab {
  std::unordered_map<std::string, int32_t> ids;
  std::vector<std::string> tokens;  // by id; "" where no token has the id
  std::vector<bool> present;

  std::optional<int32_t> find(std::string_view token) const {
    auto it = ids.find(std::string(token));
    return it == ids.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  const std::string* token(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < tokens.size() && present[id] ? &tokens[id] : nullptr;
  }
};
// A JSON object {token: id}; Error(kInvalidConfig) for a duplicate id.
Vocab read_vocab(const JsonNode& node);

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word (not empty).
  virtual void tokenize(const std::string& word, std::vector<int32_t>& ids) const = 0;
  virtual const Vocab& vocab() const = 0;
  // Whether, on byte-level input, the ids' tokens always spell the word exactly (every byte's
  // character is a token, merges only concatenate, no prefix or suffix is added).
  virtual bool byte_level_complete() const { return false; }
};
std::unique_ptr<Model> make_model(const JsonNode& node);
std::unique_ptr<Model> make_bpe(const JsonNode& node);

class Decoder {
 public:
  virtual ~Decoder() = default;
  // `tokenizers`' decode_chain: the tokens, transformed.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  virtual bool byte_level_only() const { return false; }
};
std::unique_ptr<Decoder> make_decoder(const JsonNode& node);

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // A single sequence's ids with the special tokens this processor adds.
  virtual void process(std::vector<int32_t>& ids) const = 0;
};
std::unique_ptr<PostProcessor> make_post_processor(const JsonNode& node);

}  // namespace olm::tokenizer
