// The tokenizer.json engine on small hand-written documents, with the ids worked out from the
// `tokenizers` package's semantics; components through their factories; and malformed files,
// each refused with its code and a message naming the file and the JSON path.
// (Parity on real trained tokenizers and 3 MB of text: hf_tokenizer_parity_test.cpp.)
#include <gtest/gtest.h>

#include <thread>

#include "core/error.h"
#include "core/io/json.h"
#include "core/tokenizer/components.h"
#include "core/tokenizer/text.h"
#include "core/tokenizer/tokenizer.h"

namespace olm::tokenizer {
namespace {

using Ids = std::vector<int32_t>;

std::shared_ptr<const Tokenizer> load(const std::string& json) { return load_hf_tokenizer_json(json, "tokenizer.json"); }

// A component from its JSON, through the same factories the loader uses.
struct Component {
  explicit Component(const std::string& text) : json(io::parse_json(text.data(), text.size(), "test")) {}
  JsonNode node() const { return JsonNode(json, "x", source); }
  io::Json json;
  std::string source = "test";
};

std::string normalized(const std::string& normalizer_json, std::string text) {
  Component c(normalizer_json);
  make_normalizer(c.node())->normalize(text);
  return text;
}

std::vector<std::string> pre_tokenized(const std::string& pre_tokenizer_json, const std::string& text) {
  Component c(pre_tokenizer_json);
  std::vector<Piece> pieces{Piece{text, true}};
  make_pre_tokenizer(c.node())->pre_tokenize(pieces);
  std::vector<std::string> out;
  for (const Piece& p : pieces) out.push_back(p.text);
  return out;
}

std::string decoded(const std::string& decoder_json, std::vector<std::string> tokens) {
  Component c(decoder_json);
  make_decoder(c.node())->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

// Every byte's GPT-2 character as a vocabulary entry (ids 0..255 by byte), then `extra`.
std::string byte_level_vocab(const std::vector<std::string>& extra) {
  std::string vocab = "{";
  for (int b = 0; b < 256; ++b) {
    std::string token;
    append_utf8(token, byte_to_char(static_cast<uint8_t>(b)));
    vocab += (b ? "," : "") + io::quote_json(token) + ":" + std::to_string(b);
  }
  for (size_t i = 0; i < extra.size(); ++i) vocab += "," + io::quote_json(extra[i]) + ":" + std::to_string(256 + i);
  return vocab + "}";
}

void expect_error(const std::string& json, ErrorCode code, const std::string& path) {
  try {
    load(json);
    ADD_FAILURE() << "loaded: " << json;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "expected " << path << " in: " << e.what();
  }
}

// ---- BPE ----

// 'a' 97, 'b' 98, 'c' 99, 'Ġ' (space) 32; then ab 256, bc 257, abc 258, Ġa 259.
const char* kMerges = R"(["b c", "a b", ["a", "bc"], "Ġ a"])";

std::string byte_level_bpe(const std::string& extra = "") {
  return R"({"model": {"type": "BPE", "vocab": )" + byte_level_vocab({"ab", "bc", "abc", "Ġa"}) +
         R"(, "merges": )" + kMerges +
         R"(}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            "decoder": {"type": "ByteLevel"})" + extra + "}";
}

TEST(TokenizerBpe, MergesByRankNotPosition) {
  auto tok = load(byte_level_bpe());
  // (b,c) has rank 0, (a,b) rank 1: "abc" -> a + bc -> abc.
  EXPECT_EQ(tok->encode("abc", false), (Ids{258}));
  // " ab": Ġ a b; (a,b) rank 1 beats (Ġ,a) rank 3, then (Ġ,ab) has no merge.
  EXPECT_EQ(tok->encode(" ab", false), (Ids{32, 256}));
  EXPECT_EQ(tok->encode(" a", false), (Ids{259}));
  // The GPT-2 pattern splits "abc abc" into "abc" and " abc".
  EXPECT_EQ(tok->encode("abc abc", false), (Ids{258, 32, 258}));
  EXPECT_EQ(tok->encode("", false), Ids{});
  EXPECT_EQ(tok->decode(Ids{258, 32, 258}.data(), 3, false), "abc abc");
  EXPECT_TRUE(tok->lossless());
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_EQ(tok->token_to_id("abc"), 258);
  EXPECT_EQ(tok->id_to_token(259), "Ġa");
  EXPECT_EQ(tok->id_to_token(5000), std::nullopt);
}

TEST(TokenizerBpe, ByteLevelDecodeReplacesInvalidUtf8) {
  auto tok = load(byte_level_bpe());
  // 0xE2 0x82 is a truncated three-byte sequence: one U+FFFD, then 'a'.
  EXPECT_EQ(tok->decode(Ids{0xE2, 0x82, 'a'}.data(), 3, false), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(tok->encode("\xE2\x82\xAC", false), (Ids{0xE2, 0x82, 0xAC}));
  const Ids out_of_range{260};
  EXPECT_THROW(tok->decode(out_of_range.data(), 1, false), Error);
  EXPECT_THROW(tok->encode("\xFF", false), Error);
}

TEST(TokenizerBpe, PrefixSpaceIsNotLossless) {
  auto tok = load(R"({"model": {"type": "BPE", "vocab": )" + byte_level_vocab({}) + R"(, "merges": []},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true}, "decoder": {"type": "ByteLevel"}})");
  EXPECT_EQ(tok->encode("a", false), (Ids{32, 97}));
  EXPECT_FALSE(tok->lossless());
}

TEST(TokenizerBpe, ByteFallbackUnknownAndFuse) {
  const std::string model = R"({"type": "BPE", "vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "a": 3, "▁": 4},
      "merges": [], "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": %FUSE%})";
  auto with_fuse = [&](bool fuse) {
    std::string m = model;
    m.replace(m.find("%FUSE%"), 6, fuse ? "true" : "false");
    return load(R"({"model": )" + m + R"(, "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}})");
  };
  auto fused = with_fuse(true), unfused = with_fuse(false);
  EXPECT_EQ(fused->encode("aé", false), (Ids{3, 1, 2}));  // é = C3 A9, both byte tokens exist
  EXPECT_EQ(fused->encode("a€€a", false), (Ids{3, 0, 3}));  // € has no byte tokens: unknown, fused
  EXPECT_EQ(unfused->encode("a€€a", false), (Ids{3, 0, 0, 3}));
  EXPECT_EQ(fused->decode(Ids{4, 3, 1, 2}.data(), 4, false), "aé");  // Strip drops the leading space
  // A lone 0xC3 is not UTF-8: one U+FFFD per byte.
  EXPECT_EQ(fused->decode(Ids{3, 1, 3}.data(), 3, false), "a\xEF\xBF\xBD" "a");
  EXPECT_FALSE(fused->lossless());
}

