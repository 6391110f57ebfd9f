#include <algorithm>
#include <cstdio>

// The model dispatch, the vocabulary reader, and the two lookup models: WordPiece and
// WordLevel. BPE is in bpe.cpp, Unigram in unigram.cpp.
#include "core/tokenizer/components.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

void Vocab::reserve(size_t n, size_t id_limit) {
  size_t capacity = 16;
  while (capacity < 2 * n) capacity <<= 1;
  slots_.assign(capacity, -1);
  tags_.assign(capacity, 0);
  mask_ = capacity - 1;
  tokens_.assign(id_limit, std::string());
  present_.assign(id_limit, false);
  count_ = 0;
}

const std::string* Vocab::insert(const std::string& token, int32_t id) {
  if (present_[id] && tokens_[id] != token) return &tokens_[id];
  const size_t hash = std::hash<std::string_view>{}(token);
  const uint32_t tag = static_cast<uint32_t>(hash >> 32);
  size_t i = hash & mask_;
  for (; slots_[i] >= 0; i = (i + 1) & mask_) {
    if (tags_[i] == tag && tokens_[slots_[i]] == token) {
      const int32_t old = slots_[i];
      present_[old] = false;
      tokens_[old].clear();
      --count_;
      break;
    }
  }
  slots_[i] = id;
  tags_[i] = tag;
  tokens_[id] = token;
  present_[id] = true;
  ++count_;
  return nullptr;
}

Vocab read_vocab(const JsonNode& node) {
  node.expect(io::Json::kObject, "an object {token: id}");
  const auto& members = node.json().object;
  // Paths are built only for a message: a 100k vocabulary has no time for 100k of them.
  auto member_node = [&](size_t k) {
    return JsonNode(members[k].second, node.path() + "[" + io::quote_json(members[k].first) + "]", node.source());
  };
  int64_t max_id = -1;
  for (size_t k = 0; k < members.size(); ++k) {
    const io::Json& value = members[k].second;
    if (value.kind != io::Json::kInt || value.integer < 0 || value.integer >= INT32_MAX) member_node(k).integer(0, INT32_MAX - 1);
    max_id = std::max(max_id, value.integer);
  }
  // Ids index a table: one far past the token count would make a file of a few bytes claim
  // gigabytes. Real vocabularies are dense.
  const int64_t id_bound = 4 * static_cast<int64_t>(members.size()) + 1024;
  if (max_id >= id_bound)
    node.fail(ErrorCode::kInvalidConfig, "ids go up to " + std::to_string(max_id) + " for " +
                                             std::to_string(members.size()) + " tokens (olm accepts ids below " +
                                             std::to_string(id_bound) + ")");
  Vocab vocab;
  vocab.reserve(members.size(), static_cast<size_t>(max_id + 1));
  for (size_t k = 0; k < members.size(); ++k) {
    const int32_t id = static_cast<int32_t>(members[k].second.integer);
    if (const std::string* other = vocab.insert(members[k].first, id))
      member_node(k).fail(ErrorCode::kInvalidConfig, "id " + std::to_string(id) + " is given to both " +
                                                         io::quote_json(*other) + " and " + io::quote_json(members[k].first));
  }
  return vocab;
}

namespace {

int32_t require_token(const Vocab& vocab, const JsonNode& node, const std::string& token) {
  auto id = vocab.find(token);
  if (!id) node.fail(ErrorCode::kInvalidConfig, io::quote_json(token) + " is not in the vocabulary");
  return *id;
}

class WordPieceModel : public Model {
 public:
  explicit WordPieceModel(const JsonNode& node)
      : vocab_(read_vocab(node.at("vocab"))),
        prefix_(node.string_or("continuing_subword_prefix", "##")),
        max_chars_(static_cast<size_t>(node.integer_or("max_input_chars_per_word", 100, 0, INT64_MAX))) {
    const std::string unk = node.string_or("unk_token", "[UNK]");
    unk_id_ = require_token(vocab_, node.find("unk_token") ? node.at("unk_token") : node, unk);
  }

  // Greedy longest match from the left; any piece without a match makes the word unknown.
  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override {
    size_t chars = 0;
    for (char c : word) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    if (chars > max_chars_) {
      ids.push_back(unk_id_);
      return;
    }
    const size_t first = ids.size();
    std::string candidate;
    for (size_t start = 0; start < word.size();) {
      size_t end = word.size();
      std::optional<int32_t> found;
      while (start < end) {
        candidate.clear();
        if (start > 0) candidate = prefix_;
        candidate.append(word, start, end - start);
        found = vocab_.find(candidate);
        if (found) break;
        do --end;
        while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (!found) {
        ids.resize(first);
        ids.push_back(unk_id_);
        return;
      }
      ids.push_back(*found);
      start = end;
    }
  }
  const Vocab& vocab() const override { return vocab_; }

 private:
  Vocab vocab_;
  std::string prefix_;
  size_t max_chars_;
  int32_t unk_id_ = 0;
};

class WordLevelModel : public Model {
 public:
  explicit WordLevelModel(const JsonNode& node) : vocab_(read_vocab(node.at("vocab"))) {
    auto unk = node.find("unk_token");
    if (!unk) node.fail(ErrorCode::kParse, "missing member \"unk_token\"");
    unk_id_ = require_token(vocab_, *unk, unk->string());
  }
  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override {
    ids.push_back(vocab_.find(word).value_or(unk_id_));
  }
  const Vocab& vocab() const override { return vocab_; }

 private:
  Vocab vocab_;
  int32_t unk_id_ = 0;
};

}  // namespace

std::unique_ptr<Model> make_model(const JsonNode& node) {
  // Files written before models carried a "type" are recognised by their members.
  std::string type;
  if (auto member = node.find("type")) type = member->string();
  else if (node.find("merges")) type = "BPE";
  else node.fail(ErrorCode::kParse, "missing member \"type\"");
  if (type == "BPE") return make_bpe(node);
  if (type == "WordPiece") return std::make_unique<WordPieceModel>(node);
  if (type == "WordLevel") return std::make_unique<WordLevelModel>(node);
  if (type == "Unigram") return make_unigram(node);
  node.at("type").fail(ErrorCode::kInvalidConfig,
                       "model \"" + type + "\" is not supported (olm implements BPE, WordPiece, WordLevel, Unigram)");
}

}  // namespace olm::tokenizer
