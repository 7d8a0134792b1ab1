#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/errors.h"
#include "text/added_tokens.h"
#include "text/bpe_model.h"
#include "text/byte_level.h"
#include "text/incremental_decoder.h"
#include "text/pre_tokenizer.h"
#include "text/tokenizer.h"
#include "text/unicode_normalize.h"
#include "text/utf8.h"

namespace qwen2audio::text {
namespace {

const std::filesystem::path kTokenizerDir = std::filesystem::path(QWEN2AUDIO_SHARED_REFERENCE_DIR) / "tokenizer";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

std::vector<std::string> split(const std::string& text, const std::string& separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t found; (found = text.find(separator, start)) != std::string::npos; start = found + separator.size())
    parts.push_back(text.substr(start, found - start));
  parts.push_back(text.substr(start));
  return parts;
}

std::shared_ptr<const Tokenizer> reference_tokenizer() {
  static const auto tokenizer = Tokenizer::from_directory(kTokenizerDir);
  return tokenizer;
}

std::vector<std::string> words_of(const PreTokenizer& pre_tokenizer, std::string_view text) {
  std::vector<Piece> pieces;
  pre_tokenizer.split(text, pieces);
  std::vector<std::string> words;
  for (const Piece& piece : pieces) words.emplace_back(text.substr(piece.offset, piece.length));
  return words;
}

TEST(TokenizerUtf8, ReplacesMaximalIllFormedSubparts) {
  const auto lossy = [](std::string_view bytes) {
    std::string out;
    append_utf8_lossy(out, bytes);
    return out;
  };
  EXPECT_EQ(lossy("abc"), "abc");
  EXPECT_EQ(lossy("\xE4\xBD"), "\xEF\xBF\xBD");  // truncated: one U+FFFD
  EXPECT_EQ(lossy("\xE4\xBD"
                  "a"),
            "\xEF\xBF\xBD"
            "a");                                                            // interrupted: one U+FFFD
  EXPECT_EQ(lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: each byte
  EXPECT_EQ(lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong: each byte
  EXPECT_EQ(lossy("\xF4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  std::string out;
  EXPECT_EQ(append_utf8_lossy(out, "ok\xF0\x9F\xA6", /*final=*/false), 2u);  // holds back the unfinished emoji
  EXPECT_EQ(out, "ok");
  EXPECT_EQ(find_invalid_utf8("h\xC3\xA9llo \xF0\x9F\xA6\x99"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("abcdefgh\xFF"), 8u);
}

TEST(TokenizerByteLevel, IsGpt2sTable) {
  EXPECT_EQ(byte_to_codepoint('!'), U'!');
  EXPECT_EQ(byte_to_codepoint(' '), U'\u0120');   // Ġ
  EXPECT_EQ(byte_to_codepoint('\n'), U'\u010A');  // Ċ
  EXPECT_EQ(byte_to_codepoint(0xAD), U'\u0143');
  for (int byte = 0; byte < 256; ++byte) EXPECT_EQ(codepoint_to_byte(byte_to_codepoint(byte)), byte);
  EXPECT_EQ(bytes_to_token_text(" world"), "\xC4\xA0world");
  EXPECT_EQ(token_text_to_bytes("\xC4\xA0world"), " world");
  // Characters outside the alphabet: the token stands for its own UTF-8, as HF's ByteLevel decoder.
  EXPECT_EQ(token_text_to_bytes("<|im_end|>"), "<|im_end|>");
  EXPECT_EQ(token_text_to_bytes("\xE4\xBD\xA0"), "\xE4\xBD\xA0");  // 你
}

TEST(TokenizerNormalize, NfcComposesAndKeepsNormalizedTextUncopied) {
  std::string storage;
  const std::string_view already = "Caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD";
  EXPECT_EQ(normalize_nfc(already, storage).data(), already.data());
  EXPECT_EQ(normalize_nfc("Cafe\xCC\x81", storage), "Caf\xC3\xA9");
  EXPECT_EQ(normalize_nfc("\xE1\x84\x80\xE1\x85\xA1", storage), "\xEA\xB0\x80");  // Hangul jamo -> 가
}

TEST(TokenizerPreTokenizer, SplitsAsQwen2) {
  const PreTokenizer pre_tokenizer{std::string(kQwen2Pattern)};
  EXPECT_EQ(words_of(pre_tokenizer, "Hello world!"), (std::vector<std::string>{"Hello", " world", "!"}));
  EXPECT_EQ(words_of(pre_tokenizer, "I've 123"), (std::vector<std::string>{"I", "'ve", " ", "1", "2", "3"}));
  // \s+(?!\S): a run of spaces leaves its last one to the next word.
  EXPECT_EQ(words_of(pre_tokenizer, "a   b"), (std::vector<std::string>{"a", "  ", " b"}));
  EXPECT_EQ(words_of(pre_tokenizer, "a \n\n b"), (std::vector<std::string>{"a", " \n\n", " b"}));
  EXPECT_EQ(words_of(pre_tokenizer, "x  "), (std::vector<std::string>{"x", "  "}));
  // U+3000 (ideographic space) is whitespace, U+180E (Mongolian vowel separator) is not (Oniguruma).
  EXPECT_EQ(words_of(pre_tokenizer,
                     "a\xE3\x80\x80\xE3\x80\x80"
                     "b"),
            (std::vector<std::string>{"a", "\xE3\x80\x80",
                                      "\xE3\x80\x80"
                                      "b"}));
  EXPECT_EQ(words_of(pre_tokenizer, "a.\xE1\xA0\x8E"), (std::vector<std::string>{"a", ".\xE1\xA0\x8E"}));
}

TEST(TokenizerPreTokenizer, AsciiShortcutSplitsExactlyAsPcre2) {
  const PreTokenizer fast{std::string(kQwen2Pattern)};
  const PreTokenizer pcre2_only{std::string(kQwen2Pattern), "test", /*ascii_shortcut=*/false};
  ASSERT_TRUE(fast.uses_ascii_shortcut());
  ASSERT_FALSE(pcre2_only.uses_ascii_shortcut());
  // Every ASCII class the shortcut distinguishes, contractions in both cases, and the non-ASCII
  // characters that border its decisions (letters, Unicode spaces, U+017F which matches 's').
  const std::vector<std::string> pool = {"a",
                                         "Z",
                                         "q",
                                         "0",
                                         "7",
                                         " ",
                                         " ",
                                         " ",
                                         "\t",
                                         "\n",
                                         "\r",
                                         "\v",
                                         "\f",
                                         "'",
                                         "'",
                                         "s",
                                         "S",
                                         "t",
                                         "re",
                                         "VE",
                                         "lL",
                                         "m",
                                         "D",
                                         "(",
                                         ".",
                                         "!",
                                         "-",
                                         "_",
                                         "\x01",
                                         "\x1c",
                                         "\x7f",
                                         "\xC3\xA9",
                                         "\xC5\xBF",
                                         "\xC2\xA0",
                                         "\xE3\x80\x80",
                                         "\xC2\x85",
                                         "\xE4\xBD\xA0",
                                         "\xF0\x9F\xA6\x99",
                                         "\xCC\x81",
                                         "\xC2\xB2",
                                         "\xE2\x80\x94"};
  std::mt19937 random(42);
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    const int length = 1 + static_cast<int>(random() % 24);
    for (int index = 0; index < length; ++index) text += pool[random() % pool.size()];
    ASSERT_EQ(words_of(fast, text), words_of(pcre2_only, text)) << "text: " << text;
  }
}

TEST(TokenizerPreTokenizer, TranslatesWhitespaceEscapesOnly) {
  EXPECT_EQ(translate_whitespace_escapes(R"(a\d)"), R"(a\d)");
  EXPECT_NE(translate_whitespace_escapes(R"(\s)").find(R"(\x{3000})"), std::string::npos);
  EXPECT_EQ(translate_whitespace_escapes(R"(\Q\s\E)"), R"(\Q\s\E)");
  EXPECT_EQ(translate_whitespace_escapes(R"([^\S])"), R"([^\S])");
  EXPECT_EQ(translate_whitespace_escapes(R"(\S)").substr(0, 2), "[^");
  EXPECT_THROW(PreTokenizer("(unclosed"), ConfigError);
}

TEST(TokenizerAddedTokens, LeftmostLongestWithStripping) {
  std::vector<AddedToken> tokens(3);
  tokens[0].id = 10, tokens[0].content = "<a>";
  tokens[1].id = 11, tokens[1].content = "<a><b>";
  tokens[2].id = 12, tokens[2].content = "<c>", tokens[2].lstrip = tokens[2].rstrip = true;
  const AddedTokenMatcher matcher(tokens, [](const AddedToken&) { return true; });
  std::vector<TextSpan> spans;
  const std::string text = "x<a><b><a>y  <c>  z";
  matcher.split(text, spans);
  ASSERT_EQ(spans.size(), 6u);
  EXPECT_EQ(spans[0].token_id, -1);
  EXPECT_EQ(spans[1].token_id, 11);  // the longer token wins at the same start
  EXPECT_EQ(spans[2].token_id, 10);
  EXPECT_EQ(text.substr(spans[3].offset, spans[3].length), "y");
  EXPECT_EQ(spans[4].token_id, 12);
  EXPECT_EQ(text.substr(spans[4].offset, spans[4].length), "  <c>  ");  // whitespace taken on both sides
  EXPECT_EQ(text.substr(spans[5].offset, spans[5].length), "z");
}

TEST(TokenizerBpe, MergesByRankLeftmostFirst) {
  std::vector<std::pair<std::string, int32_t>> vocab;
  for (int byte = 0; byte < 256; ++byte) {
    std::string spelling;
    append_utf8(spelling, byte_to_codepoint(static_cast<uint8_t>(byte)));
    vocab.emplace_back(spelling, byte);
  }
  vocab.emplace_back("aa", 256);
  vocab.emplace_back("ab", 257);
  vocab.emplace_back("aab", 258);
  const BpeModel model(vocab, {{"a", "a"}, {"a", "b"}, {"aa", "b"}}, "test");
  BpeScratch scratch;
  const auto encode = [&](std::string_view word) {
    std::vector<int32_t> ids;
    model.encode_word(word, ids, scratch);
    return ids;
  };
  EXPECT_EQ(encode("aaa"), (std::vector<int32_t>{256, 'a'}));  // the leftmost pair of equal rank first
  EXPECT_EQ(encode("aab"), (std::vector<int32_t>{258}));       // "a a" outranks "a b"
  EXPECT_EQ(encode("ab"), (std::vector<int32_t>{257}));
  // Long words take the heap path; it must agree with the short-word path piecewise.
  std::string long_word;
  for (int repeat = 0; repeat < 20; ++repeat) long_word += "aab";
  std::vector<int32_t> expected(20, 258);
  EXPECT_EQ(encode(long_word), expected);
  EXPECT_THROW(BpeModel(vocab, {{"a", "zz"}}, "test"), ConfigError);
}

TEST(TokenizerReference, LlamaCppVectors) {
  const auto tokenizer = reference_tokenizer();
  const auto inputs =
      split(read_file(kTokenizerDir / "llama_cpp_vectors" / "ggml-vocab-qwen2.gguf.inp"), "\n__ggml_vocab_test__\n");
  const auto outputs = split(read_file(kTokenizerDir / "llama_cpp_vectors" / "ggml-vocab-qwen2.gguf.out"), "\n");
  ASSERT_EQ(inputs.size(), 47u);  // 46 cases and the empty text after the last separator
  for (size_t index = 0; index + 1 < inputs.size(); ++index) {
    std::vector<int64_t> expected;
    std::istringstream line(outputs[index]);
    for (int64_t id; line >> id;) expected.push_back(id);
    const std::vector<int32_t> ids = tokenizer->encode(inputs[index]);
    EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), expected) << "case " << index;
    EXPECT_EQ(tokenizer->decode(expected), inputs[index]) << "case " << index;
  }
}

TEST(TokenizerReference, SpecialTokensAndDecoding) {
  const auto tokenizer = reference_tokenizer();
  EXPECT_EQ(tokenizer->size_with_added(), 151649u);
  EXPECT_EQ(tokenizer->model().size(), 151643u);
  EXPECT_EQ(tokenizer->token_to_id("<|AUDIO|>"), 151646);
  EXPECT_EQ(tokenizer->encode("a<|im_end|>b"), (std::vector<int32_t>{64, 151645, 65}));
  const std::vector<int32_t> split_ids = tokenizer->encode("<|im_end|>", /*split_special_tokens=*/true);
  EXPECT_GT(split_ids.size(), 1u);
  EXPECT_EQ(split_ids.front(), 27);  // '<' alone
  EXPECT_EQ(tokenizer->decode(std::vector<int64_t>(split_ids.begin(), split_ids.end())), "<|im_end|>");
  const std::vector<int64_t> ids = {9707, 151645, 1879};
  EXPECT_EQ(tokenizer->decode(ids), "Hello<|im_end|> world");
  EXPECT_EQ(tokenizer->decode(ids, /*skip_special_tokens=*/true), "Hello world");
  EXPECT_THROW(tokenizer->decode(std::vector<int64_t>{151649}), InvalidArgument);
  EXPECT_THROW(tokenizer->decode(std::vector<int64_t>{-1}), InvalidArgument);
  EXPECT_THROW(tokenizer->encode("bad \xFF utf-8"), InvalidArgument);
}

TEST(TokenizerReference, IncrementalDecoderHoldsBackUnfinishedCharacters) {
  const auto tokenizer = reference_tokenizer();
  const std::string text = "Hi \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F \xE5\xBC\x80\xE5\xBF\x83";
  const std::vector<int32_t> ids = tokenizer->encode(text);
  IncrementalDecoder decoder(tokenizer, /*skip_special_tokens=*/true);
  std::string streamed;
  for (const int32_t id : ids) {
    const std::string piece = decoder.add(id);
    EXPECT_EQ(find_invalid_utf8(piece), std::string_view::npos);
    streamed += piece;
  }
  streamed += decoder.flush();
  EXPECT_EQ(streamed, text);
}

TEST(TokenizerReference, ThreadsShareOneTokenizer) {
  const auto tokenizer = Tokenizer::from_directory(kTokenizerDir);  // fresh word cache
  const std::string text = read_file(kTokenizerDir / "llama_cpp_vectors" / "ggml-vocab-qwen2.gguf.inp");
  const std::vector<int32_t> expected = reference_tokenizer()->encode(text);
  std::vector<int> agree(4, 0);
  std::vector<std::thread> threads;
  for (int worker = 0; worker < 4; ++worker)
    threads.emplace_back([&, worker] {
      for (int repeat = 0; repeat < 20; ++repeat) agree[worker] += tokenizer->encode(text) == expected;
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(agree, (std::vector<int>{20, 20, 20, 20}));
  EXPECT_GT(tokenizer->cached_words(), 0u);
}

TEST(TokenizerFiles, MissingAndMalformed) {
  const auto folder = std::filesystem::temp_directory_path() / "qwen2audio_tokenizer_test";
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder);
  EXPECT_THROW(TokenizerFiles::in_directory(folder), ConfigError);
  std::ofstream(folder / "vocab.json") << "{\"a\": 0";
  std::ofstream(folder / "merges.txt") << "#version: 0.2\n";
  try {
    Tokenizer::from_directory(folder);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("vocab.json"), std::string::npos) << error.what();
  }
  std::filesystem::remove_all(folder);
}

}  // namespace
}  // namespace qwen2audio::text