TEST(TokenizerBpe, SubwordPrefixSuffixAndIgnoreMerges) {
  // end_of_word_suffix: the last character carries "</w>"; merges join "a" and "b</w>".
  auto tok = load(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b</w>": 1, "ab</w>": 2, "b": 3, "[UNK]": 4},
      "merges": ["a b</w>"], "unk_token": "[UNK]", "end_of_word_suffix": "</w>"},
      "pre_tokenizer": {"type": "WhitespaceSplit"}, "decoder": {"type": "BPEDecoder", "suffix": "</w>"}})");
  EXPECT_EQ(tok->encode("ab b ax", false), (Ids{2, 1, 0, 4}));
  EXPECT_EQ(tok->decode(Ids{2, 1, 0, 1}.data(), 4, false), "ab b ab");
  // continuing_subword_prefix: a non-first character is looked up as "##c".
  auto prefixed = load(R"({"model": {"type": "BPE", "vocab": {"a": 0, "##b": 1, "ab": 2},
      "merges": [["a", "##b"]], "continuing_subword_prefix": "##"}})");
  EXPECT_EQ(prefixed->encode("ab", false), (Ids{2}));
  // ignore_merges: a word in the vocabulary is one token even where merges would not build it.
  const std::string merges_less = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
      "merges": [], "ignore_merges": %IGNORE%}})";
  std::string on = merges_less, off = merges_less;
  on.replace(on.find("%IGNORE%"), 8, "true");
  off.replace(off.find("%IGNORE%"), 8, "false");
  EXPECT_EQ(load(on)->encode("ab", false), (Ids{2}));
  EXPECT_EQ(load(off)->encode("ab", false), (Ids{0, 1}));
}

