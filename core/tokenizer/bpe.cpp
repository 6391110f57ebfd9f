// Byte-pair encoding as `tokenizers`' BPE model: a word starts as its characters (with the
// continuing-subword prefix and end-of-word suffix, byte fallback or the unknown token where a
// character is not in the vocabulary), then the adjacent pair of lowest merge rank is merged,
// leftmost first, until no pair has a rank. Pairs are keyed by their two ids.
#include <atomic>
#include <cstdio>
#include <queue>

#include "core/tokenizer/components.h"
#include "core/tokenizer/text.h"

namespace olm::tokenizer {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Merge {
  int32_t rank;
  int32_t new_id;
};

// Pair of ids -> merge, open addressing (the merge loop's one lookup per adjacent pair).
class MergeTable {
 public:
  void reserve(size_t n) {
    size_t capacity = 16;
    while (capacity < 2 * n) capacity <<= 1;
    keys_.assign(capacity, kEmpty);
    values_.assign(capacity, Merge{0, 0});
    mask_ = capacity - 1;
  }
  void set(uint64_t key, Merge merge) {  // a repeated pair: the last wins, as a Rust HashMap collect
    size_t i = slot(key);
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
    keys_[i] = key;
    values_[i] = merge;
  }
  const Merge* find(uint64_t key) const {
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are below 2^31: never a real key
  size_t slot(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<uint64_t> keys_;
  std::vector<Merge> values_;
  size_t mask_ = 0;
};

// Recently seen words -> ids, per thread: direct-mapped (a word's hash picks its one slot,
// a newcomer replaces the occupant), so a lookup is one probe and the memory is bounded. Slots
// carry the model's serial number, never its address (a later model may reuse that).
struct WordCache {
  struct Slot {
    uint64_t model = 0;
    size_t hash = 0;
    std::string word;
    std::vector<int32_t> ids;
  };
  static constexpr size_t kSlots = 1 << 16;
  std::vector<Slot> slots = std::vector<Slot>(kSlots);
};
constexpr size_t kCacheWordBytes = 256;  // longer words are not worth keeping
constexpr int32_t kLinearMergeSymbols = 40;  // up to this many symbols a scan beats the queue
std::atomic<uint64_t> next_model_serial{1};

class BpeModel : public Model {
 public:
  explicit BpeModel(const JsonNode& node);
  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override;
  const Vocab& vocab() const override { return vocab_; }
  bool byte_level_complete() const override;

 private:
  void merge_word(const std::string& word, std::vector<int32_t>& ids) const;
  void merge_short(std::vector<int32_t>& ids) const;

  Vocab vocab_;
  MergeTable merges_;
  std::optional<int32_t> unk_id_;
  std::string prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256];  // byte fallback: the id of "<0xNN>", -1 where absent
  uint64_t serial_ = next_model_serial++;
};

BpeModel::BpeModel(const JsonNode& node) : vocab_(read_vocab(node.at("vocab"))) {
  if (auto dropout = node.find_value("dropout"))
    dropout->fail(ErrorCode::kInvalidConfig, "BPE dropout is random at every encode; olm supports only null");
  if (auto unk = node.find_value("unk_token")) {
    unk_id_ = vocab_.find(unk->string());
    if (!unk_id_) unk->fail(ErrorCode::kInvalidConfig, io::quote_json(unk->string()) + " is not in the vocabulary");
  }
  prefix_ = node.string_or("continuing_subword_prefix", "");
  suffix_ = node.string_or("end_of_word_suffix", "");
  fuse_unk_ = node.bool_or("fuse_unk", false);
  byte_fallback_ = node.bool_or("byte_fallback", false);
  ignore_merges_ = node.bool_or("ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto id = vocab_.find(name);
    byte_ids_[b] = id ? *id : -1;
  }

  const JsonNode merges = node.at("merges");
  const size_t count = merges.size();
  merges_.reserve(count);
  int32_t rank = 0;
  std::string left, right, joined;
  for (size_t i = 0; i < count; ++i) {
    const io::Json& merge = merges.json().array[i];
    auto bad = [&](ErrorCode code, const std::string& what) { merges[i].fail(code, what); };
    if (merge.kind == io::Json::kString) {
      const std::string& line = merge.string;
      if (line.rfind("#version", 0) == 0) continue;  // merges.txt's header line, skipped as tokenizers does
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        bad(ErrorCode::kParse, "expected \"left right\" (two tokens, one space), got " + io::quote_json(line));
      left.assign(line, 0, space);
      right.assign(line, space + 1, std::string::npos);
    } else {
      if (merge.kind != io::Json::kArray || merge.array.size() != 2 || merge.array[0].kind != io::Json::kString ||
          merge.array[1].kind != io::Json::kString)
        bad(ErrorCode::kParse, "expected \"left right\" or [\"left\", \"right\"]");
      left = merge.array[0].string;
      right = merge.array[1].string;
    }
    auto find = [&](const std::string& token) {
      auto id = vocab_.find(token);
      if (!id) bad(ErrorCode::kInvalidConfig, io::quote_json(token) + " is not in the vocabulary");
      return *id;
    };
    const int32_t left_id = find(left), right_id = find(right);
    if (right.size() < prefix_.size())
      bad(ErrorCode::kInvalidConfig, io::quote_json(right) + " is shorter than the continuing_subword_prefix");
    joined.assign(left).append(right, prefix_.size(), std::string::npos);
    merges_.set(pair_key(left_id, right_id), Merge{rank, find(joined)});
    ++rank;
  }
}

bool BpeModel::byte_level_complete() const {
  if (!prefix_.empty() || !suffix_.empty()) return false;
  std::string token;
  for (int b = 0; b < 256; ++b) {
    token.clear();
    append_utf8(token, byte_to_char(static_cast<uint8_t>(b)));
    if (!vocab_.find(token)) return false;
  }
  return true;
}

void BpeModel::tokenize(const std::string& word, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    if (auto id = vocab_.find(word)) {
      ids.push_back(*id);
      return;
    }
  }
  if (word.size() > kCacheWordBytes) {
    merge_word(word, ids);
    return;
  }
  thread_local WordCache cache;
  const size_t hash = std::hash<std::string_view>{}(word);
  WordCache::Slot& slot = cache.slots[hash & (WordCache::kSlots - 1)];
  if (slot.model == serial_ && slot.hash == hash && slot.word == word) {
    ids.insert(ids.end(), slot.ids.begin(), slot.ids.end());
    return;
  }
  const size_t first = ids.size();
  merge_word(word, ids);
  slot.model = serial_;
  slot.hash = hash;
  slot.word = word;
  slot.ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end());
}

