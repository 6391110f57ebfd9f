#include "core/tokenizer/components.h"
#include "core/tokenizer/regex.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

std::shared_ptr<const Regex> read_pattern(const JsonNode& node) {
  if (auto literal = node.find("String")) return std::make_shared<Regex>(Regex::escape(literal->string()), literal->where());
  if (auto regex = node.find("Regex")) return std::make_shared<Regex>(regex->string(), regex->where());
  node.fail(ErrorCode::kParse, "expected {\"String\": ...} or {\"Regex\": ...}");
}

std::string replace_all(const Regex& pattern, std::string_view text, std::string_view content) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  pattern.find_all(text, matches);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t last = 0;
  for (const auto& [start, end] : matches) {
    out.append(text.substr(last, start - last));
    out.append(content);
    last = end;
  }
  out.append(text.substr(last));
  return out;
}

namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }
  bool identity() const override {
    for (const auto& step : steps_)
      if (!step->identity()) return false;
    return true;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = tokenizer::normalize(text, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = to_lowercase(text); }
};

// Removes leading / trailing White_Space characters.
void strip(std::string& text, bool left, bool right) {
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end) {
      size_t i = begin;
      if (!is_whitespace(next_char(text, i))) break;
      begin = i;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      size_t i = start;
      if (!is_whitespace(next_char(text, i))) break;
      end = start;
    }
  }
  text = text.substr(begin, end - begin);
}

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override { strip(text, left_, right_); }

 private:
  bool left_, right_;
};

template <class Drop>
void filter_chars(std::string& text, Drop drop) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t start = i;
    const char32_t c = next_char(text, i);
    if (!drop(c)) out.append(text, start, i - start);
  }
  text = std::move(out);
}

class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override { filter_chars(text, is_mark); }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::shared_ptr<const Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override { text = replace_all(*pattern_, text, content_); }

 private:
  std::shared_ptr<const Regex> pattern_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    append_byte_level(out, text);
    text = std::move(out);
  }
};

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}
  void normalize(std::string& text) const override {
    if (clean_text_) {
      std::string out;
      out.reserve(text.size());
      for (size_t i = 0; i < text.size();) {
        const char32_t c = next_char(text, i);
        const bool control = c != '\t' && c != '\n' && c != '\r' && is_other(c);
        if (c == 0 || c == 0xFFFD || control) continue;
        if (c == '\t' || c == '\n' || c == '\r' || is_whitespace(c)) out += ' ';
        else append_utf8(out, c);
      }
      text = std::move(out);
    }
    if (chinese_) {
      std::string out;
      out.reserve(text.size());
      for (size_t i = 0; i < text.size();) {
        const size_t start = i;
        const char32_t c = next_char(text, i);
        if (is_chinese_char(c)) out += ' ', out.append(text, start, i - start), out += ' ';
        else out.append(text, start, i - start);
      }
      text = std::move(out);
    }
    if (strip_accents_) {
      text = tokenizer::normalize(text, NormalForm::kNfd);
      filter_chars(text, is_mark_nonspacing);
    }
    if (lowercase_) text = to_lowercase(text);
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const JsonNode& node) {
  const std::string& type = node.type();
  if (type == "Sequence") {
    const JsonNode list = node.at("normalizers");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(make_normalizer(list[i]));
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(node.bool_or("strip_left", true), node.bool_or("strip_right", true));
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(read_pattern(node.at("pattern")), node.at("content").string());
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(node.at("prepend").string());
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "BertNormalizer") {
    const bool lowercase = node.bool_or("lowercase", true);
    return std::make_unique<BertNormalizer>(node.bool_or("clean_text", true), node.bool_or("handle_chinese_chars", true),
                                            node.bool_or("strip_accents", lowercase), lowercase);
  }
  node.at("type").fail(ErrorCode::kInvalidConfig,
                       "normalizer \"" + type + "\" is not supported (olm implements Sequence, NFC, NFD, NFKC, NFKD, "
                       "Lowercase, Strip, StripAccents, Replace, Prepend, ByteLevel, BertNormalizer)");
}

}  // namespace olm::tokenizer