// ---- Unigram ----

TEST(TokenizerUnigram, ViterbiUnknownFusionAndByteFallback) {
  const std::string model = R"({"type": "Unigram", "unk_id": 0, "byte_fallback": %FALLBACK%,
      "vocab": [["<unk>", 0], ["a", -1], ["b", -1], ["ab", -1.5], ["c", -3], ["<0x78>", -5]]})";
  auto with_fallback = [&](bool fallback) {
    std::string m = model;
    m.replace(m.find("%FALLBACK%"), 10, fallback ? "true" : "false");
    return load(R"({"model": )" + m + "}");
  };
  auto plain = with_fallback(false), fallback = with_fallback(true);
  EXPECT_EQ(plain->encode("ab", false), (Ids{3}));        // ab (-1.5) beats a + b (-2)
  EXPECT_EQ(plain->encode("abx", false), (Ids{3, 0}));
  EXPECT_EQ(plain->encode("xxab", false), (Ids{0, 3}));   // two unknowns, fused
  EXPECT_EQ(plain->encode("cab", false), (Ids{4, 3}));
  EXPECT_EQ(fallback->encode("abx", false), (Ids{3, 5}));
  EXPECT_EQ(fallback->encode("xxab", false), (Ids{5, 5, 3}));
  EXPECT_EQ(fallback->encode("xyab", false), (Ids{0, 3}));  // no <0x79>: the fused piece is unknown
}

// ---- WordPiece, WordLevel, post-processors ----

const char* kWordPiece = R"({
  "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                 "strip_accents": null, "lowercase": true},
  "pre_tokenizer": {"type": "BertPreTokenizer"},
  "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 5], "cls": ["[CLS]", 4]},
  "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
  "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 12,
            "vocab": {"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, "[CLS]": 4, "[SEP]": 5, "a": 6, "!": 7,
                      "cafe": 8, "中": 9}}})";

TEST(TokenizerWordPiece, GreedyLongestMatchAndBertPipeline) {
  auto tok = load(kWordPiece);
  EXPECT_EQ(tok->encode("UnAffable a!", false), (Ids{1, 2, 3, 6, 7}));
  EXPECT_EQ(tok->encode("UnAffable", true), (Ids{4, 1, 2, 3, 5}));
  EXPECT_EQ(tok->encode("unx", false), (Ids{0}));  // "##x" is missing: the whole word is unknown
  EXPECT_EQ(tok->encode("unaffableunaffable", false), (Ids{0}));  // over 12 characters
  EXPECT_EQ(tok->encode("Café中a", false), (Ids{8, 9, 6}));  // accents stripped, CJK split out
  EXPECT_EQ(tok->decode(Ids{4, 1, 2, 3, 6, 7, 5}.data(), 7, false), "[CLS] unaffable a! [SEP]");
  EXPECT_FALSE(tok->lossless());
}

