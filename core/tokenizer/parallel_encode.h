// Many texts encoded at once on as many threads as ATen's intra-op count (at::set_num_threads), for the C API's
// batch encode and `olm tokenize`.
#pragma once
#include <string_view>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace olm::tokenizer {

// result[i] = tokenizer.encode(texts[i], add_special_tokens). Threads take texts one at a time
// (documents differ in length by orders of magnitude, so equal slices would leave threads idle).
// The first exception a thread meets is rethrown here.
std::vector<std::vector<int32_t>> encode_parallel(const Tokenizer& tokenizer, const std::vector<std::string_view>& texts,
                                                  bool add_special_tokens);

}  // namespace olm::tokenizer
