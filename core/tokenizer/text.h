// Unicode text for the tokenizer pipeline: UTF-8 stepping, the character classes `tokenizers`
// takes from Rust's `char` methods and the `regex` crate (written from utf8proc's categories),
// Unicode normalization forms, and byte-level BPE's byte <-> character table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace olm::tokenizer {

// The code point at s[i] (s valid UTF-8); advances i past it.
inline char32_t next_char(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return ++i, c;
  auto cont = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  char32_t cp;
  if (c < 0xE0) cp = (char32_t(c & 0x1F) << 6) | cont(1), i += 2;
  else if (c < 0xF0) cp = (char32_t(c & 0x0F) << 12) | (cont(1) << 6) | cont(2), i += 3;
  else cp = (char32_t(c & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3), i += 4;
  return cp;
}

// Bytes in the UTF-8 sequence a lead byte starts (1 for anything else).
inline size_t utf8_length(unsigned char lead) {
  return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

void append_utf8(std::string& out, char32_t c);

// Rust's char::is_whitespace (the White_Space property).
bool is_whitespace(char32_t c);
// Rust's char::is_numeric: general categories Nd, Nl, No.
bool is_numeric(char32_t c);
// Rust's char::is_alphabetic (Alphabetic) || is_numeric.
bool is_alphanumeric(char32_t c);
// unicode_categories' is_punctuation: Pc, Pd, Ps, Pe, Pi, Pf, Po.
bool is_punctuation(char32_t c);
// General category M* (unicode-normalization's is_combining_mark), Mn alone.
bool is_mark(char32_t c);
bool is_mark_nonspacing(char32_t c);
// General category C* (Cc, Cf, Cs, Co, Cn).
bool is_other(char32_t c);
// The `regex` crate's Unicode \w: Alphabetic, M*, Nd, Pc, Join_Control.
bool is_word_char(char32_t c);

// Rust's char::to_lowercase applied to every character (no context: a final sigma stays σ).
std::string to_lowercase(std::string_view s);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
std::string normalize(std::string_view s, NormalForm form);

// Rust's String::from_utf8_lossy: each maximal ill-formed subsequence becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// GPT-2's bytes_to_unicode: every byte as a printable character, and back (-1: not one).
char32_t byte_to_char(uint8_t b);
int byte_of_char(char32_t c);
// The byte-level spelling of `bytes`: each byte as its character, in UTF-8.
void append_byte_level(std::string& out, std::string_view bytes);

}  // namespace olm::tokenizer
