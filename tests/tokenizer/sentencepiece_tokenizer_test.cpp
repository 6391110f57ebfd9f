// SentencePiece models through core/tokenizer, on models spm_train (Debian's sentencepiece)
// trains here; parity with the Python package on >= 1 MB of text is the fixture test at the end
// (tests/parity/sentencepiece_parity.py writes it).
#include <sentencepiece_processor.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/io/json.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

namespace olm::tokenizer {
namespace {

using olm::testing::expect_error;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

// Varied text the models below have and have not seen: accents, CJK, emoji, whitespace runs,
// tabs, digits, code.
const std::vector<std::string>& samples() {
  static const std::vector<std::string> texts = {
      "Hello world",
      "  leading and trailing spaces  ",
      "tabs\tand\nnewlines\n\n  runs   of    spaces",
      "Caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 \xc3\x9c" "ber Stra\xc3\x9f" "e",
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87\xe7\xab\xa0",
      "emoji \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd and \xe2\x9c\xa8",
      "digits 3.14159 2026-12-03 0xDEADBEEF 1,000,000",
      "int main(void) { return printf(\"%d\\n\", x[i] << 2); }",
      "",
      "\xef\xbd\x86\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c\xef\xbd\x97\xef\xbd\x89\xef\xbd\x84\xef\xbd\x94\xef\xbd\x88",  // fullwidth
  };
  return texts;
}

// A corpus from a few fortune collections plus the samples, one sentence per line.
std::string write_corpus(const std::string& dir) {
  std::string corpus;
  for (const char* name : {"art", "computers", "science"}) corpus += read_bytes(std::string("/usr/share/games/fortunes/") + name);
  for (const auto& s : samples()) corpus += s + "\n";
  const std::string path = dir + "/corpus.txt";
  write_bytes(path, corpus);
  return path;
}

// spm_train into dir/<name>.model; `flags` picks the kind.
std::string train(const std::string& dir, const std::string& name, const std::string& flags) {
  const std::string corpus = write_corpus(dir);
  const std::string prefix = dir + "/" + name;
  const std::string cmd = "spm_train --input=" + corpus + " --model_prefix=" + prefix +
                          " --vocab_size=600 --minloglevel=2 " + flags + " >/dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return prefix + ".model";
}

// Trained once for the whole suite.
struct Models {
  std::string dir;
  std::string lossless_bpe;  // byte fallback, identity normalizer, whitespace kept
  std::string unigram;       // the defaults: nmt_nfkc, whitespace folded, no byte fallback
};

const Models& models() {
  static const Models m = [] {
    Models out;
    out.dir = olm::testing::temp_dir("spm");
    out.lossless_bpe = train(out.dir, "bpe",
                             "--model_type=bpe --byte_fallback=true --normalization_rule_name=identity "
                             "--remove_extra_whitespaces=false --pad_id=3");
    out.unigram = train(out.dir, "unigram", "--model_type=unigram");
    return out;
  }();
  return m;
}

TEST(TokenizerSentencePiece, SpecialIdsAndVocabulary) {
  const auto tok = load_sentencepiece(models().lossless_bpe);
  EXPECT_EQ(tok->vocab_size(), 600);
  const auto& ids = tok->special_ids();
  EXPECT_EQ(ids.unk, 0);
  EXPECT_EQ(ids.bos, 1);
  EXPECT_EQ(ids.eos, 2);
  EXPECT_EQ(ids.pad, 3);
  EXPECT_FALSE(load_sentencepiece(models().unigram)->special_ids().pad.has_value());
  EXPECT_EQ(tok->id_to_token(1), "<s>");
  EXPECT_EQ(tok->id_to_token(4), "<0x00>");  // byte pieces follow the specials
  EXPECT_EQ(tok->token_to_id("</s>"), 2);
  EXPECT_EQ(tok->token_to_id("<unk>"), 0);
  EXPECT_FALSE(tok->token_to_id("no such piece").has_value());
  EXPECT_FALSE(tok->id_to_token(600).has_value());
  EXPECT_FALSE(tok->id_to_token(-1).has_value());
  for (int32_t id = 0; id < 600; ++id) EXPECT_EQ(tok->token_to_id(*tok->id_to_token(id)), id) << id;
  // Control and unknown pieces are the special added tokens.
  const auto added = tok->added_tokens();
  ASSERT_EQ(added.size(), 4u);
  EXPECT_EQ(added[0].content, "<unk>");
  EXPECT_EQ(added[3].content, "<pad>");
  for (const auto& a : added) EXPECT_TRUE(a.special);
}

TEST(TokenizerSentencePiece, LosslessOnlyWithByteFallbackAndIdentityNormalizer) {
  const auto lossless = load_sentencepiece(models().lossless_bpe);
  const auto unigram = load_sentencepiece(models().unigram);
  EXPECT_TRUE(lossless->lossless());
  EXPECT_FALSE(unigram->lossless());
  for (const auto& text : samples()) {
    const auto ids = lossless->encode(text, false);
    EXPECT_EQ(lossless->decode(ids.data(), ids.size(), false), text);
  }
  // The unigram model folds whitespace runs and maps unseen characters to <unk>.
  const std::string runs = "a   b";
  const auto ids = unigram->encode(runs, false);
  EXPECT_NE(unigram->decode(ids.data(), ids.size(), true), runs);
  // A byte-fallback model that folds whitespace is not lossless either.
  const auto folding = load_sentencepiece(
      train(models().dir, "folding", "--model_type=bpe --byte_fallback=true --normalization_rule_name=identity"));
  EXPECT_FALSE(folding->lossless());
  const auto folded = folding->encode(runs, false);
  EXPECT_EQ(folding->decode(folded.data(), folded.size(), true), "a b");
}

TEST(TokenizerSentencePiece, AddSpecialTokensPrependsBos) {
  const auto tok = load_sentencepiece(models().lossless_bpe);
  const auto plain = tok->encode("Hello world", false);
  const auto with = tok->encode("Hello world", true);
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with[0], 1);
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), with.begin() + 1));
  EXPECT_EQ(tok->decode(with.data(), with.size(), true), "Hello world");
  EXPECT_EQ(tok->decode(with.data(), with.size(), false), "<s>Hello world");
  std::vector<int32_t> mid = plain;
  mid.push_back(2);
  mid.insert(mid.end(), plain.begin(), plain.end());
  EXPECT_EQ(tok->decode(mid.data(), mid.size(), false), "Hello world</s> Hello world");
  EXPECT_EQ(tok->decode(mid.data(), mid.size(), true), "Hello world Hello world");
}

