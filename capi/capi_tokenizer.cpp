#include <cstddef>

#include "capi/capi.h"
#include "core/io/json.h"
#include "core/tokenizer/parallel_encode.h"
#include "core/tokenizer/tokenizer.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::require_arg;

struct olm_tokenizer {
  std::shared_ptr<const olm::tokenizer::Tokenizer> tokenizer;
};

namespace olm::capi {

template <>
struct StructFields<olm_special_ids> {
  static constexpr const char* name = "olm_special_ids";
  static constexpr FieldSpan fields[] = {
      {offsetof(olm_special_ids, bos_id), sizeof(int32_t)},
      {offsetof(olm_special_ids, eos_id), sizeof(int32_t)},
      {offsetof(olm_special_ids, pad_id), sizeof(int32_t)},
      {offsetof(olm_special_ids, unk_id), sizeof(int32_t)},
  };
};

}  // namespace olm::capi

namespace {

// A caller's text: (pointer, length), NULL allowed only when empty, and UTF-8. `name` is the
// argument as the message should name it ("text", "texts[3]").
std::string_view checked_text(const char* text, size_t len, const std::string& name) {
  require(text != nullptr || len == 0, ErrorCode::kInvalidArgument, name + ": NULL with a length of " +
                                                                        std::to_string(len) + " bytes");
  if (len == 0) return {};
  const std::string_view view(text, len);
  size_t bad = 0;
  const bool valid = olm::io::valid_utf8(view, &bad);  // before the message reads `bad`
  require(valid, ErrorCode::kInvalidArgument, name + ": not UTF-8 at byte offset " + std::to_string(bad));
  return view;
}

const olm::tokenizer::Tokenizer& checked(const olm_tokenizer* tokenizer) {
  require_arg(tokenizer, "tokenizer");
  return *tokenizer->tokenizer;
}

at::Tensor int32_tensor(const std::vector<int32_t>& ids) {
  auto t = at::empty({static_cast<int64_t>(ids.size())}, at::kInt);
  if (!ids.empty()) std::memcpy(t.data_ptr<int32_t>(), ids.data(), ids.size() * sizeof(int32_t));
  return t;
}

olm_buffer* text_buffer(const std::string& text) {
  return olm::capi::make_buffer(reinterpret_cast<const uint8_t*>(text.data()), text.size(), true);
}

}  // namespace

extern "C" {

olm_error* olm_tokenizer_load(const char* path, olm_tokenizer** out) {
  OLM_API_BEGIN
  require_arg(path, "path");
  require_arg(out, "out");
  *out = new olm_tokenizer{olm::tokenizer::load_tokenizer(path)};
  OLM_API_END
}

void olm_tokenizer_free(olm_tokenizer* tokenizer) { delete tokenizer; }

olm_error* olm_tokenizer_encode(const olm_tokenizer* tokenizer, const char* text, size_t len,
                                int32_t add_special_tokens, olm_tensor** out) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(out, "out");
  const auto ids = tok.encode(checked_text(text, len, "text"), add_special_tokens != 0);
  *out = new olm_tensor{int32_tensor(ids)};
  OLM_API_END
}

olm_error* olm_tokenizer_encode_into(const olm_tokenizer* tokenizer, const char* text, size_t len,
                                     int32_t add_special_tokens, int32_t* ids, size_t capacity, size_t* count) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(count, "count");
  require(ids != nullptr || capacity == 0, ErrorCode::kInvalidArgument,
          "ids: NULL with a capacity of " + std::to_string(capacity));
  const auto encoded = tok.encode(checked_text(text, len, "text"), add_special_tokens != 0);
  const bool size_query = ids == nullptr;
  require(size_query || encoded.size() <= capacity, ErrorCode::kInvalidArgument,
          "capacity: " + std::to_string(capacity) + " is too small: the text has " + std::to_string(encoded.size()) +
              " ids");
  if (!size_query && !encoded.empty()) std::memcpy(ids, encoded.data(), encoded.size() * sizeof(int32_t));
  *count = encoded.size();
  OLM_API_END
}

