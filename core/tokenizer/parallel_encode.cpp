#include "core/tokenizer/parallel_encode.h"

#include <ATen/Parallel.h>

#include <atomic>

namespace olm::tokenizer {

std::vector<std::vector<int32_t>> encode_parallel(const Tokenizer& tokenizer, const std::vector<std::string_view>& texts,
                                                  bool add_special_tokens) {
  std::vector<std::vector<int32_t>> out(texts.size());
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(texts.size()));
  if (workers <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = tokenizer.encode(texts[i], add_special_tokens);
    return out;
  }
  std::atomic<size_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (size_t i = next.fetch_add(1); i < texts.size(); i = next.fetch_add(1))
      out[i] = tokenizer.encode(texts[i], add_special_tokens);
  });
  return out;
}

}  // namespace olm::tokenizer