TEST(TokenizerPostProcessor, TemplateWithPairLoadsAndAddsSingle) {
  auto tok = load(R"({"model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "x": 1, "<s>": 2, "</s>": 3},
      "unk_token": "[UNK]"}, "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [2], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [3], "tokens": ["</s>"]}}},
      "added_tokens": [{"id": 2, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                        "normalized": false, "special": true}]})");
  EXPECT_EQ(tok->encode("x y", true), (Ids{2, 1, 0, 3}));
  EXPECT_EQ(tok->encode("x y", false), (Ids{1, 0}));
  // No decoder: tokens joined by spaces; skip_special_tokens drops the added special <s> only.
  const Ids ids{2, 1, 3};
  EXPECT_EQ(tok->decode(ids.data(), 3, false), "<s> x </s>");
  EXPECT_EQ(tok->decode(ids.data(), 3, true), "x </s>");
  ASSERT_EQ(tok->added_tokens().size(), 1u);
  EXPECT_TRUE(tok->added_tokens()[0].special);
}

TEST(TokenizerPostProcessor, RobertaAndSequence) {
  const std::string model = R"({"type": "WordLevel", "vocab": {"[UNK]": 0, "x": 1, "<s>": 2, "</s>": 3}, "unk_token": "[UNK]"})";
  auto roberta = load(R"({"model": )" + model + R"(, "pre_tokenizer": {"type": "WhitespaceSplit"},
      "post_processor": {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        {"type": "RobertaProcessing", "sep": ["</s>", 3], "cls": ["<s>", 2], "trim_offsets": true,
         "add_prefix_space": true}]}})");
  EXPECT_EQ(roberta->encode("x x", true), (Ids{2, 1, 1, 3}));
  EXPECT_EQ(roberta->encode("x x", false), (Ids{1, 1}));
}

TEST(TokenizerPostProcessor, TruncationAndPadding) {
  const std::string model = R"({"type": "WordLevel", "vocab": {"[PAD]": 0, "x": 1, "<s>": 2, "</s>": 3, "y": 4},
      "unk_token": "[PAD]"}, "pre_tokenizer": {"type": "WhitespaceSplit"},
      "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 3], "cls": ["<s>", 2]})";
  // max_length counts the special tokens when they are added; Left keeps the end.
  auto left = load(R"({"model": )" + model + R"(, "truncation": {"max_length": 4, "strategy": "LongestFirst",
      "direction": "Left", "stride": 1}, "padding": {"strategy": {"Fixed": 6}, "direction": "Left", "pad_id": 0,
      "pad_to_multiple_of": null, "pad_type_id": 0, "pad_token": "[PAD]"}})");
  EXPECT_EQ(left->encode("x y x y", true), (Ids{0, 0, 2, 1, 4, 3}));
  EXPECT_EQ(left->encode("x y x y x", false), (Ids{0, 0, 4, 1, 4, 1}));
  auto right = load(R"({"model": )" + model + R"(, "truncation": {"max_length": 3, "direction": "Right"},
      "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_id": 0, "pad_to_multiple_of": 4}})");
  EXPECT_EQ(right->encode("x y x y", true), (Ids{2, 1, 3, 0}));
  EXPECT_EQ(right->encode("y", false), (Ids{4, 0, 0, 0}));
  EXPECT_EQ(right->encode("", false), Ids{});  // nothing to pad: 0 is a multiple of 4
  EXPECT_FALSE(right->lossless());
}

// ---- added tokens ----

TEST(TokenizerAddedTokens, StripSingleWordAndNormalized) {
  // Split on spaces (Isolated) keeps " " as a word of its own (id 3).
  auto tok = load(R"({"model": {"type": "WordLevel", "unk_token": "[UNK]",
        "vocab": {"[UNK]": 0, "a": 1, "b": 2, " ": 3, "axy": 4}},
      "normalizer": {"type": "Lowercase"},
      "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated", "invert": false},
      "added_tokens": [
        {"id": 5, "content": "<m>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true},
        {"id": 6, "content": "<n>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 7, "content": "xy", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
        {"id": 8, "content": "QQ", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}]})");
  EXPECT_EQ(tok->encode("a  <m>  b", false), (Ids{1, 5, 2}));     // the spaces around <m> are its own
  EXPECT_EQ(tok->encode("a <n> b", false), (Ids{1, 3, 6, 3, 2}));
  EXPECT_EQ(tok->encode("a xy b", false), (Ids{1, 3, 7, 3, 2}));
  EXPECT_EQ(tok->encode("axy", false), (Ids{4}));                  // not a word of its own: no match
  // A normalized token matches in normalized text: "QQ" is looked for as "qq", after Lowercase.
  EXPECT_EQ(tok->encode("aQqb", false), (Ids{1, 8, 2}));
  EXPECT_EQ(tok->token_to_id("<m>"), 5);
  EXPECT_EQ(tok->vocab_size(), 9);
}

