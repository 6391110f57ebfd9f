#include "core/tokenizer/parallel_encode.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

namespace olm::tokenizer {

// Plain threads rather than at::parallel_for: its OpenMP region is a template compiled into the
// caller, and olm is built without -fopenmp, so it would run on one thread. The count is still
// ATen's (olm_set_num_threads, olm --threads).
std::vector<std::vector<int32_t>> encode_parallel(const Tokenizer& tokenizer, const std::vector<std::string_view>& texts,
                                                  bool add_special_tokens) {
  std::vector<std::vector<int32_t>> out(texts.size());
  const size_t workers = std::min<size_t>(static_cast<size_t>(std::max(1, at::get_num_threads())), texts.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      for (size_t i = next.fetch_add(1); i < texts.size(); i = next.fetch_add(1))
        out[i] = tokenizer.encode(texts[i], add_special_tokens);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(texts.size());  // the others stop at their next text
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers > 0 ? workers - 1 : 0);
  try {
    for (size_t t = 1; t < workers; ++t) threads.emplace_back(work);
  } catch (...) {
    // A thread that cannot start leaves its share to the others.
  }
  work();
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace olm::tokenizer
