// Autoregressive sampling with the KV cache: greedy, temperature, top-k and top-p (nucleus),
// seeded, with stop tokens, a token budget and a per-token callback for streaming.
#pragma once
#include <functional>

#include "core/model.h"

namespace olm {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  std::vector<int64_t> stop_tokens;  // generation ends after emitting one of these
  bool use_kv_cache = true;          // false re-runs the whole sequence per token (reference)
  // Called with each new token; returning false stops generation after that token.
  std::function<bool(int64_t token)> on_token;
};

// prompt: 1-D token ids (or (1, T)). Returns the generated ids (without the prompt).
std::vector<int64_t> generate(Model& model, const at::Tensor& prompt, const GenerateOptions& options);

// Samples one token from a (vocab,) logits row under the options (exposed for tests).
int64_t sample_token(const at::Tensor& logits, const GenerateOptions& options, at::Generator& generator);

}  // namespace olm
