// Hugging Face tokenizer.json documents (load_hf_tokenizer_json: JSON, components, vocabulary,
// merges, regexes compiled by PCRE2). Rejections are olm::Error; an accepted tokenizer must
// have the properties of fuzz/tokenizer_check.h.
#include <exception>

#include "fuzz/tokenizer_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<const olm::tokenizer::Tokenizer> tok;
  try {
    tok = olm::tokenizer::load_hf_tokenizer_json(std::string_view(reinterpret_cast<const char*>(data), size),
                                                 "tokenizer.json");
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  olm::fuzz::check_tokenizer(*tok, data, size);
  return 0;
}
