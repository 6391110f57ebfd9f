// Text <-> token ids, natively: Hugging Face tokenizer.json files (core/tokenizer/hf_tokenizer.*)
// and SentencePiece .model files (core/tokenizer/sentencepiece_tokenizer.*) behind one
// interface. Ids match the `tokenizers` package and libsentencepiece exactly.
// (core/tokenizer: above io, a peer of config; nothing here knows about models.)
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace olm::tokenizer {

// The ids a tokenizer gives special roles, where its files name them (tokenizer_config.json's
// bos_token/eos_token/pad_token/unk_token, a SentencePiece model's trainer spec).
struct SpecialIds {
  std::optional<int32_t> bos, eos, pad, unk;
};

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
};

// Immutable once loaded: every member may be called from many threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `add_special_tokens`: apply the post-processor's template (BOS/EOS, [CLS]/[SEP]) as
  // `tokenizers`' encode(text, add_special_tokens=...) does.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  // As `tokenizers`' decode(ids, skip_special_tokens=...): bytes that do not form valid UTF-8
  // become U+FFFD. Throws Error(kInvalidArgument) for an id outside [0, vocab_size()).
  virtual std::string decode(const int32_t* ids, size_t count, bool skip_special_tokens) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  // Added tokens included: one past the largest id.
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<AddedToken> added_tokens() const = 0;
  // Whether decode(encode(x)) == x for every valid UTF-8 x (byte-level BPE without a
  // normalizer, SentencePiece with byte fallback and an identity normalizer, ...).
  virtual bool lossless() const = 0;

  const SpecialIds& special_ids() const { return special_ids_; }
  void set_special_ids(const SpecialIds& ids) { special_ids_ = ids; }  // while loading only
  // Replaces the special tokens encode(text, true) puts around a text with `before text after`
  // (truncation keeps room for them), as transformers' Llama/Gemma/... tokenizer classes rebuild
  // the post-processor from tokenizer_config.json's add_bos_token/add_eos_token. While loading only.
  virtual void set_single_template(std::vector<int32_t> before, std::vector<int32_t> after) = 0;

 private:
  SpecialIds special_ids_;
};

// A tokenizer.json document (`source` names it in messages). Error(kParse) for malformed JSON,
// Error(kInvalidConfig) for a component or option olm does not implement, naming its path in
// the document ("pre_tokenizer.pretokenizers[1].type").
std::shared_ptr<const Tokenizer> load_hf_tokenizer_json(std::string_view text, const std::string& source);
// A SentencePiece ModelProto file. Error(kIo) / Error(kParse) naming the file.
std::shared_ptr<const Tokenizer> load_sentencepiece(const std::string& path);
// A file or a Hugging Face model directory, recognised by content: a JSON object with a
// "model" member is a tokenizer.json, anything else a SentencePiece model. A directory holds
// tokenizer.json (preferred) or tokenizer.model. A tokenizer_config.json beside it supplies
// the special roles (bos_token, eos_token, pad_token, unk_token); without one, the roles a
// SentencePiece model defines are used.
std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& path);

}  // namespace olm::tokenizer