olm_error* olm_tokenizer_encode_batch(const olm_tokenizer* tokenizer, const char* const* texts, const size_t* lengths,
                                      size_t num_texts, int32_t add_special_tokens, olm_tensor** out_ids,
                                      olm_tensor** out_offsets) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(out_ids, "out_ids");
  require_arg(out_offsets, "out_offsets");
  require(num_texts == 0 || texts != nullptr, ErrorCode::kInvalidArgument, "texts: NULL with num_texts > 0");
  require(num_texts == 0 || lengths != nullptr, ErrorCode::kInvalidArgument, "lengths: NULL with num_texts > 0");
  std::vector<std::string_view> views(num_texts);
  for (size_t i = 0; i < num_texts; ++i)
    views[i] = checked_text(texts[i], lengths[i], "texts[" + std::to_string(i) + "]");
  const auto encoded = olm::tokenizer::encode_parallel(tok, views, add_special_tokens != 0);
  auto offsets = at::empty({static_cast<int64_t>(num_texts) + 1}, at::kLong);
  auto* o = offsets.data_ptr<int64_t>();
  o[0] = 0;
  for (size_t i = 0; i < num_texts; ++i) o[i + 1] = o[i] + static_cast<int64_t>(encoded[i].size());
  auto ids = at::empty({o[num_texts]}, at::kInt);
  auto* dst = ids.data_ptr<int32_t>();
  for (size_t i = 0; i < num_texts; ++i)
    if (!encoded[i].empty()) std::memcpy(dst + o[i], encoded[i].data(), encoded[i].size() * sizeof(int32_t));
  auto ids_handle = std::make_unique<olm_tensor>(olm_tensor{std::move(ids)});
  *out_offsets = new olm_tensor{std::move(offsets)};
  *out_ids = ids_handle.release();
  OLM_API_END
}

olm_error* olm_tokenizer_decode(const olm_tokenizer* tokenizer, const int32_t* ids, size_t count,
                                int32_t skip_special_tokens, olm_buffer** out) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(out, "out");
  require(ids != nullptr || count == 0, ErrorCode::kInvalidArgument, "ids: NULL with a count of " + std::to_string(count));
  const std::string text = tok.decode(ids, count, skip_special_tokens != 0);
  *out = text_buffer(text);
  OLM_API_END
}

olm_error* olm_tokenizer_token_to_id(const olm_tokenizer* tokenizer, const char* token, size_t len, int32_t* out) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(out, "out");
  require(token != nullptr || len == 0, ErrorCode::kInvalidArgument,
          "token: NULL with a length of " + std::to_string(len) + " bytes");
  const auto id = tok.token_to_id(len == 0 ? std::string_view() : std::string_view(token, len));
  *out = id.value_or(-1);
  OLM_API_END
}

olm_error* olm_tokenizer_id_to_token(const olm_tokenizer* tokenizer, int32_t id, olm_buffer** out) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(out, "out");
  const auto token = tok.id_to_token(id);
  require(token.has_value(), ErrorCode::kInvalidArgument,
          "id: " + std::to_string(id) + " is not a token of the vocabulary [0, " + std::to_string(tok.vocab_size()) +
              ")");
  *out = text_buffer(*token);
  OLM_API_END
}

olm_error* olm_tokenizer_vocab_size(const olm_tokenizer* tokenizer, int64_t* out) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  require_arg(out, "out");
  *out = tok.vocab_size();
  OLM_API_END
}

olm_error* olm_tokenizer_special_ids(const olm_tokenizer* tokenizer, olm_special_ids* out) {
  OLM_API_BEGIN
  const auto& tok = checked(tokenizer);
  olm::capi::require_result(out, "out");
  const auto& s = tok.special_ids();
  olm_special_ids result{};
  result.struct_size = sizeof(olm_special_ids);
  result.bos_id = s.bos.value_or(-1);
  result.eos_id = s.eos.value_or(-1);
  result.pad_id = s.pad.value_or(-1);
  result.unk_id = s.unk.value_or(-1);
  olm::capi::write_result(out, result);
  OLM_API_END
}

}  // extern "C"
