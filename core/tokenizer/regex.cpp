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

Regex::Regex(const std::string& pattern, const std::string& where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail(ErrorCode::kInvalidConfig, where + ": regex " + pattern + ": " +
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
