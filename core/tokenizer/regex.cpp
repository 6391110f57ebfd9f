#include "core/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

namespace {
// One match block and JIT stack per thread, for every pattern: only the whole match's offsets
// are read, and PCRE2 fills as many pairs as fit.
struct ThreadMatch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  ThreadMatch() {
    if (!data || !stack || !context) fail(ErrorCode::kOutOfMemory, "regex: cannot allocate match data");
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};
ThreadMatch& thread_match() {
  thread_local ThreadMatch match;
  return match;
}
}  // namespace

namespace {

// The classes whose members differ between the two engines, spelled out as Oniguruma (the
// engine `tokenizers` runs) defines them: \s is the White_Space property (PCRE2 adds U+180E),
// \w is Letter | Mark | Number | Connector_Punctuation (PCRE2 10.42: letters, numbers, '_'),
// \h is a hexadecimal digit (PCRE2: horizontal space).
constexpr const char* kSpace = "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
constexpr const char* kWord = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr const char* kHex = "0-9a-fA-F";

// An Oniguruma pattern as PCRE2 reads it with the same meaning. Negated classes inside a
// bracket ([^\S]) stay PCRE2's (a bracket cannot hold a negated set). Oniguruma's nested
// brackets and && intersections have no PCRE2 spelling: refused, naming `where`.
std::string from_oniguruma(const std::string& pattern, const std::string& where) {
  auto refuse = [&](const char* what) {
    fail(ErrorCode::kInvalidConfig, where + ": regex " + pattern + ": " + what + " (Oniguruma syntax PCRE2 reads differently)");
  };
  std::string out;
  out.reserve(pattern.size() + 32);
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      if (e == 'Q') {  // quoted up to \E, untouched
        const size_t end = pattern.find("\\E", i + 2);
        const size_t stop = end == std::string::npos ? pattern.size() : end + 2;
        out.append(pattern, i, stop - i);
        i = stop - 1;
        continue;
      }
      const char* set = e == 's' || e == 'S' ? kSpace : e == 'w' || e == 'W' ? kWord : e == 'h' || e == 'H' ? kHex : nullptr;
      const bool negated = e == 'S' || e == 'W' || e == 'H';
      if (set && class_depth == 0) {
        out += negated ? "[^" : "[";
        out += set;
        out += ']';
        ++i;
        continue;
      }
      if (set && !negated) {
        out += set;
        ++i;
        continue;
      }
      out += c;
      out += e;
      ++i;
      continue;
    }
    if (c == '[') {
      if (pattern.compare(i, 2, "[:") == 0 && class_depth > 0) {  // a POSIX class: copy it whole
        const size_t end = pattern.find(":]", i + 2);
        if (end != std::string::npos) {
          out.append(pattern, i, end + 2 - i);
          i = end + 1;
          continue;
        }
      }
      if (class_depth > 0) refuse("a bracket inside a bracket");
      ++class_depth;
      out += c;
      // A ']' first in the class (after an optional '^') is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += '^', ++i;
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += ']', ++i;
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    if (c == '&' && class_depth > 0 && i + 1 < pattern.size() && pattern[i + 1] == '&') refuse("a && intersection");
    out += c;
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& onig_pattern, const std::string& where) {
  const std::string pattern = from_oniguruma(onig_pattern, where);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail(ErrorCode::kInvalidConfig, where + ": regex " + onig_pattern + ": " +
                                        reinterpret_cast<const char*>(message) + " at offset " +
                                        std::to_string(offset));
  }
  // Without JIT support (some architectures) pcre2_match interprets; results are the same.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  auto* code = static_cast<pcre2_code*>(code_);
  ThreadMatch& match = thread_match();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t search_from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (search_from <= s.size()) {
    const int rc = pcre2_match(code, subject, s.size(), search_from, PCRE2_NO_UTF_CHECK, match.data,
                               match.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail(ErrorCode::kInvalidArgument, std::string("regex match: ") + reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.data);
    const size_t start = ovector[0], end = ovector[1];
    if (start == end && have_last && last_end == end) {
      if (search_from >= s.size()) return;
      search_from += utf8_length(static_cast<unsigned char>(s[search_from]));
      continue;
    }
    out.emplace_back(start, end);
    search_from = end;
    have_last = true;
    last_end = end;
  }
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() + 4);
  out += "\\Q";
  // \Q...\E quotes everything up to the next \E, so an \E inside the literal is split.
  for (size_t i = 0; i < literal.size(); ++i) {
    if (literal[i] == '\\' && i + 1 < literal.size() && literal[i + 1] == 'E') {
      out += "\\E\\\\\\Q";
      continue;
    }
    out += literal[i];
  }
  out += "\\E";
  return out;
}

}  // namespace olm::tokenizer
