// Hugging Face tokenizer.json documents (load_hf_tokenizer_json: JSON, components, vocabulary,
// merges, regexes compiled by PCRE2). Rejections are olm::Error; an accepted tokenizer must
// have the properties of fuzz/tokenizer_check.h.
#include "fuzz/tokenizer_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  return olm::fuzz::fuzz_tokenizer_loader(
      [&] { return olm::tokenizer::load_hf_tokenizer_json(text, "tokenizer.json"); }, data, size);
}