// ---- normalizers, pre-tokenizers, decoders ----

TEST(TokenizerNormalizer, Components) {
  EXPECT_EQ(normalized(R"({"type": "NFKC"})", "ﬁ１"), "fi1");
  EXPECT_EQ(normalized(R"({"type": "NFD"})", "é"), "e\xCC\x81");
  EXPECT_EQ(normalized(R"({"type": "NFC"})", "e\xCC\x81"), "é");
  EXPECT_EQ(normalized(R"({"type": "NFKD"})", "ﬁé"), "fie\xCC\x81");
  // Per character, no final-sigma context; İ lowercases to i + combining dot, as Rust does.
  EXPECT_EQ(normalized(R"({"type": "Lowercase"})", "ΣΊΣΥΦΟΣ İ"), "σίσυφοσ i\xCC\x87");
  EXPECT_EQ(normalized(R"({"type": "Strip", "strip_left": true, "strip_right": false})", " \t a \u3000"), "a \u3000");
  EXPECT_EQ(normalized(R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]})", "café"), "cafe");
  EXPECT_EQ(normalized(R"({"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "})", "a \t\n b"), "a b");
  EXPECT_EQ(normalized(R"({"type": "Replace", "pattern": {"String": "a.b"}, "content": "-"})", "a.b axb"), "- axb");
  EXPECT_EQ(normalized(R"({"type": "Prepend", "prepend": "▁"})", "x"), "▁x");
  EXPECT_EQ(normalized(R"({"type": "ByteLevel"})", "a é"), "aĠÃ©");
  EXPECT_EQ(normalized(R"({"type": "Prepend", "prepend": "▁"})", ""), "");
  EXPECT_EQ(normalized(R"({"type": "BertNormalizer", "lowercase": false, "strip_accents": false,
                          "clean_text": true, "handle_chinese_chars": true})", "A\tb\x01中"), "A b 中 ");
}

TEST(TokenizerPreTokenizer, SplitBehaviours) {
  auto split = [](const std::string& behavior, bool invert = false) {
    return pre_tokenized(R"({"type": "Split", "pattern": {"String": "-"}, "behavior": ")" + behavior +
                             R"(", "invert": )" + (invert ? "true" : "false") + "}",
                         "a-b--c");
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Removed"), (V{"a", "b", "c"}));
  EXPECT_EQ(split("Isolated"), (V{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(split("MergedWithPrevious"), (V{"a-", "b-", "-", "c"}));
  EXPECT_EQ(split("MergedWithNext"), (V{"a", "-b", "-", "-c"}));
  EXPECT_EQ(split("Contiguous"), (V{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(split("Removed", true), (V{"-", "-", "-"}));
}

TEST(TokenizerPreTokenizer, Components) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pre_tokenized(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true})",
                          "hello  world"),
            (V{"▁hello", "▁", "▁world"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": false})",
                          "a b"),
            (V{"a▁b"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})",
                          "a b"),
            (V{"▁a▁b"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "CharDelimiterSplit", "delimiter": "-"})", "a b-c--d"), (V{"a b", "c", "d"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Digits", "individual_digits": true})", "a123b"), (V{"a", "1", "2", "3", "b"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Digits", "individual_digits": false})", "a123b"), (V{"a", "123", "b"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Whitespace"})", "Hey  friend!! ok_2"), (V{"Hey", "friend", "!!", "ok_2"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "WhitespaceSplit"})", " a\tb!  c "), (V{"a", "b!", "c"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "BertPreTokenizer"})", "Hi, you!"), (V{"Hi", ",", "you", "!"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Punctuation", "behavior": "MergedWithPrevious"})", "a,b."), (V{"a,", "b."}));
  EXPECT_EQ(pre_tokenized(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})", "a b's"),
            (V{"Ġa", "Ġb", "'s"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})", "a\n"), (V{"aĊ"}));
  EXPECT_EQ(pre_tokenized(R"({"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated",
                              "invert": false})", "12345x"),
            (V{"123", "45", "x"}));
}