TEST(TokenizerSentencePiece, DecodeRefusesIdsOutsideTheVocabulary) {
  const auto tok = load_sentencepiece(models().lossless_bpe);
  const std::vector<int32_t> ids = {5, 600};
  expect_error([&] { tok->decode(ids.data(), ids.size(), false); }, ErrorCode::kInvalidArgument,
               "ids[1]: 600 is outside the vocabulary [0, 600)");
  const std::vector<int32_t> negative = {-3};
  expect_error([&] { tok->decode(negative.data(), negative.size(), true); }, ErrorCode::kInvalidArgument, "ids[0]: -3");
  // Bytes that do not form UTF-8 decode to U+FFFD.
  const std::vector<int32_t> lone_byte = {4 + 0xC3};
  EXPECT_EQ(tok->decode(lone_byte.data(), 1, false), "\xef\xbf\xbd");
}

TEST(TokenizerSentencePiece, ConcurrentEncodesMatchOneThread) {
  const auto tok = load_sentencepiece(models().unigram);
  std::vector<std::string> lines;
  std::istringstream corpus(read_bytes(models().dir + "/corpus.txt"));
  for (std::string line; std::getline(corpus, line);) lines.push_back(line);
  ASSERT_GT(lines.size(), 5000u);
  std::vector<std::vector<int32_t>> expected;
  for (const auto& line : lines) expected.push_back(tok->encode(line, true));
  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      // Each thread walks the lines from its own starting point, so threads meet on different texts.
      for (size_t k = 0; k < lines.size(); ++k) {
        const size_t i = (k + t * lines.size() / kThreads) % lines.size();
        if (tok->encode(lines[i], true) != expected[i]) ++mismatches[t];
      }
    });
  for (auto& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST(TokenizerLoad, DirectoryFileAndTokenizerConfigRoles) {
  const std::string dir = olm::testing::temp_dir("tokdir");
  write_bytes(dir + "/tokenizer.model", read_bytes(models().lossless_bpe));
  // Without tokenizer_config.json: the model's own roles.
  auto tok = load_tokenizer(dir);
  EXPECT_EQ(tok->special_ids().bos, 1);
  EXPECT_EQ(tok->special_ids().pad, 3);
  // Strings, AddedToken objects and null (no such role).
  write_bytes(dir + "/tokenizer_config.json",
              R"({"bos_token": {"content": "</s>", "lstrip": false}, "eos_token": "<pad>", "pad_token": null,
                  "add_bos_token": true})");
  tok = load_tokenizer(dir);
  EXPECT_EQ(tok->special_ids().bos, 2);
  EXPECT_EQ(tok->special_ids().eos, 3);
  EXPECT_FALSE(tok->special_ids().pad.has_value());
  EXPECT_EQ(tok->special_ids().unk, 0);  // not named: the model's
  EXPECT_EQ(tok->encode("x", true)[0], 2);  // encode prepends the configured BOS
  // The same from the file's path: the config beside it is read.
  EXPECT_EQ(load_tokenizer(dir + "/tokenizer.model")->special_ids().bos, 2);
  // A role naming a token the vocabulary lacks, and a malformed role.
  write_bytes(dir + "/tokenizer_config.json", R"({"eos_token": "<|endoftext|>"})");
  expect_error([&] { load_tokenizer(dir); }, ErrorCode::kInvalidConfig,
               dir + "/tokenizer_config.json': eos_token '<|endoftext|>' is not a token");
  write_bytes(dir + "/tokenizer_config.json", R"({"unk_token": {"lstrip": true}})");
  expect_error([&] { load_tokenizer(dir); }, ErrorCode::kInvalidConfig, "unk_token is an object without \"content\"");
  write_bytes(dir + "/tokenizer_config.json", R"({"unk_token": 7})");
  expect_error([&] { load_tokenizer(dir); }, ErrorCode::kInvalidConfig, "unk_token is neither a string");
  write_bytes(dir + "/tokenizer_config.json", "{\"bos_token\": ");
  expect_error([&] { load_tokenizer(dir); }, ErrorCode::kParse, "tokenizer_config.json");
}

