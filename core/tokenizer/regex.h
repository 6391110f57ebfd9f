// The regular expressions of tokenizer.json (Split and Replace patterns, the GPT-2 byte-level
// pattern) on PCRE2, Unicode-aware (PCRE2_UTF | PCRE2_UCP) and JIT-compiled. The compiled code
// is shared; match data is per thread, so one Regex serves concurrent encodes.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace olm::tokenizer {

class Regex {
 public:
  // `pattern` in Oniguruma's syntax, as tokenizer.json holds it (translated where PCRE2 reads
  // the same text differently). Throws Error(kInvalidConfig) with PCRE2's message and offset,
  // prefixed by `where`.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The matches in `s` (valid UTF-8) as [start, end) byte ranges, left to right and
  // non-overlapping, as the onig crate's find_iter yields them: an empty match right where the
  // previous match ended is skipped and the search resumes one character later.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

  // A pattern that matches `literal` exactly.
  static std::string escape(std::string_view literal);

 private:
  void* code_ = nullptr;  // pcre2_code_8
};

}  // namespace olm::tokenizer
