// A Hugging Face tokenizer.json, run natively with the `tokenizers` package's (0.22) semantics:
// added tokens split out first (those marked `normalized` after the normalizer), then
// normalizer, pre-tokenizer, model, truncation, the post-processor's template and padding;
// decoding through the decoder chain. Components: components.h. load_hf_tokenizer_json
// (tokenizer.h) builds one.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/tokenizer/components.h"
#include "core/tokenizer/tokenizer.h"

namespace olm::tokenizer {

// tokenizer.json's added_tokens: matched in the text, longest first at the leftmost position,
// as `tokenizers`' AddedVocabulary (aho-corasick, LeftmostLongest) does.
struct AddedTokenSpec {
  std::string content;
  int32_t id = 0;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

class AddedTokenMatcher {
 public:
  // `pattern`: what `token` is matched by (its content, normalized or not). finish() after the
  // last add().
  void add(const std::string& pattern, const AddedTokenSpec* token);
  void finish();
  bool empty() const { return entries_.empty(); }
  // Splits `text` into runs of text (id -1) and added tokens, as AddedVocabulary::find_matches.
  struct Split {
    size_t start, end;
    int32_t id;
  };
  void split(std::string_view text, std::vector<Split>& out) const;

 private:
  struct Entry {
    std::string pattern;
    const AddedTokenSpec* token;
  };
  std::vector<Entry> entries_;                 // longest pattern first
  std::vector<std::vector<size_t>> by_byte_ = std::vector<std::vector<size_t>>(256);
};

class HfTokenizer : public Tokenizer {
 public:
  HfTokenizer(const io::Json& root, const std::string& source);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const int32_t* ids, size_t count, bool skip_special_tokens) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::vector<AddedToken> added_tokens() const override;
  bool lossless() const override { return lossless_; }
  void set_single_template(std::vector<int32_t> before, std::vector<int32_t> after) override;

 private:
  void read_added_tokens(const JsonNode& list);
  void read_truncation(const JsonNode& node);
  void read_padding(const JsonNode& node);
  void encode_text(std::string text, bool at_start, std::vector<int32_t>& ids) const;
  bool decide_lossless() const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  // tokenizer.json's "truncation" and "padding", for a single sequence: the ids before the
  // post-processor are cut to max_length (less the special tokens it will add), keeping the
  // start (or the end, direction Left); the result is padded with pad_id to a fixed length or
  // its own rounded up to pad_to_multiple_of.
  struct Truncation {
    size_t max_length = 0;
    bool keep_end = false;
  };
  struct Padding {
    std::optional<size_t> fixed;
    size_t multiple = 0;
    bool left = false;
    int32_t pad_id = 0;
  };
  std::optional<Truncation> truncation_;
  std::optional<Padding> padding_;
  size_t special_added_ = 0;  // ids the post-processor adds to a single sequence
  std::vector<std::unique_ptr<AddedTokenSpec>> added_;  // in the file's order
  std::unordered_map<std::string, int32_t> added_ids_;
  std::unordered_map<int32_t, const AddedTokenSpec*> added_by_id_;
  std::unordered_set<std::string> special_contents_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  int64_t vocab_size_ = 0;
  bool lossless_ = false;
};

}  // namespace olm::tokenizer
