#include "core/tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace olm::tokenizer {
namespace {

// The few ModelProto fields libsentencepiece's API does not expose (piece types, the normalizer
// options, byte_fallback) are read from its serialized proto with this reader of protobuf's wire
// format: Debian ships the library without the protobuf headers that model_proto() needs.
// Field numbers are sentencepiece_model.proto's.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}
  bool done() const { return p_ >= end_; }
  // The next field: its number and wire type; for length-delimited fields `payload` holds the bytes,
  // for varints `value` the number. Returns false on malformed input.
  bool next(uint32_t* field, uint32_t* wire_type, uint64_t* value, std::string_view* payload) {
    uint64_t key = 0;
    if (!varint(&key)) return false;
    *field = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<uint32_t>(key & 7);
    switch (*wire_type) {
      case 0: return varint(value);
      case 1: return skip(8);
      case 5: return skip(4);
      case 2: {
        uint64_t len = 0;
        if (!varint(&len) || len > static_cast<uint64_t>(end_ - p_)) return false;
        *payload = std::string_view(p_, static_cast<size_t>(len));
        p_ += len;
        return true;
      }
      default: return false;
    }
  }

 private:
  bool varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const auto byte = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  bool skip(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }
  const char* p_;
  const char* end_;
};

struct ModelFacts {
  std::vector<AddedToken> added_tokens;
  bool byte_fallback = false;
  bool charsmap_empty = true;        // normalizer_spec.precompiled_charsmap
  bool remove_extra_whitespaces = true;  // normalizer_spec's default
  bool denormalizer_charsmap_empty = true;
};

// SentencePiece.Type values.
constexpr uint64_t kUnknown = 2, kControl = 3, kUserDefined = 4;

bool charsmap_empty_and_whitespace(std::string_view spec, bool* charsmap_empty, bool* remove_extra_whitespaces) {
  WireReader r(spec);
  while (!r.done()) {
    uint32_t field = 0, type = 0;
    uint64_t value = 0;
    std::string_view payload;
    if (!r.next(&field, &type, &value, &payload)) return false;
    if (field == 2 && type == 2) *charsmap_empty = payload.empty();
    if (field == 4 && type == 0 && remove_extra_whitespaces) *remove_extra_whitespaces = value != 0;
  }
  return true;
}

