#include "core/tokenizer/hf_tokenizer.h"

#include <algorithm>

#include "core/tokenizer/text.h"

namespace olm::tokenizer {

void AddedTokenMatcher::add(const std::string& pattern, const AddedTokenSpec* token) {
  if (pattern.empty()) return;  // matches nothing (aho-corasick never reports an empty match here)
  entries_.push_back(Entry{pattern, token});
}

void AddedTokenMatcher::finish() {
  std::stable_sort(entries_.begin(), entries_.end(),
                   [](const Entry& a, const Entry& b) { return a.pattern.size() > b.pattern.size(); });
  for (auto& list : by_byte_) list.clear();
  for (size_t k = 0; k < entries_.size(); ++k)
    by_byte_[static_cast<unsigned char>(entries_[k].pattern[0])].push_back(k);
}

namespace {
// The last / first character of `s` is a `regex` crate \w.
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return is_word_char(next_char(s, start));
}
bool starts_with_word(std::string_view s) {
  size_t i = 0;
  return !s.empty() && is_word_char(next_char(s, i));
}
}  // namespace

void AddedTokenMatcher::split(std::string_view text, std::vector<Split>& out) const {
  out.clear();
  size_t start_offset = 0;
  size_t at = 0;
  while (at < text.size() && !entries_.empty()) {
    // The leftmost position where a pattern matches, and the longest pattern there.
    const Entry* found = nullptr;
    for (; at < text.size(); ++at) {
      for (size_t k : by_byte_[static_cast<unsigned char>(text[at])]) {
        const std::string& p = entries_[k].pattern;
        if (text.compare(at, p.size(), p) == 0) {
          found = &entries_[k];
          break;
        }
      }
      if (found) break;
    }
    if (!found) break;
    size_t start = at, stop = at + found->pattern.size();
    at = stop;  // matches never overlap, kept or not
    const AddedTokenSpec& token = *found->token;
    if (token.single_word) {
      const bool start_space = start == 0 || !ends_with_word(text.substr(0, start));
      const bool stop_space = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        size_t prev = new_start - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t i = prev;
        if (!is_whitespace(next_char(text, i))) break;
        new_start = prev;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_whitespace(next_char(text, i))) break;
        stop = i;
      }
    }
    if (start_offset < start) out.push_back(Split{start_offset, start, -1});
    out.push_back(Split{start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back(Split{start_offset, text.size(), -1});
}

HfTokenizer::HfTokenizer(const io::Json& root_json, const std::string& source) {
  const JsonNode root(root_json, "", source);
  root.expect(io::Json::kObject, "a JSON object");
  model_ = make_model(root.at("model"));
  // The normalizer comes before the added tokens: those marked normalized are matched in
  // normalized text.
  if (auto node = root.find_value("normalizer")) normalizer_ = make_normalizer(*node);
  if (auto node = root.find_value("pre_tokenizer")) pre_tokenizer_ = make_pre_tokenizer(*node);
  if (auto node = root.find_value("post_processor")) post_processor_ = make_post_processor(*node);
  if (auto node = root.find_value("decoder")) decoder_ = make_decoder(*node);
  if (auto node = root.find_value("added_tokens")) read_added_tokens(*node);

  vocab_size_ = static_cast<int64_t>(model_->vocab().id_limit());
  for (const auto& token : added_) vocab_size_ = std::max<int64_t>(vocab_size_, int64_t{token->id} + 1);
  // The post-processor's ids must decode: tokenizers would emit any number written there.
  if (post_processor_) {
    const std::vector<int32_t> special = post_processor_->special_ids();
    special_added_ = special.size();
    for (int32_t id : special)
      if (!id_to_token(id))
        root.at("post_processor").fail(ErrorCode::kInvalidConfig,
                                       "special token id " + std::to_string(id) + " is not in the vocabulary");
  }
  if (auto node = root.find_value("truncation")) read_truncation(*node);
  if (auto node = root.find_value("padding")) read_padding(*node);
  lossless_ = decide_lossless();
}

void HfTokenizer::set_single_template(std::vector<int32_t> before, std::vector<int32_t> after) {
  special_added_ = before.size() + after.size();
  post_processor_ = make_template_post_processor(std::move(before), std::move(after));
}

void HfTokenizer::read_added_tokens(const JsonNode& list) {
  // Ids as tokenizers' AddedVocabulary::add_tokens assigns them: a content the vocabulary (or
  // an earlier added token) has keeps that id, any other takes the next free one after the
  // model's. tokenizers only warns where the file says otherwise; olm refuses the file.
  const int64_t model_size = static_cast<int64_t>(model_->vocab().size());
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonNode node = list[i];
    auto token = std::make_unique<AddedTokenSpec>();
    token->content = node.at("content").string();
    const int64_t stated = node.at("id").integer(0, INT32_MAX - 1);
    token->special = node.bool_or("special", false);
    token->single_word = node.bool_or("single_word", false);
    token->lstrip = node.bool_or("lstrip", false);
    token->rstrip = node.bool_or("rstrip", false);
    token->normalized = node.bool_or("normalized", !token->special);
    if (token->content.empty()) continue;
    if (added_ids_.count(token->content)) continue;  // a repeated content is ignored, as tokenizers does
    int64_t id;
    if (auto model_id = model_->vocab().find(token->content)) {
      id = *model_id;
    } else {
      int64_t max_added = -1;
      for (const auto& t : added_) max_added = std::max<int64_t>(max_added, t->id);
      id = max_added < 0 ? model_size : (max_added >= model_size || model_size == 0 ? max_added + 1 : model_size);
    }
    if (id != stated)
      node.at("id").fail(ErrorCode::kInvalidConfig,
                         "added token " + io::quote_json(token->content) + " has id " + std::to_string(stated) +
                             ", but tokenizers gives it " + std::to_string(id) +
                             " (the model's id for that content, else the next id after the vocabulary)");
    if (!model_->vocab().find(token->content) && model_->vocab().token(static_cast<int32_t>(id)))
      node.at("id").fail(ErrorCode::kInvalidConfig, "added token " + io::quote_json(token->content) + " would share id " +
                                                        std::to_string(id) + " with the model's token " +
                                                        io::quote_json(*model_->vocab().token(static_cast<int32_t>(id))));
    if (added_by_id_.count(static_cast<int32_t>(id)))
      node.at("id").fail(ErrorCode::kInvalidConfig, "id " + std::to_string(id) + " is given to two added tokens");
    token->id = static_cast<int32_t>(id);
    added_ids_[token->content] = token->id;
    added_by_id_[token->id] = token.get();
    if (token->special) special_contents_.insert(token->content);
    added_.push_back(std::move(token));
  }
  for (const auto& token : added_) {
    if (!token->normalized) {
      raw_matcher_.add(token->content, token.get());
    } else {
      std::string pattern = token->content;
      if (normalizer_) normalizer_->normalize(pattern);
      normalized_matcher_.add(pattern, token.get());
    }
  }
  raw_matcher_.finish();
  normalized_matcher_.finish();
}

