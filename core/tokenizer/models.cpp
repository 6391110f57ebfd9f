#include <algorithm>
#include <cstdio>

// The model dispatch, the vocabulary reader, and the two lookup models: WordPiece and
// WordLevel. BPE is in bpe.cpp.
#include "core/tokenizer/components.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

Vocab read_vocab(const JsonNode& node) {
  node.expect(io::Json::kObject, "an object {token: id}");
  Vocab vocab;
  const auto& members = node.json().object;
  vocab.ids.reserve(members.size());
  int64_t max_id = -1;
  for (const auto& member : members) {
    const JsonNode value(member.second, node.path() + "[" + io::quote_json(member.first) + "]", node.source());
    const int64_t id = value.integer(0, INT32_MAX - 1);
    max_id = std::max(max_id, id);
    vocab.ids[member.first] = static_cast<int32_t>(id);  // a repeated token: the last wins, as serde
  }
  vocab.tokens.resize(static_cast<size_t>(max_id + 1));
  vocab.present.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& member : members) {
    const int32_t id = vocab.ids[member.first];
    if (vocab.present[id] && vocab.tokens[id] != member.first)
      node.fail(ErrorCode::kInvalidConfig, "id " + std::to_string(id) + " is given to both " +
                                               io::quote_json(vocab.tokens[id]) + " and " + io::quote_json(member.first));
    vocab.present[id] = true;
    vocab.tokens[id] = member.first;
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
        auto it = vocab_.ids.find(candidate);
        if (it != vocab_.ids.end()) {
          found = it->second;
          break;
        }
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
    auto it = vocab_.ids.find(word);
    ids.push_back(it == vocab_.ids.end() ? unk_id_ : it->second);
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
  node.at("type").fail(ErrorCode::kInvalidConfig,
                       "model \"" + type + "\" is not supported (olm implements BPE, WordPiece, WordLevel)");
}

}  // namespace olm::tokenizer
