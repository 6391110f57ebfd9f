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

// The model's vocabulary: token <-> id; ids may have holes. The token -> id index is an
// open-addressing table of ids (no node per entry: a 100k vocabulary loads and looks up
// without a cache miss per probe).
class Vocab {
 public:
  std::optional<int32_t> find(std::string_view token) const {
    if (slots_.empty()) return std::nullopt;
    const size_t hash = std::hash<std::string_view>{}(token);
    const uint32_t tag = static_cast<uint32_t>(hash >> 32);
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const int32_t id = slots_[i];
      if (id < 0) return std::nullopt;
      if (tags_[i] == tag && tokens_[id] == token) return id;
    }
  }
  const std::string* token(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < tokens_.size() && present_[id] ? &tokens_[id] : nullptr;
  }
  size_t size() const { return count_; }           // tokens (tokenizers' get_vocab_size)
  size_t id_limit() const { return tokens_.size(); }  // one past the largest id

  // Filling: room for `n` tokens and ids below `id_limit`; insert() gives `token` the id
  // (a token inserted again moves to its new id, as serde keeps the last of repeated keys)
  // and returns the token already holding that id, if another one does.
  void reserve(size_t n, size_t id_limit);
  const std::string* insert(const std::string& token, int32_t id);

 private:
  std::vector<std::string> tokens_;  // by id; "" where no token has the id
  std::vector<bool> present_;
  std::vector<int32_t> slots_;       // ids, -1 empty
  std::vector<uint32_t> tags_;       // the hashes' high bits, to skip most string compares
  size_t mask_ = 0, count_ = 0;
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
std::unique_ptr<Model> make_unigram(const JsonNode& node);

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
  // Every id it may add.
  virtual std::vector<int32_t> special_ids() const = 0;
};
std::unique_ptr<PostProcessor> make_post_processor(const JsonNode& node);
// The single template `before $A after`.
std::unique_ptr<PostProcessor> make_template_post_processor(std::vector<int32_t> before, std::vector<int32_t> after);

}  // namespace olm::tokenizer
