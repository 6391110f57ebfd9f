// The Unigram model as `tokenizers` runs it (encode_optimized, after SentencePiece): the
// segmentation of highest total score by Viterbi over byte positions, every vocabulary token
// a candidate where it occurs, a character no token starts with scored as unknown (the lowest
// score minus 10); consecutive unknowns fuse into one; byte fallback spells an unknown piece
// as <0xNN> tokens where they all exist.
#include <cstdio>
#include <limits>

#include "core/tokenizer/components.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

namespace {

constexpr double kUnknownPenalty = 10.0;

class UnigramModel : public Model {
 public:
  explicit UnigramModel(const JsonNode& node) {
    const JsonNode list = node.at("vocab");
    const size_t n = list.size();
    vocab_.reserve(n, n);
    scores_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const JsonNode entry = list[i];
      if (entry.json().kind != io::Json::kArray || entry.size() != 2) entry.fail(ErrorCode::kParse, "expected [token, score]");
      const std::string& token = entry[0].string();
      const io::Json& score = entry.json().array[1];
      if (score.kind != io::Json::kInt && score.kind != io::Json::kOther) entry[1].fail(ErrorCode::kParse, "expected a number");
      scores_[i] = score.kind == io::Json::kInt ? static_cast<double>(score.integer) : std::strtod(score.number.c_str(), nullptr);
      if (vocab_.find(token)) entry[0].fail(ErrorCode::kInvalidConfig, io::quote_json(token) + " appears twice");
      vocab_.insert(token, static_cast<int32_t>(i));
      max_token_bytes_ = std::max(max_token_bytes_, token.size());
      min_score_ = std::min(min_score_, scores_[i]);
    }
    if (auto unk = node.find_value("unk_id")) {
      unk_id_ = static_cast<int32_t>(unk->integer(0, INT32_MAX - 1));
      if (static_cast<size_t>(*unk_id_) >= n) unk->fail(ErrorCode::kInvalidConfig, "unk_id is not in the vocabulary");
    }
    byte_fallback_ = node.bool_or("byte_fallback", false);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      byte_ids_[b] = vocab_.find(name).value_or(-1);
    }
  }

  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override {
    struct Node {
      int32_t id = -1;
      double score = 0;
      int64_t starts_at = -1;  // -1: not reached
    };
    const size_t size = word.size();
    thread_local std::vector<Node> best;
    best.assign(size + 1, Node{});
    const double unknown_score = min_score_ - kUnknownPenalty;
    for (size_t start = 0; start < size;) {
      const double here = best[start].score;
      const size_t char_len = utf8_length(static_cast<unsigned char>(word[start]));
      bool has_single = false;
      const size_t longest = std::min(max_token_bytes_, size - start);
      for (size_t len = 1; len <= longest; ++len) {
        auto id = vocab_.find(std::string_view(word).substr(start, len));
        if (!id) continue;
        Node& target = best[start + len];
        const double candidate = here + scores_[*id];
        if (target.starts_at < 0 || candidate > target.score) target = Node{*id, candidate, static_cast<int64_t>(start)};
        has_single = has_single || len == char_len;
      }
      if (!has_single) {
        if (!unk_id_) fail(ErrorCode::kInvalidArgument, "encode: a character is not in the Unigram vocabulary, which has no unk_id");
        Node& target = best[start + char_len];
        const double candidate = here + unknown_score;
        if (target.starts_at < 0 || candidate > target.score)
          target = Node{*unk_id_, candidate, static_cast<int64_t>(start)};
      }
      start += char_len;
    }
    // Back from the end; runs of unknowns become one piece.
    thread_local std::vector<std::pair<size_t, size_t>> pieces;  // reversed
    pieces.clear();
    size_t unknown_end = 0;
    bool in_unknown = false;
    for (size_t end = size; end > 0;) {
      const Node& node = best[end];
      const size_t start = static_cast<size_t>(node.starts_at);
      if (unk_id_ && node.id == *unk_id_) {
        if (!in_unknown) unknown_end = end, in_unknown = true;
      } else {
        if (in_unknown) pieces.emplace_back(end, unknown_end), in_unknown = false;
        pieces.emplace_back(start, end);
      }
      end = start;
    }
    if (in_unknown) pieces.emplace_back(0, unknown_end);
    for (size_t k = pieces.size(); k-- > 0;) {
      const std::string_view piece = std::string_view(word).substr(pieces[k].first, pieces[k].second - pieces[k].first);
      if (auto id = vocab_.find(piece)) {
        ids.push_back(*id);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (char b : piece) all = all && byte_ids_[static_cast<unsigned char>(b)] >= 0;
        if (all) {
          for (char b : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(b)]);
          continue;
        }
      }
      if (!unk_id_) fail(ErrorCode::kInvalidArgument, "encode: a piece is not in the Unigram vocabulary, which has no unk_id");
      ids.push_back(*unk_id_);
    }
  }
  const Vocab& vocab() const override { return vocab_; }

 private:
  Vocab vocab_;
  std::vector<double> scores_;
  double min_score_ = std::numeric_limits<double>::infinity();
  size_t max_token_bytes_ = 0;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  int32_t byte_ids_[256];
};

}  // namespace

std::unique_ptr<Model> make_unigram(const JsonNode& node) { return std::make_unique<UnigramModel>(node); }

}  // namespace olm::tokenizer
