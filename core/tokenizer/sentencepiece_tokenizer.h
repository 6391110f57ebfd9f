// SentencePiece .model files through Debian's libsentencepiece: ids exactly as the Python
// `sentencepiece` package's encode(text), text as its decode(ids).
//
// Special tokens follow Hugging Face's LlamaTokenizer: encode(text, add_special_tokens=true)
// prepends the BOS id (special_ids().bos: the model's, or tokenizer_config.json's bos_token when
// load_tokenizer found one) when there is one, and appends nothing; false adds nothing.
// decode(ids, skip_special_tokens=true) is sentencepiece's decode (control tokens such as
// <s> and </s> give no text); with false, each control token's piece text ("<s>") is kept where
// it stands.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace olm::tokenizer {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Error(kIo) when `path` cannot be read, Error(kParse) when it is not a ModelProto; both name
  // the path.
  explicit SentencePieceTokenizer(const std::string& path);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const int32_t* ids, size_t count, bool skip_special_tokens) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  int64_t vocab_size() const override;
  std::vector<AddedToken> added_tokens() const override;
  // The normalizer changes nothing (no character map, no whitespace folding) and byte fallback
  // covers every character outside the vocabulary.
  bool lossless() const override { return lossless_; }
  void set_single_template(std::vector<int32_t> before, std::vector<int32_t> after) override;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::string path_;
  std::vector<AddedToken> added_tokens_;  // control, unknown and user-defined pieces
  // encode(text, true)'s special tokens; unset: BOS before the text, as the slow LlamaTokenizer.
  std::optional<std::pair<std::vector<int32_t>, std::vector<int32_t>>> single_template_;
  bool lossless_ = false;
};

}  // namespace olm::tokenizer
