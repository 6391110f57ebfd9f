#include <algorithm>
#include <cctype>

#include "core/tokenizer/components.h"
#include "core/tokenizer/regex.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

namespace {

// `tokenizers`' SplitDelimiterBehavior: what becomes of the matched delimiters.
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior read_behavior(const JsonNode& node) {
  const std::string& name = node.string();
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  node.fail(ErrorCode::kInvalidConfig, "unknown behavior \"" + name + "\"");
}

struct Span {
  size_t start, end;
  bool match;
};

// NormalizedString::split: `spans` cover the piece; the behaviour decides the splits, empty
// ones are dropped.
void split_spans(const Piece& piece, std::vector<Span>& spans, Behavior behavior, std::vector<Piece>& out) {
  thread_local std::vector<Span> merged;
  merged.clear();
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Span& s : spans)
        if (!s.match) merged.push_back(s);
      break;
    case Behavior::kIsolated:
      merged = spans;
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.match && !previous_match && !merged.empty()) merged.back().end = s.end;
        else merged.push_back(s);
        previous_match = s.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.match && !previous_match && !merged.empty()) merged.back().start = s.start;
        else merged.push_back(s);
        previous_match = s.match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.match == previous_match && !merged.empty()) merged.back().end = s.end;
        else merged.push_back(s);
        previous_match = s.match;
      }
      break;
    }
  }
  for (const Span& s : merged)
    if (s.end > s.start) out.push_back(Piece{piece.text.substr(s.start, s.end - s.start), piece.at_start && s.start == 0});
}

// Pattern::find_matches for a regex: gaps and matches, covering the text.
void regex_spans(const Regex& regex, std::string_view text, bool invert, std::vector<Span>& spans) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  spans.clear();
  if (text.empty()) {
    spans.push_back({0, 0, invert});
    return;
  }
  regex.find_all(text, matches);
  size_t previous = 0;
  for (const auto& [start, end] : matches) {
    if (previous != start) spans.push_back({previous, start, invert});
    spans.push_back({start, end, !invert});
    previous = end;
  }
  if (previous != text.size()) spans.push_back({previous, text.size(), invert});
}

// Pattern::find_matches for a character predicate: every matching character on its own.
template <class Predicate>
void char_spans(std::string_view text, Predicate is_delimiter, std::vector<Span>& spans) {
  spans.clear();
  if (text.empty()) {
    spans.push_back({0, 0, false});
    return;
  }
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t start = i;
    if (is_delimiter(next_char(text, i))) {
      if (last < start) spans.push_back({last, start, false});
      spans.push_back({start, i, true});
      last = i;
    }
  }
  if (last < text.size()) spans.push_back({last, text.size(), false});
}

template <class Predicate>
void split_chars(std::vector<Piece>& pieces, Predicate is_delimiter, Behavior behavior) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  thread_local std::vector<Span> spans;
  for (const Piece& piece : pieces) {
    char_spans(piece.text, is_delimiter, spans);
    split_spans(piece, spans, behavior, out);
  }
  pieces = std::move(out);
}

bool is_bert_punctuation(char32_t c) {
  return (c < 0x80 && std::ispunct(static_cast<int>(c))) || is_punctuation(c);
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }
  bool keeps_text() const override {
    for (const auto& step : steps_)
      if (!step->keeps_text()) return false;
    return true;
  }
  bool byte_level() const override {
    for (const auto& step : steps_)
      if (step->byte_level()) return true;
    return false;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::shared_ptr<const Regex> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    thread_local std::vector<Span> spans;
    for (const Piece& piece : pieces) {
      regex_spans(*pattern_, piece.text, invert_, spans);
      split_spans(piece, spans, behavior_, out);
    }
    pieces = std::move(out);
  }
  bool keeps_text() const override { return behavior_ != Behavior::kRemoved; }

 private:
  std::shared_ptr<const Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

const Regex& gpt2_regex() {
  static const Regex regex(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                           "ByteLevel");
  return regex;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {
    if (use_regex_) gpt2_regex();
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    thread_local std::vector<std::pair<size_t, size_t>> matches;
    auto emit = [&](std::string_view text, bool at_start) {
      if (text.empty()) return;
      Piece piece{std::string(), at_start};
      append_byte_level(piece.text, text);
      out.push_back(std::move(piece));
    };
    for (Piece& piece : pieces) {
      if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) piece.text.insert(0, " ");
      if (!use_regex_) {
        emit(piece.text, piece.at_start);
        continue;
      }
      // Isolated: the matches and the gaps between them, in order.
      const std::string_view text = piece.text;
      gpt2_regex().find_all(text, matches);
      size_t previous = 0;
      for (const auto& [start, end] : matches) {
        emit(text.substr(previous, start - previous), piece.at_start && previous == 0);
        emit(text.substr(start, end - start), piece.at_start && start == 0);
        previous = end;
      }
      emit(text.substr(previous), piece.at_start && previous == 0);
    }
    pieces = std::move(out);
  }
  bool keeps_text() const override { return !add_prefix_space_; }
  bool byte_level() const override { return true; }

 private:
  bool add_prefix_space_, use_regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(char32_t replacement, Prepend prepend, bool split)
      : replacement_(replacement), prepend_(prepend), split_(split) {
    append_utf8(replacement_text_, replacement);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    thread_local std::vector<Span> spans;
    for (Piece& piece : pieces) {
      std::string text;
      text.reserve(piece.text.size() + 3);
      for (char c : piece.text) {
        if (c == ' ') text += replacement_text_;
        else text += c;
      }
      const bool starts_with_replacement = text.compare(0, replacement_text_.size(), replacement_text_) == 0;
      if (!starts_with_replacement &&
          (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && piece.at_start)))
        text.insert(0, replacement_text_);
      Piece replaced{std::move(text), piece.at_start};
      if (!split_) {
        if (!replaced.text.empty()) out.push_back(std::move(replaced));
        continue;
      }
      const char32_t replacement = replacement_;
      char_spans(replaced.text, [replacement](char32_t c) { return c == replacement; }, spans);
      split_spans(replaced, spans, Behavior::kMergedWithNext, out);
    }
    pieces = std::move(out);
  }
  bool keeps_text() const override { return false; }

 private:
  char32_t replacement_;
  std::string replacement_text_;
  Prepend prepend_;
  bool split_;
};

