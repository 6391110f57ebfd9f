#include "core/io/json.h"

#include <cstring>
#include <limits>

#include "core/error.h"

namespace olm::io {
namespace {

class JsonReader {
 public:
  JsonReader(const char* text, size_t size, std::string context, int max_depth)
      : p_(text), begin_(text), end_(text + size), context_(std::move(context)), max_depth_(max_depth) {}

  Json document() {
    Json value = parse_value(0);
    skip_space();
    if (p_ != end_) error("unexpected trailing characters");
    return value;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail(ErrorCode::kParse, context_ + ": malformed JSON at byte " +
                                std::to_string(p_ - begin_) + ": " + what);
  }
  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  void expect(char c) {
    skip_space();
    if (p_ >= end_ || *p_ != c) error(std::string("expected '") + c + "'");
    ++p_;
  }
  bool consume(char c) {
    skip_space();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (p_ >= end_) error("unterminated string");
      const char c = *p_++;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (p_ >= end_) error("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          if (end_ - p_ < 4) error("short \\u escape");
          unsigned code = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = *p_++;
            code <<= 4;
            if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
            else error("bad \\u escape");
          }
          // Encode the code unit as UTF-8 (surrogates are kept as-is; names never use them).
          if (code < 0x80) {
            out.push_back(static_cast<char>(code));
          } else if (code < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (code >> 6)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          } else {
            out.push_back(static_cast<char>(0xE0 | (code >> 12)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          }
          break;
        }
        default: error("bad escape");
      }
    }
  }

  Json parse_number() {
    Json value;
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    bool integral = true;
    while (p_ < end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E' ||
                         *p_ == '+' || *p_ == '-')) {
      if (!(*p_ >= '0' && *p_ <= '9')) integral = false;
      ++p_;
    }
    if (p_ == start || (p_ - start == 1 && *start == '-')) error("expected a value");
    if (!integral) {
      value.kind = Json::kOther;
      return value;
    }
    const bool negative = *start == '-';
    uint64_t magnitude = 0;
    for (const char* q = start + (negative ? 1 : 0); q < p_; ++q) {
      const uint64_t digit = static_cast<uint64_t>(*q - '0');
      if (magnitude > (std::numeric_limits<uint64_t>::max() - digit) / 10) error("integer overflow");
      magnitude = magnitude * 10 + digit;
    }
    if (magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) error("integer overflow");
    value.kind = Json::kInt;
    value.integer = negative ? -static_cast<int64_t>(magnitude) : static_cast<int64_t>(magnitude);
    return value;
  }

  Json parse_value(int depth) {
    if (depth > max_depth_) error("nesting too deep");
    skip_space();
    if (p_ >= end_) error("unexpected end of text");
    Json value;
    const char c = *p_;
    if (c == '{') {
      ++p_;
      value.kind = Json::kObject;
      if (consume('}')) return value;
      do {
        skip_space();
        std::string key = parse_string();
        expect(':');
        value.object.emplace_back(std::move(key), parse_value(depth + 1));
      } while (consume(','));
      expect('}');
    } else if (c == '[') {
      ++p_;
      value.kind = Json::kArray;
      if (consume(']')) return value;
      do {
        value.array.push_back(parse_value(depth + 1));
      } while (consume(','));
      expect(']');
    } else if (c == '"') {
      value.kind = Json::kString;
      value.string = parse_string();
    } else if (c == 't' || c == 'f' || c == 'n') {
      for (const char* word : {"true", "false", "null"}) {
        const size_t n = std::strlen(word);
        if (static_cast<size_t>(end_ - p_) >= n && std::strncmp(p_, word, n) == 0) {
          p_ += n;
          value.kind = c == 'n' ? Json::kNull : Json::kBool;
          value.boolean = c == 't';
          return value;
        }
      }
      error("bad literal");
    } else {
      value = parse_number();
    }
    return value;
  }

  const char* p_;
  const char* begin_;
  const char* end_;
  std::string context_;
  int max_depth_;
};

}  // namespace

Json parse_json(const char* text, size_t size, const std::string& context, int max_depth) {
  return JsonReader(text, size, context, max_depth).document();
}

}  // namespace olm::io
