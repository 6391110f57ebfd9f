#include "core/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <unistd.h>

#include <cmath>

#include "core/error.h"

namespace olm {

int64_t sample_token(const at::Tensor& logits_in, const GenerateOptions& options, at::Generator& generator) {
  auto logits = logits_in.to(at::kCPU, at::kDouble);
  if (options.temperature == 0.0) return logits.argmax().item<int64_t>();
  logits = logits / options.temperature;
  if (options.top_k > 0 && options.top_k < logits.size(0)) {
    auto kth = std::get<0>(logits.topk(options.top_k)).min();
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  auto probs = at::softmax(logits, 0);
  if (options.top_p < 1.0) {
    // Keep the smallest set of most likely tokens whose mass reaches top_p.
    auto [sorted, order] = probs.sort(0, /*descending=*/true);
    auto before = sorted.cumsum(0) - sorted;  // mass strictly above each token
    auto drop = before >= options.top_p;
    sorted = sorted.masked_fill(drop, 0.0);
    probs = at::zeros_like(probs).scatter(0, order, sorted);
    probs = probs / probs.sum();
  }
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate(Model& model, const at::Tensor& prompt_in, const GenerateOptions& options) {
  require(prompt_in.defined(), ErrorCode::kInvalidArgument, "prompt: NULL");
  model.require_materialized("generate");
  at::Tensor prompt = prompt_in;
  if (prompt.dim() == 2) {
    require(prompt.size(0) == 1, ErrorCode::kInvalidArgument, "prompt: batch size must be 1");
    prompt = prompt.squeeze(0);
  }
  require(prompt.dim() == 1 && prompt.size(0) > 0, ErrorCode::kInvalidArgument,
          "prompt: must hold at least one token id (shape (T,) or (1, T))");
  require(options.max_new_tokens >= 0 && options.max_new_tokens <= (1 << 24), ErrorCode::kInvalidArgument,
          "max_new_tokens must be in [0, 2^24]");
  require(std::isfinite(options.temperature) && options.temperature >= 0, ErrorCode::kInvalidArgument,
          "temperature must be >= 0");
  require(options.top_k >= 0, ErrorCode::kInvalidArgument, "top_k must be >= 0");
  require(options.top_p > 0 && options.top_p <= 1, ErrorCode::kInvalidArgument, "top_p must be in (0, 1]");
  const ModelSpec& spec = model.config().spec();
  const int64_t vocab = spec.vocab_size;
  for (int64_t t : options.stop_tokens)
    require(t >= 0 && t < vocab, ErrorCode::kInvalidArgument,
            "stop_tokens: " + std::to_string(t) + " is outside the vocabulary");

  // The model's own checks (dtype, range), without running the prompt through it twice.
  auto ids = model.checked_tokens(prompt.unsqueeze(0), "prompt", std::nullopt);

  c10::InferenceMode guard;
  at::Generator generator = at::detail::createCPUGenerator(options.seed);
  auto& module = model.module();
  std::vector<int64_t> out;
  if (options.max_new_tokens == 0) return out;

  std::vector<nn::KVCache> caches;
  at::Tensor logits;
  if (options.use_kv_cache) {
    // Refuse a cache that could never fit rather than let the system run out of memory.
    // GatedDeltaNet blocks keep a fixed-size state instead of keys and values per position.
    long double cache_bytes = 0;
    const long double element = c10::elementSize(module.embeddings().scalar_type());
    for (const auto& block : spec.blocks) {
      if (const auto& g = block.gated_delta_net) {
        const long double state_element = element == 8 ? 8 : 4;  // float32 state but for float64 models
        cache_bytes += state_element * g->n_v_heads * g->head_dim * g->head_v_dim +
                       element * (g->conv_size - 1) * (2 * g->key_dim() + g->value_dim());
        continue;
      }
      cache_bytes += 2.0L * static_cast<long double>(ids.size(1) + options.max_new_tokens) *
                     block.attention.n_kv_heads * block.attention.head_dim * element;
    }
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    const long double memory = pages > 0 && page > 0 ? static_cast<long double>(pages) * page : 0;
    require(memory == 0 || cache_bytes < memory, ErrorCode::kOutOfMemory,
            "max_new_tokens: a KV cache for " + std::to_string(ids.size(1) + options.max_new_tokens) +
                " positions needs " + std::to_string(static_cast<uint64_t>(cache_bytes / (1 << 20))) +
                " MiB, more than this machine's memory");
    caches = module.make_kv_caches(1, ids.size(1) + options.max_new_tokens);
    logits = module.forward(ids, 1, &caches);
  } else {
    logits = module.forward(ids, 1);
  }
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int64_t token = sample_token(logits[0][-1], options, generator);
    out.push_back(token);
    const bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) !=
                      options.stop_tokens.end();
    if (options.on_token && !options.on_token(token)) break;
    if (stop || i + 1 == options.max_new_tokens) break;
    auto next = at::full({1, 1}, token, ids.options());
    if (options.use_kv_cache) {
      logits = module.forward(next, 1, &caches);
    } else {
      ids = at::cat({ids, next}, 1);
      logits = module.forward(ids, 1);
    }
  }
  return out;
}

}  // namespace olm