ModelFacts read_model_facts(std::string_view proto, const std::string& path) {
  ModelFacts facts;
  const auto malformed = [&](const std::string& what) {
    fail(ErrorCode::kParse, "SentencePiece model '" + path + "': malformed " + what);
  };
  WireReader model(proto);
  int32_t index = 0;
  while (!model.done()) {
    uint32_t field = 0, type = 0;
    uint64_t value = 0;
    std::string_view payload;
    if (!model.next(&field, &type, &value, &payload)) malformed("ModelProto");
    if (field == 1 && type == 2) {  // pieces
      WireReader piece(payload);
      std::string text;
      uint64_t piece_type = 1;  // NORMAL
      while (!piece.done()) {
        uint32_t f = 0, t = 0;
        uint64_t v = 0;
        std::string_view p;
        if (!piece.next(&f, &t, &v, &p)) malformed("pieces[" + std::to_string(index) + "]");
        if (f == 1 && t == 2) text.assign(p);
        if (f == 3 && t == 0) piece_type = v;
      }
      // libsentencepiece's trie (darts-clone) throws on an empty key instead of failing its status.
      if (text.empty()) malformed("pieces[" + std::to_string(index) + "]: an empty piece");
      if (piece_type == kUnknown || piece_type == kControl || piece_type == kUserDefined)
        facts.added_tokens.push_back({text, index, piece_type != kUserDefined});
      ++index;
    } else if (field == 2 && type == 2) {  // trainer_spec
      WireReader spec(payload);
      while (!spec.done()) {
        uint32_t f = 0, t = 0;
        uint64_t v = 0;
        std::string_view p;
        if (!spec.next(&f, &t, &v, &p)) malformed("trainer_spec");
        if (f == 35 && t == 0) facts.byte_fallback = v != 0;
      }
    } else if (field == 3 && type == 2) {  // normalizer_spec
      if (!charsmap_empty_and_whitespace(payload, &facts.charsmap_empty, &facts.remove_extra_whitespaces))
        malformed("normalizer_spec");
    } else if (field == 5 && type == 2) {  // denormalizer_spec
      bool unused = false;
      if (!charsmap_empty_and_whitespace(payload, &facts.denormalizer_charsmap_empty, &unused))
        malformed("denormalizer_spec");
    }
  }
  return facts;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), ErrorCode::kIo, "cannot read SentencePiece model '" + path + "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  require(!in.bad(), ErrorCode::kIo, "cannot read SentencePiece model '" + path + "'");
  const std::string proto = bytes.str();
  require(!proto.empty(), ErrorCode::kParse, "SentencePiece model '" + path + "' is empty");
  const ModelFacts facts = read_model_facts(proto, path);
  sentencepiece::util::Status status;
  try {
    status = processor_->LoadFromSerializedProto(proto);
  } catch (const std::exception& e) {  // the library throws from some of its checks
    fail(ErrorCode::kParse, "SentencePiece model '" + path + "' could not be loaded: " + e.what());
  }
  require(status.ok(), ErrorCode::kParse,
          "SentencePiece model '" + path + "' could not be loaded: " + status.ToString());
  added_tokens_ = facts.added_tokens;
  lossless_ = facts.byte_fallback && facts.charsmap_empty && !facts.remove_extra_whitespaces &&
              facts.denormalizer_charsmap_empty;
  SpecialIds ids;
  const auto role = [](int id) { return id >= 0 ? std::optional<int32_t>(id) : std::nullopt; };
  ids.bos = role(processor_->bos_id());
  ids.eos = role(processor_->eos_id());
  ids.pad = role(processor_->pad_id());
  ids.unk = role(processor_->unk_id());
  set_special_ids(ids);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  require(status.ok(), ErrorCode::kInternal,
          "SentencePiece model '" + path_ + "': encode failed: " + status.ToString());
  std::vector<int32_t> out;
  if (add_special_tokens && single_template_) {
    const auto& [before, after] = *single_template_;
    out.reserve(before.size() + ids.size() + after.size());
    out.insert(out.end(), before.begin(), before.end());
    out.insert(out.end(), ids.begin(), ids.end());
    out.insert(out.end(), after.begin(), after.end());
    return out;
  }
  const auto bos = special_ids().bos;
  out.reserve(ids.size() + (add_special_tokens && bos ? 1 : 0));
  if (add_special_tokens && bos) out.push_back(*bos);
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

void SentencePieceTokenizer::set_single_template(std::vector<int32_t> before, std::vector<int32_t> after) {
  single_template_.emplace(std::move(before), std::move(after));
}

std::string SentencePieceTokenizer::decode(const int32_t* ids, size_t count, bool skip_special_tokens) const {
  const int64_t size = vocab_size();
  std::vector<int> pieces(count);
  for (size_t i = 0; i < count; ++i) {
    require(ids[i] >= 0 && ids[i] < size, ErrorCode::kInvalidArgument,
            "ids[" + std::to_string(i) + "]: " + std::to_string(ids[i]) + " is outside the vocabulary [0, " +
                std::to_string(size) + ")");
    pieces[i] = ids[i];
  }
  const auto decoded = processor_->DecodeIdsAsImmutableProto(pieces);
  const std::string& text = decoded.text();
  if (skip_special_tokens) return text;
  // Control pieces decode to no text; put their piece text back where they stand.
  std::string out;
  size_t cursor = 0;
  for (const auto& piece : decoded.pieces()) {
    if (!processor_->IsControl(static_cast<int>(piece.id()))) continue;
    const size_t at = std::min<size_t>(piece.begin(), text.size());
    out.append(text, cursor, at - std::min(cursor, at));
    cursor = std::max(cursor, at);
    out += piece.piece();
  }
  out.append(text, std::min(cursor, text.size()), std::string::npos);
  return out;
}

std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  const int id = processor_->PieceToId(token);
  // PieceToId answers the unknown id for a piece it does not know.
  if (id < 0 || processor_->IdToPiece(id) != token) return std::nullopt;
  return id;
}

std::optional<std::string> SentencePieceTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::nullopt;
  return processor_->IdToPiece(id);
}

int64_t SentencePieceTokenizer::vocab_size() const { return processor_->GetPieceSize(); }

std::vector<AddedToken> SentencePieceTokenizer::added_tokens() const { return added_tokens_; }

std::shared_ptr<const Tokenizer> load_sentencepiece(const std::string& path) {
  return std::make_shared<SentencePieceTokenizer>(path);
}

}  // namespace olm::tokenizer