// \w+|[^\w\s]+ (the regex crate's Unicode classes); whitespace is dropped.
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const Piece& piece : pieces) {
      const std::string& text = piece.text;
      size_t run_start = 0;
      int run_kind = 0;  // 0 none, 1 word, 2 other
      for (size_t i = 0; i <= text.size();) {
        int kind = 0;
        size_t next = i;
        if (i < text.size()) {
          const char32_t c = next_char(text, next);
          kind = is_word_char(c) ? 1 : is_whitespace(c) ? 0 : 2;
        }
        if (kind != run_kind || i == text.size()) {
          if (run_kind != 0 && i > run_start)
            out.push_back(Piece{text.substr(run_start, i - run_start), piece.at_start && run_start == 0});
          run_start = i;
          run_kind = kind;
        }
        if (i == text.size()) break;
        i = next;
      }
    }
    pieces = std::move(out);
  }
  bool keeps_text() const override { return false; }
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override { split_chars(pieces, is_whitespace, Behavior::kRemoved); }
  bool keeps_text() const override { return false; }
};

class BertPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_chars(pieces, is_whitespace, Behavior::kRemoved);
    split_chars(pieces, is_bert_punctuation, Behavior::kIsolated);
  }
  bool keeps_text() const override { return false; }
};

class PunctuationPreTokenizer : public PreTokenizer {
 public:
  explicit PunctuationPreTokenizer(Behavior behavior) : behavior_(behavior) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override { split_chars(pieces, is_bert_punctuation, behavior_); }
  bool keeps_text() const override { return behavior_ != Behavior::kRemoved; }

 private:
  Behavior behavior_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_chars(pieces, is_numeric, individual_ ? Behavior::kIsolated : Behavior::kContiguous);
  }
  bool keeps_text() const override { return true; }

 private:
  bool individual_;
};

class CharDelimiterPreTokenizer : public PreTokenizer {
 public:
  explicit CharDelimiterPreTokenizer(char32_t delimiter) : delimiter_(delimiter) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    const char32_t d = delimiter_;
    split_chars(pieces, [d](char32_t c) { return c == d; }, Behavior::kRemoved);
  }
  bool keeps_text() const override { return false; }

 private:
  char32_t delimiter_;
};

// A member holding exactly one character.
char32_t read_char(const JsonNode& node) {
  const std::string& s = node.string();
  size_t i = 0;
  if (s.empty()) node.fail(ErrorCode::kParse, "expected one character, got \"\"");
  const char32_t c = next_char(s, i);
  if (i != s.size()) node.fail(ErrorCode::kParse, "expected one character, got \"" + s + "\"");
  return c;
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonNode& node) {
  const std::string& type = node.type();
  if (type == "Sequence") {
    const JsonNode list = node.at("pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(make_pre_tokenizer(list[i]));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(read_pattern(node.at("pattern")), read_behavior(node.at("behavior")),
                                               node.bool_or("invert", false));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(node.bool_or("add_prefix_space", true), node.bool_or("use_regex", true));
  if (type == "Metaspace") {
    using Prepend = MetaspacePreTokenizer::Prepend;
    Prepend prepend = node.bool_or("add_prefix_space", true) ? Prepend::kAlways : Prepend::kNever;
    if (auto scheme = node.find_value("prepend_scheme")) {
      const std::string& name = scheme->string();
      if (name == "always") prepend = Prepend::kAlways;
      else if (name == "first") prepend = Prepend::kFirst;
      else if (name == "never") prepend = Prepend::kNever;
      else scheme->fail(ErrorCode::kInvalidConfig, "unknown prepend_scheme \"" + name + "\"");
    }
    return std::make_unique<MetaspacePreTokenizer>(read_char(node.at("replacement")), prepend, node.bool_or("split", true));
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "Punctuation") {
    auto behavior = node.find_value("behavior");
    return std::make_unique<PunctuationPreTokenizer>(behavior ? read_behavior(*behavior) : Behavior::kIsolated);
  }
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(node.bool_or("individual_digits", false));
  if (type == "CharDelimiterSplit") return std::make_unique<CharDelimiterPreTokenizer>(read_char(node.at("delimiter")));
  node.at("type").fail(ErrorCode::kInvalidConfig,
                       "pre-tokenizer \"" + type + "\" is not supported (olm implements Sequence, Split, ByteLevel, "
                       "Metaspace, Whitespace, WhitespaceSplit, BertPreTokenizer, Punctuation, Digits, "
                       "CharDelimiterSplit)");
}

}  // namespace olm::tokenizer