void HfTokenizer::read_truncation(const JsonNode& node) {
  Truncation truncation;
  truncation.max_length = static_cast<size_t>(node.at("max_length").integer(0, INT32_MAX));
  const std::string direction = node.string_or("direction", "Right");
  if (direction != "Right" && direction != "Left")
    node.at("direction").fail(ErrorCode::kInvalidConfig, "unknown direction \"" + direction + "\"");
  truncation.keep_end = direction == "Left";
  const std::string strategy = node.string_or("strategy", "LongestFirst");
  if (strategy == "OnlySecond")
    node.at("strategy").fail(ErrorCode::kInvalidConfig, "OnlySecond truncates a pair's second text; a single text fails");
  if (strategy != "LongestFirst" && strategy != "OnlyFirst")
    node.at("strategy").fail(ErrorCode::kInvalidConfig, "unknown strategy \"" + strategy + "\"");
  node.integer_or("stride", 0, 0, INT32_MAX);  // overflowing windows only; ids are unaffected
  if (truncation.max_length < special_added_)
    node.at("max_length").fail(ErrorCode::kInvalidConfig, "max_length " + std::to_string(truncation.max_length) +
                                                              " is below the " + std::to_string(special_added_) +
                                                              " special tokens the post-processor adds");
  truncation_ = truncation;
}

void HfTokenizer::read_padding(const JsonNode& node) {
  Padding padding;
  const JsonNode strategy = node.at("strategy");
  if (strategy.json().kind == io::Json::kString) {
    if (strategy.string() != "BatchLongest")
      strategy.fail(ErrorCode::kInvalidConfig, "unknown strategy \"" + strategy.string() + "\"");
  } else {
    padding.fixed = static_cast<size_t>(strategy.at("Fixed").integer(0, INT32_MAX));
  }
  padding.multiple = static_cast<size_t>(node.integer_or("pad_to_multiple_of", 0, 0, INT32_MAX));
  const std::string direction = node.string_or("direction", "Right");
  if (direction != "Right" && direction != "Left")
    node.at("direction").fail(ErrorCode::kInvalidConfig, "unknown direction \"" + direction + "\"");
  padding.left = direction == "Left";
  padding.pad_id = static_cast<int32_t>(node.integer_or("pad_id", 0, 0, INT32_MAX - 1));
  if (!id_to_token(padding.pad_id))
    node.at("pad_id").fail(ErrorCode::kInvalidConfig, "pad_id " + std::to_string(padding.pad_id) + " is not in the vocabulary");
  padding_ = padding;
}

