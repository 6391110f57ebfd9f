// Properties every accepted tokenizer must have, whichever file format it came from: ids in
// [0, vocab_size()), decode gives valid UTF-8, lookups agree with each other, and a tokenizer
// that calls itself lossless gives back every text it encoded.
#pragma once
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "core/io/json.h"
#include "core/tokenizer/tokenizer.h"
#include "fuzz/fuzz_util.h"

namespace olm::fuzz {

inline void check_tokenizer(const olm::tokenizer::Tokenizer& tok, const uint8_t* data, size_t size) {
  std::vector<std::string> texts = {"", "Hello world", "  a  b\tc\n\n123 4567 ", "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5",
                                    "<s>x</s>[CLS]"};
  // The input's own first bytes, when they are text: pieces of the vocabulary it defines.
  std::string own(reinterpret_cast<const char*>(data), std::min<size_t>(size, 96));
  if (olm::io::valid_utf8(own)) texts.push_back(own);
  const int64_t vocab = tok.vocab_size();
  OLM_FUZZ_CHECK(vocab >= 0, "a negative vocabulary size");
  for (const auto& text : texts) {
    for (bool special : {false, true}) {
      std::vector<int32_t> ids;
      try {
        ids = tok.encode(text, special);
      } catch (const olm::Error&) {
        continue;  // a text the vocabulary cannot express (no unknown token), refused cleanly
      }
      for (int32_t id : ids) OLM_FUZZ_CHECK(id >= 0 && id < vocab, "an id outside the vocabulary: " + std::to_string(id));
      const std::string decoded = tok.decode(ids.data(), ids.size(), false);
      OLM_FUZZ_CHECK(olm::io::valid_utf8(decoded), "decode gave invalid UTF-8");
      (void)tok.decode(ids.data(), ids.size(), true);
      if (tok.lossless() && !special)
        OLM_FUZZ_CHECK(decoded == text, "a lossless tokenizer changed \"" + text + "\" into \"" + decoded + "\"");
      for (int32_t id : ids) {
        const auto token = tok.id_to_token(id);
        OLM_FUZZ_CHECK(token.has_value(), "an encoded id has no token");
      }
    }
  }
}

// One fuzz input through a loader: rejections must be olm::Error, an accepted tokenizer must
// pass check_tokenizer.
template <class Load>
int fuzz_tokenizer_loader(const Load& load, const uint8_t* data, size_t size) {
  std::shared_ptr<const olm::tokenizer::Tokenizer> tok;
  try {
    tok = load();
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  check_tokenizer(*tok, data, size);
  return 0;
}

}  // namespace olm::fuzz