struct Symbol {
  int32_t id;
  int32_t prev, next;
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator<(const Candidate& other) const {  // a max-heap of this pops the lowest rank, then the leftmost
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

std::vector<Symbol>& thread_symbols() {
  thread_local std::vector<Symbol> symbols;
  return symbols;
}

// Short words: the lowest-ranked adjacent pair by a scan, leftmost on ties. The same order as
// the queue's: a stale queue entry never wins, since a position's pair only ever grows.
void BpeModel::merge_short(std::vector<int32_t>& ids) const {
  const std::vector<Symbol>& symbols = thread_symbols();
  thread_local std::vector<int32_t> word;
  thread_local std::vector<const Merge*> pairs;
  word.clear();
  pairs.clear();
  for (const Symbol& s : symbols) word.push_back(s.id);
  for (size_t k = 0; k + 1 < word.size(); ++k) pairs.push_back(merges_.find(pair_key(word[k], word[k + 1])));
  for (;;) {
    size_t best = pairs.size();
    for (size_t k = 0; k < pairs.size(); ++k)
      if (pairs[k] && (best == pairs.size() || pairs[k]->rank < pairs[best]->rank)) best = k;
    if (best == pairs.size()) break;
    word[best] = pairs[best]->new_id;
    word.erase(word.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(best));
    if (best > 0) pairs[best - 1] = merges_.find(pair_key(word[best - 1], word[best]));
    if (best + 1 < word.size()) pairs[best] = merges_.find(pair_key(word[best], word[best + 1]));
  }
  ids.insert(ids.end(), word.begin(), word.end());
}

void BpeModel::merge_word(const std::string& word, std::vector<int32_t>& ids) const {
  std::vector<Symbol>& symbols = thread_symbols();
  thread_local std::string piece;
  symbols.clear();
  auto add = [&](int32_t id) { symbols.push_back(Symbol{id, 0, 0, true}); };
  std::optional<int32_t> pending_unk;  // with fuse_unk, consecutive unknowns become one
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    i += utf8_length(static_cast<unsigned char>(word[i]));
    piece.clear();
    if (start > 0) piece += prefix_;
    piece.append(word, start, i - start);
    if (i == word.size()) piece += suffix_;
    if (auto id = vocab_.find(piece)) {
      if (pending_unk) add(*pending_unk), pending_unk.reset();
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char b : piece) all = all && byte_ids_[static_cast<unsigned char>(b)] >= 0;
      if (all) {
        for (char b : piece) add(byte_ids_[static_cast<unsigned char>(b)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) add(*pending_unk);
      pending_unk = *unk_id_;
    }
    // Without an unknown token the character is dropped, as tokenizers does.
  }
  if (pending_unk) add(*pending_unk);

  const int32_t n = static_cast<int32_t>(symbols.size());
  if (n <= kLinearMergeSymbols) {
    merge_short(ids);
    return;
  }
  for (int32_t k = 0; k < n; ++k) symbols[k].prev = k - 1, symbols[k].next = k + 1 < n ? k + 1 : -1;
  thread_local std::vector<Candidate> heap_storage;
  heap_storage.clear();
  std::priority_queue<Candidate, std::vector<Candidate>> queue(std::less<Candidate>(), std::move(heap_storage));
  for (int32_t k = 0; k + 1 < n; ++k) {
    if (const Merge* m = merges_.find(pair_key(symbols[k].id, symbols[k + 1].id)))
      queue.push(Candidate{m->rank, k, m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* current = merges_.find(pair_key(left.id, right.id));
    if (!current || current->new_id != top.new_id) continue;  // stale
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* m = merges_.find(pair_key(symbols[left.prev].id, left.id)))
        queue.push(Candidate{m->rank, left.prev, m->new_id});
    }
    if (left.next >= 0) {
      if (const Merge* m = merges_.find(pair_key(left.id, symbols[left.next].id)))
        queue.push(Candidate{m->rank, top.pos, m->new_id});
    }
  }
  for (int32_t k = 0; k < n; k = symbols[k].next) {
    ids.push_back(symbols[k].id);
    if (symbols[k].next < 0) break;
  }
}

}  // namespace

std::unique_ptr<Model> make_bpe(const JsonNode& node) { return std::make_unique<BpeModel>(node); }

}  // namespace olm::tokenizer