bool HfTokenizer::decide_lossless() const {
  // Byte-level BPE end to end: nothing normalizes, the pre-tokenizer keeps all text and maps
  // it to byte characters, the model spells every word with its tokens, and the decoder maps
  // the characters back to bytes. Added tokens must come back as themselves.
  if (truncation_ || padding_) return false;
  if (normalizer_ && !normalizer_->identity()) return false;
  if (!pre_tokenizer_ || !pre_tokenizer_->keeps_text() || !pre_tokenizer_->byte_level()) return false;
  if (!model_->byte_level_complete() || !decoder_ || !decoder_->byte_level_only()) return false;
  for (const auto& token : added_) {
    if (token->lstrip || token->rstrip) return false;
    std::vector<std::string> tokens{token->content};
    decoder_->decode_chain(tokens);
    if (tokens.size() != 1 || tokens[0] != token->content) return false;
  }
  return true;
}

void HfTokenizer::encode_text(std::string text, bool at_start, std::vector<int32_t>& ids) const {
  thread_local std::vector<Piece> pieces;
  pieces.clear();
  pieces.push_back(Piece{std::move(text), at_start});
  if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
  for (const Piece& piece : pieces)
    if (!piece.text.empty()) model_->tokenize(piece.text, ids);
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  size_t bad = 0;
  if (!io::valid_utf8(text, &bad))
    fail(ErrorCode::kInvalidArgument, "encode: the text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<AddedTokenMatcher::Split> raw_splits, normalized_splits;
  raw_matcher_.split(text, raw_splits);
  for (const auto& raw : raw_splits) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    std::string normalized(text.substr(raw.start, raw.end - raw.start));
    if (normalizer_) normalizer_->normalize(normalized);
    if (normalized.empty()) continue;
    if (normalized_matcher_.empty()) {
      encode_text(std::move(normalized), raw.start == 0, ids);
      continue;
    }
    normalized_matcher_.split(normalized, normalized_splits);
    for (const auto& split : normalized_splits) {
      if (split.id >= 0) ids.push_back(split.id);
      else encode_text(normalized.substr(split.start, split.end - split.start), raw.start == 0 && split.start == 0, ids);
    }
  }
  if (truncation_) {
    const size_t keep = truncation_->max_length - (add_special_tokens ? special_added_ : 0);
    if (ids.size() > keep) {
      if (truncation_->keep_end) ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(keep));
      else ids.resize(keep);
    }
  }
  if (add_special_tokens && post_processor_) post_processor_->process(ids);
  if (padding_) {
    size_t length = padding_->fixed.value_or(ids.size());
    if (padding_->multiple > 0 && length % padding_->multiple) length += padding_->multiple - length % padding_->multiple;
    if (ids.size() < length) ids.insert(padding_->left ? ids.begin() : ids.end(), length - ids.size(), padding_->pad_id);
  }
  return ids;
}

std::string HfTokenizer::decode(const int32_t* ids, size_t count, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size_)
      fail(ErrorCode::kInvalidArgument, "decode: ids[" + std::to_string(i) + "] = " + std::to_string(id) +
                                            " is outside the vocabulary [0, " + std::to_string(vocab_size_) + ")");
    const std::string* token = nullptr;
    auto added = added_by_id_.find(id);
    if (added != added_by_id_.end()) token = &added->second->content;
    else token = model_->vocab().token(id);
    if (!token) continue;  // an id no token has (a hole): dropped, as tokenizers does
    if (skip_special_tokens && special_contents_.count(*token)) continue;
    tokens.push_back(*token);
  }
  if (!decoder_) {
    std::string joined;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k) joined += ' ';
      joined += tokens[k];
    }
    return joined;
  }
  decoder_->decode_chain(tokens);
  std::string joined;
  for (const std::string& token : tokens) joined += token;
  return joined;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  auto added = added_ids_.find(std::string(token));
  if (added != added_ids_.end()) return added->second;
  return model_->vocab().find(token);
}

std::optional<std::string> HfTokenizer::id_to_token(int32_t id) const {
  auto added = added_by_id_.find(id);
  if (added != added_by_id_.end()) return added->second->content;
  const std::string* token = model_->vocab().token(id);
  return token ? std::optional<std::string>(*token) : std::nullopt;
}

std::vector<AddedToken> HfTokenizer::added_tokens() const {
  std::vector<AddedToken> out;
  for (const auto& token : added_) out.push_back(AddedToken{token->content, token->id, token->special});
  std::sort(out.begin(), out.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  return out;
}

std::shared_ptr<const Tokenizer> load_hf_tokenizer_json(std::string_view text, const std::string& source) {
  // JSON is UTF-8 (serde_json refuses anything else); every string below is then walked
  // character by character without bounds checks of its own.
  size_t bad = 0;
  if (!io::valid_utf8(text, &bad)) {
    const io::TextPosition at = io::position_of(text, bad);
    fail(ErrorCode::kParse, source + ": line " + std::to_string(at.line) + ", column " + std::to_string(at.column) +
                                ": not valid UTF-8");
  }
  const io::Json root = io::parse_json(text.data(), text.size(), source, 64);
  return std::make_shared<HfTokenizer>(root, source);
}

}  // namespace olm::tokenizer