TEST(TokenizerLoad, RecognisesContentAndNamesThePath) {
  const std::string dir = olm::testing::temp_dir("tokload");
  expect_error([&] { load_tokenizer(dir); }, ErrorCode::kIo, dir + "' holds neither tokenizer.json nor tokenizer.model");
  expect_error([&] { load_tokenizer(dir + "/missing.model"); }, ErrorCode::kIo, dir + "/missing.model");
  // A JSON object with "model" goes to the tokenizer.json loader, whatever the file's name.
  write_bytes(dir + "/tok.bin", R"(  {"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  try {
    load_tokenizer(dir + "/tok.bin");
    // The tokenizer.json engine accepts it: then it must be that engine's object, not SentencePiece.
  } catch (const olm::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(dir + "/tok.bin"));
    EXPECT_THAT(e.what(), ::testing::Not(::testing::HasSubstr("SentencePiece")));
  }
  write_bytes(dir + "/other.json", R"({"vocab": {}})");
  expect_error([&] { load_tokenizer(dir + "/other.json"); }, ErrorCode::kInvalidConfig,
               "other.json' is a JSON object without a \"model\" member");
  write_bytes(dir + "/broken.json", R"({"model": )");
  expect_error([&] { load_tokenizer(dir + "/broken.json"); }, ErrorCode::kParse, "broken.json");
  // Anything else is read as a SentencePiece model.
  write_bytes(dir + "/garbage.model", "this is not a model proto");
  expect_error([&] { load_tokenizer(dir + "/garbage.model"); }, ErrorCode::kParse,
               "SentencePiece model '" + dir + "/garbage.model'");
  const std::string model = read_bytes(models().lossless_bpe);
  write_bytes(dir + "/truncated.model", model.substr(0, model.size() / 2));
  expect_error([&] { load_tokenizer(dir + "/truncated.model"); }, ErrorCode::kParse, "truncated.model");
  write_bytes(dir + "/empty.model", "");
  expect_error([&] { load_tokenizer(dir + "/empty.model"); }, ErrorCode::kParse, "empty.model' is empty");
}

// ---- Parity with the Python sentencepiece package (fixture from tests/parity/sentencepiece_parity.py).

