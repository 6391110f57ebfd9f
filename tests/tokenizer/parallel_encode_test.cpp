// encode_parallel: results in input order, the work spread over ATen's thread count, the first
// failure rethrown.
#include <ATen/Parallel.h>

#include <mutex>
#include <set>
#include <thread>

#include "core/tokenizer/parallel_encode.h"
#include "test_util.h"

namespace olm::tokenizer {
namespace {

// Ids are the text's bytes; "fail" throws. Records which threads encoded.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      threads_.insert(std::this_thread::get_id());
    }
    if (text == "fail") fail(ErrorCode::kInvalidArgument, "text 'fail'");
    // Long enough per text that every thread gets some.
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    std::vector<int32_t> ids(text.begin(), text.end());
    if (add_special_tokens) ids.insert(ids.begin(), 0);
    return ids;
  }
  std::string decode(const int32_t*, size_t, bool) const override { return {}; }
  std::optional<int32_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::optional<std::string> id_to_token(int32_t) const override { return std::nullopt; }
  int64_t vocab_size() const override { return 256; }
  std::vector<AddedToken> added_tokens() const override { return {}; }
  bool lossless() const override { return true; }
  void set_single_template(std::vector<int32_t>, std::vector<int32_t>) override {}
  size_t thread_count() const { return threads_.size(); }

 private:
  mutable std::mutex mutex_;
  mutable std::set<std::thread::id> threads_;
};

TEST(TokenizerParallelEncode, InOrderOnEveryThreadAndRethrows) {
  const int saved = at::get_num_threads();
  at::set_num_threads(3);
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) texts.push_back(std::string(static_cast<size_t>(i % 17), 'a' + i % 26) + std::to_string(i));
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  ByteTokenizer tok;
  const auto out = encode_parallel(tok, views, true);
  ASSERT_EQ(out.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(out[i], tok.encode(texts[i], true)) << i;
  EXPECT_EQ(tok.thread_count(), 3u);
  std::vector<std::string_view> with_failure = views;
  with_failure[150] = "fail";
  olm::testing::expect_error([&] { encode_parallel(tok, with_failure, false); }, ErrorCode::kInvalidArgument,
                             "text 'fail'");
  EXPECT_TRUE(encode_parallel(tok, {}, false).empty());
  at::set_num_threads(saved);
}

}  // namespace
}  // namespace olm::tokenizer