// Oniguruma's classes, as tokenizers' Split sees them (expected pieces from the package):
// U+180E is not \s, a No digit (²) and a combining mark are \w, \h is a hex digit.
TEST(TokenizerPreTokenizer, RegexClassesAsOniguruma) {
  using V = std::vector<std::string>;
  auto split = [](const std::string& regex, const std::string& text) {
    return pre_tokenized(R"({"type": "Split", "pattern": {"Regex": )" + io::quote_json(regex) +
                             R"(}, "behavior": "Isolated", "invert": false})",
                         text);
  };
  EXPECT_EQ(split("\\s+", "a\u180eb c"), (V{"a\u180eb", " ", "c"}));
  EXPECT_EQ(split("\\w+", "x²y e\u0301 _z"), (V{"x²y", " ", "e\u0301", " ", "_z"}));
  EXPECT_EQ(split("\\h+", "ffz0"), (V{"ff", "z", "0"}));
  EXPECT_EQ(split("[^\\s\\w]+", "a\u180eb,c"), (V{"a", "\u180e", "b", ",", "c"}));
  EXPECT_EQ(split("\\Q\\s\\E", "a\\sb"), (V{"a", "\\s", "b"}));  // quoted text is not translated
}

TEST(TokenizerDecoder, Components) {
  EXPECT_EQ(decoded(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})", {"▁a", "▁b"}), "a b");
  EXPECT_EQ(decoded(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"})", {"▁a", "▁b"}), " a b");
  EXPECT_EQ(decoded(R"({"type": "WordPiece", "prefix": "##", "cleanup": true})", {"i", "do", "not", "##e", "."}),
            "i do note.");
  // Cleanup runs per token: " n't" loses its space, "do" + " not" stays (" do not" is one token's).
  EXPECT_EQ(decoded(R"({"type": "WordPiece", "prefix": "##", "cleanup": true})", {"do", "n't"}), "don't");
  EXPECT_EQ(decoded(R"({"type": "WordPiece", "prefix": "##", "cleanup": true})", {"do", "not"}), "do not");
  EXPECT_EQ(decoded(R"({"type": "BPEDecoder", "suffix": "</w>"})", {"a</w>", "b", "c</w>"}), "a bc");
  EXPECT_EQ(decoded(R"({"type": "Strip", "content": "x", "start": 2, "stop": 1})", {"xxxaxx"}), "xax");
  EXPECT_EQ(decoded(R"({"type": "ByteFallback"})", {"<0x61>", "<0xE2>", "<0x82>", "b"}),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b");  // 61 E2 82 is not UTF-8: one U+FFFD per byte
}

TEST(TokenizerText, LossyUtf8AsRust) {
  EXPECT_EQ(utf8_lossy("a\xC3"), "a\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98" "a"), "\xEF\xBF\xBD" "a");  // one maximal subpart
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate: three
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("é😀"), "é😀");
}

TEST(TokenizerThreads, ConcurrentEncodesAgree) {
  auto tok = load(byte_level_bpe());
  const std::string text = "abc ab  a bc\tabc, cab! ";
  const Ids expected = tok->encode(text, false);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      int good = 0;
      for (int i = 0; i < 2000; ++i) good += tok->encode(text, false) == expected;
      ok[t] = good;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(ok[t], 2000);
}

// ---- refused input ----

TEST(TokenizerErrors, MalformedAndTruncated) {
  expect_error("{\"model\": {\"type\": \"BPE\",", ErrorCode::kParse, "tokenizer.json");
  expect_error("{\"model\": nope}", ErrorCode::kParse, "tokenizer.json");
  const std::string good = byte_level_bpe();
  expect_error(good.substr(0, good.size() / 2), ErrorCode::kParse, "tokenizer.json");
  expect_error("[]", ErrorCode::kParse, "(document)");
  expect_error("{}", ErrorCode::kParse, "model");
  expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\xE2\x82\": 0}, \"merges\": []}}", ErrorCode::kParse,
               "line 1, column 38: not valid UTF-8");
}

TEST(TokenizerErrors, NamesThePath) {
  const std::string vocab = R"({"a": 0, "b": 1, "ab": 2})";
  expect_error(R"({"model": {"type": "BPE", "vocab": ["a"], "merges": []}})", ErrorCode::kParse, "model.vocab");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": "0"}, "merges": []}})", ErrorCode::kParse, "model.vocab[\"a\"]");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}})", ErrorCode::kInvalidConfig,
               "model.vocab");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": ["a b", "a c"]}})",
               ErrorCode::kInvalidConfig, "model.merges[1]");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": ["a b c"]}})", ErrorCode::kParse,
               "model.merges[0]");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": [], "dropout": 0.1}})",
               ErrorCode::kInvalidConfig, "model.dropout");
  expect_error(R"({"model": {"type": "Unknown", "vocab": []}})", ErrorCode::kInvalidConfig, "model.type");
  expect_error(R"({"model": {"type": "Unigram", "vocab": [["a", -1.0], ["a", -2.0]]}})", ErrorCode::kInvalidConfig,
               "model.vocab[1][0]");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "UnicodeScripts"}]}})",
               ErrorCode::kInvalidConfig, "pre_tokenizer.pretokenizers[1].type");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"}})",
               ErrorCode::kInvalidConfig, "pre_tokenizer.pattern.Regex");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[a-z&&[^aeiou]]"}, "behavior": "Isolated"}})",
               ErrorCode::kInvalidConfig, "pre_tokenizer.pattern.Regex");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}})", ErrorCode::kInvalidConfig, "normalizer.type");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "decoder": {"type": "Strip", "content": "ab", "start": 1, "stop": 0}})", ErrorCode::kParse, "decoder.content");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "added_tokens": [{"id": 7, "content": "<x>", "special": true}]})", ErrorCode::kInvalidConfig, "added_tokens[0].id");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "post_processor": {"type": "BertProcessing", "sep": ["a", 0], "cls": ["b", 1]},
      "truncation": {"max_length": 1, "strategy": "LongestFirst", "direction": "Right", "stride": 0}})",
               ErrorCode::kInvalidConfig, "truncation.max_length");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "truncation": {"max_length": 5, "strategy": "OnlySecond"}})", ErrorCode::kInvalidConfig, "truncation.strategy");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "padding": {"strategy": "BatchLongest", "pad_id": 9}})", ErrorCode::kInvalidConfig, "padding.pad_id");
  // A few bytes must not claim a table of two billion ids.
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 2000000000}, "merges": []}})", ErrorCode::kInvalidConfig,
               "model.vocab");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["a", 0]}})",
               ErrorCode::kInvalidConfig, "post_processor");
  // The next free id after a vocabulary with a hole would be a model token's id.
  expect_error(R"({"model": {"type": "WordLevel", "unk_token": "a", "vocab": {"a": 0, "b": 2}},
      "added_tokens": [{"id": 2, "content": "<x>", "special": true}]})", ErrorCode::kInvalidConfig, "added_tokens[0].id");
  expect_error(R"({"model": {"type": "WordPiece", "vocab": )" + vocab + R"(}})", ErrorCode::kInvalidConfig, "model");
  expect_error(R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": []},
      "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}}})",
               ErrorCode::kInvalidConfig, "post_processor.single[0].SpecialToken");
}

}  // namespace
}  // namespace olm::tokenizer