// [uint32 length][bytes] records.
std::vector<std::string> read_records(const std::string& path) {
  const std::string bytes = read_bytes(path);
  std::vector<std::string> out;
  for (size_t p = 0; p + 4 <= bytes.size();) {
    uint32_t n = 0;
    std::memcpy(&n, bytes.data() + p, 4);
    out.push_back(bytes.substr(p + 4, n));
    p += 4 + n;
  }
  return out;
}

// Debian's libsentencepiece (0.1.97) and the pinned Python package (0.2.3) segment alike except
// where a unigram model's Viterbi search meets two segmentations of exactly equal score (runs of
// one repeated character, "______" + "____" against "____" + "______"): the versions break that
// tie differently. So: BPE models must match every id; unigram models every id except on texts
// where both segmentations are optimal, which the scores of the pieces prove (summed in double,
// equal to float rounding), and those stay under 1% of the texts.
double segmentation_score(const sentencepiece::SentencePieceProcessor& sp, const std::vector<int32_t>& ids) {
  double sum = 0;
  for (int32_t id : ids) sum += sp.GetScore(id);
  return sum;
}

TEST(TokenizerSentencePiece, ParityWithThePythonPackage) {
  const char* dir = std::getenv("OLM_SENTENCEPIECE_PARITY_DIR");
  if (!dir) GTEST_SKIP() << "OLM_SENTENCEPIECE_PARITY_DIR not set (run by tests/parity/sentencepiece_parity.py)";
  const std::string root = dir;
  const auto texts = read_records(root + "/texts.bin");
  size_t total_bytes = 0;
  for (const auto& t : texts) total_bytes += t.size();
  EXPECT_GE(total_bytes, 1000000u);
  std::istringstream manifest(read_bytes(root + "/manifest.txt"));
  int models_checked = 0;
  for (std::string name, kind, lossless; manifest >> name >> kind >> lossless;) {
    SCOPED_TRACE(name);
    const std::string model = root + "/" + name + ".model";
    const auto tok = load_sentencepiece(model);
    sentencepiece::SentencePieceProcessor scores;
    ASSERT_TRUE(scores.Load(model).ok());
    EXPECT_EQ(tok->lossless(), lossless == "1");
    const auto ids = read_records(root + "/" + name + ".ids.bin");
    const auto decoded = read_records(root + "/" + name + ".decoded.bin");
    ASSERT_EQ(ids.size(), texts.size());
    ASSERT_EQ(decoded.size(), texts.size());
    size_t id_mismatches = 0, ties = 0, text_mismatches = 0, roundtrip_failures = 0, tokens = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto got = tok->encode(texts[i], false);
      std::vector<int32_t> want(ids[i].size() / 4);
      std::memcpy(want.data(), ids[i].data(), ids[i].size());
      tokens += want.size();
      if (got != want) {
        const double a = segmentation_score(scores, got), b = segmentation_score(scores, want);
        const bool tie = kind == "unigram" && std::abs(a - b) <= 1e-6 * std::abs(b);
        if (tie) {
          ++ties;
        } else if (id_mismatches++ < 3) {
          ADD_FAILURE() << "text " << i << " ('" << texts[i].substr(0, 80) << "'): ids differ (scores " << a << " and "
                        << b << ")";
        }
      }
      const auto text = tok->decode(want.data(), want.size(), true);
      if (text != decoded[i] && text_mismatches++ < 3) ADD_FAILURE() << "text " << i << ": decode differs";
      if (tok->lossless() && tok->decode(got.data(), got.size(), true) != texts[i]) ++roundtrip_failures;
    }
    EXPECT_EQ(id_mismatches, 0u);
    EXPECT_LT(ties, texts.size() / 100);
    EXPECT_EQ(text_mismatches, 0u);
    EXPECT_EQ(roundtrip_failures, 0u);
    std::printf("[parity] %s (%s): %zu texts, %zu bytes, %zu tokens: ids identical on %zu texts, %zu equal-score "
                "tie-breaks, 0 other differences; decode identical on every text\n",
                name.c_str(), kind.c_str(), texts.size(), total_bytes, tokens, texts.size() - ties, ties);
    ++models_checked;
  }
  EXPECT_GE(models_checked, 2);
}

}  // namespace
}  // namespace olm::tokenizer
