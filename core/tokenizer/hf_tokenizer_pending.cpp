// Placeholder until the tokenizer.json engine (core/tokenizer/hf_tokenizer.*) is merged; this
// file is deleted then.
#include "core/error.h"
#include "core/tokenizer/tokenizer.h"

namespace olm::tokenizer {

std::shared_ptr<const Tokenizer> load_hf_tokenizer_json(std::string_view, const std::string& source) {
  fail(ErrorCode::kInvalidConfig, source + ": tokenizer.json support is not in this build");
}

}  // namespace olm::tokenizer
