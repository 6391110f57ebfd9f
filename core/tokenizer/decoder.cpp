#include "core/tokenizer/components.h"
#include "core/tokenizer/regex.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

namespace {

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }
  bool byte_level_only() const override {
    if (steps_.empty()) return false;
    for (const auto& step : steps_)
      if (!step->byte_level_only()) return false;
    return true;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Each token's characters back to bytes (a token with a character outside the table keeps its
// UTF-8), all tokens as one string, ill-formed UTF-8 as U+FFFD.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t start = bytes.size();
      bool mapped = true;
      for (size_t i = 0; i < token.size() && mapped;) {
        const int b = byte_of_char(next_char(token, i));
        if (b < 0) mapped = false;
        else bytes += static_cast<char>(b);
      }
      if (!mapped) bytes.resize(start), bytes += token;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
  bool byte_level_only() const override { return true; }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool prepended) : replacement_(replacement), prepended_(prepended) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t t = 0; t < tokens.size(); ++t) {
      std::string out;
      const std::string& token = tokens[t];
      for (size_t i = 0; i < token.size();) {
        const size_t start = i;
        const char32_t c = next_char(token, i);
        if (c != replacement_) out.append(token, start, i - start);
        else if (!(t == 0 && prepended_)) out += ' ';
      }
      tokens[t] = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  bool prepended_;
};

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t t = 0; t < tokens.size(); ++t) {
      std::string& token = tokens[t];
      if (t != 0) {
        if (token.compare(0, prefix_.size(), prefix_) == 0) token.erase(0, prefix_.size());
        else token.insert(0, " ");
      }
      if (cleanup_) token = cleanup(token);
    }
  }
  // `tokenizers`' wordpiece::cleanup: spaces before punctuation and English contractions.
  static std::string cleanup(std::string text) {
    static const std::pair<const char*, const char*> kRules[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kRules) text = replace_literal(text, from, to);
    return text;
  }
  static std::string replace_literal(const std::string& text, std::string_view from, std::string_view to) {
    std::string out;
    size_t last = 0;
    for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, last)) {
      out.append(text, last, at - last);
      out.append(to);
      last = at + from.size();
    }
    out.append(text, last, std::string::npos);
    return out;
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

// Runs of "<0xNN>" tokens back to their bytes: valid UTF-8 as one token, else one U+FFFD per
// byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (io::valid_utf8(bytes)) out.push_back(bytes);
      else
        for (size_t k = 0; k < bytes.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      bytes.clear();
    };
    for (std::string& token : tokens) {
      int byte = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') byte = parse_hex_byte(token.substr(3, 2));
      if (byte >= 0) {
        bytes += static_cast<char>(byte);
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens = std::move(out);
  }

 private:
  // Rust's u8::from_str_radix(s, 16): an optional '+', then hex digits of either case.
  static int parse_hex_byte(std::string_view s) {
    if (!s.empty() && s[0] == '+') s.remove_prefix(1);
    if (s.empty()) return -1;
    int value = 0;
    for (char c : s) {
      int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0) return -1;
      value = value * 16 + digit;
    }
    return value;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, character)
      for (size_t i = 0; i < token.size();) {
        const size_t at = i;
        chars.emplace_back(at, next_char(token, i));
      }
      size_t start_cut = 0;
      for (size_t k = 0; k < start_ && k < chars.size() && chars[k].second == content_; ++k) start_cut = k + 1;
      size_t stop_cut = chars.size();
      for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        const size_t index = chars.size() - k - 1;
        if (chars[index].second != content_) break;
        stop_cut = index;
      }
      if (stop_cut < start_cut) stop_cut = start_cut;
      const size_t begin = start_cut < chars.size() ? chars[start_cut].first : token.size();
      const size_t end = stop_cut < chars.size() ? chars[stop_cut].first : token.size();
      token = token.substr(begin, end - begin);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::shared_ptr<const Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token = replace_all(*pattern_, token, content_);
  }

 private:
  std::shared_ptr<const Regex> pattern_;
  std::string content_;
};

// Every token but the last ends a word: its suffix becomes a space (the last's is dropped).
class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t t = 0; t < tokens.size(); ++t)
      tokens[t] = WordPieceDecoder::replace_literal(tokens[t], suffix_, t + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

char32_t read_char(const JsonNode& node) {
  const std::string& s = node.string();
  size_t i = 0;
  if (s.empty()) node.fail(ErrorCode::kParse, "expected one character, got \"\"");
  const char32_t c = next_char(s, i);
  if (i != s.size()) node.fail(ErrorCode::kParse, "expected one character, got " + io::quote_json(s));
  return c;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const JsonNode& node) {
  const std::string& type = node.type();
  if (type == "Sequence") {
    const JsonNode list = node.at("decoders");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(make_decoder(list[i]));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    bool prepended = node.bool_or("add_prefix_space", true);
    if (auto scheme = node.find_value("prepend_scheme")) {
      const std::string& name = scheme->string();
      if (name != "always" && name != "first" && name != "never")
        scheme->fail(ErrorCode::kInvalidConfig, "unknown prepend_scheme \"" + name + "\"");
      prepended = name != "never";
    }
    return std::make_unique<MetaspaceDecoder>(read_char(node.at("replacement")), prepended);
  }
  if (type == "WordPiece")
    return std::make_unique<WordPieceDecoder>(node.string_or("prefix", "##"), node.bool_or("cleanup", true));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(read_char(node.at("content")),
                                          static_cast<size_t>(node.integer_or("start", 0, 0, INT32_MAX)),
                                          static_cast<size_t>(node.integer_or("stop", 0, 0, INT32_MAX)));
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(read_pattern(node.at("pattern")), node.at("content").string());
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(node.string_or("suffix", "</w>"));
  node.at("type").fail(ErrorCode::kInvalidConfig,
                       "decoder \"" + type + "\" is not supported (olm implements Sequence, ByteLevel, Metaspace, "
                       "WordPiece, ByteFallback, Fuse, Strip, Replace, BPEDecoder)");
}

}  // namespace olm::tokenizer
