#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pre_tokenizer.h"

#include <pcre2.h>

#include <array>
#include <stdexcept>

#include "runtime/errors.h"

namespace qwen2audio::text {
namespace {

// Unicode White_Space (Oniguruma's \s for UTF-8 text), written for use inside a class.
constexpr std::string_view kWhiteSpaceSet =
    R"(\x{9}-\x{d}\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

// Character classes of ASCII bytes as Qwen2's pattern sees them (\s is White_Space: 09-0D, 20).
enum AsciiClass : uint8_t { kOther, kLetter, kDigit, kSpace, kLineBreak, kNonAscii };

constexpr std::array<uint8_t, 256> make_ascii_classes() {
  std::array<uint8_t, 256> table{};
  for (int byte = 0; byte < 256; ++byte) {
    uint8_t value = kOther;
    if (byte >= 0x80)
      value = kNonAscii;
    else if ((byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z'))
      value = kLetter;
    else if (byte >= '0' && byte <= '9')
      value = kDigit;
    else if (byte == '\r' || byte == '\n')
      value = kLineBreak;
    else if (byte == ' ' || byte == '\t' || byte == '\v' || byte == '\f')
      value = kSpace;
    table[byte] = value;
  }
  return table;
}

constexpr std::array<uint8_t, 256> kAsciiClass = make_ascii_classes();
constexpr size_t kUndecided = 0;

// The length of the match of Qwen2's pattern at `pos`, worked out from ASCII alone, or kUndecided
// when a character that needs Unicode properties could change it (PCRE2 then decides). Every
// character starts a match of some alternative, so a match always begins at `pos`; the cases follow
// the alternatives in order:
//   1 (?i:'s|'t|'re|'ve|'m|'ll|'d)   2 [^\r\n\p{L}\p{N}]?\p{L}+   3 \p{N}
//   4  ?[^\s\p{L}\p{N}]+[\r\n]*       5 \s*[\r\n]+                  6 \s+(?!\S)   7 \s+
// The shortcut is checked against PCRE2 on random text by the tests.
size_t qwen2_ascii_match(std::string_view text, size_t pos) {
  const auto* data = reinterpret_cast<const uint8_t*>(text.data());
  const size_t size = text.size();
  const auto type = [&](size_t at) { return kAsciiClass[data[at]]; };
  // End of the run of ASCII letters from `at`, or kUndecided if a non-ASCII character (perhaps a
  // letter) follows it.
  const auto letters_end = [&](size_t at) {
    while (at < size && type(at) == kLetter) ++at;
    return at < size && type(at) == kNonAscii ? kUndecided : at;
  };
  // Alternative 4 from `at`: a run of "other" characters, then line breaks.
  const auto symbols_end = [&](size_t at) {
    while (at < size && type(at) == kOther) ++at;
    if (at < size && type(at) == kNonAscii) return kUndecided;
    while (at < size && type(at) == kLineBreak) ++at;
    return at;
  };
  const auto relative = [&](size_t end) { return end == kUndecided ? kUndecided : end - pos; };

  const uint8_t first = type(pos);
  switch (first) {
    case kNonAscii:
      return kUndecided;
    case kLetter:
      return relative(letters_end(pos));
    case kDigit:
      return 1;
    case kOther: {
      if (data[pos] == '\'' && pos + 1 < size) {
        const uint8_t next = data[pos + 1];
        if (next >= 0x80) return kUndecided;  // U+017F matches 's' caselessly
        const uint8_t lower = next | 0x20;
        if (lower == 's' || lower == 't' || lower == 'm' || lower == 'd') return 2;
        if (pos + 2 < size && (lower == 'r' || lower == 'v' || lower == 'l')) {
          const uint8_t third = data[pos + 2];
          if (third >= 0x80) return kUndecided;
          if ((third | 0x20) == (lower == 'l' ? 'l' : 'e')) return 3;
        }
      }
      if (pos + 1 < size) {
        if (type(pos + 1) == kNonAscii) return kUndecided;
        if (type(pos + 1) == kLetter) return relative(letters_end(pos + 1));
      }
      return relative(symbols_end(pos));
    }
    default:
      break;  // whitespace below
  }
  if (first == kSpace && pos + 1 < size) {
    const uint8_t next = type(pos + 1);
    if (next == kNonAscii) return kUndecided;
    if (next == kLetter) return relative(letters_end(pos + 1));                     // alternative 2
    if (data[pos] == ' ' && next == kOther) return relative(symbols_end(pos + 1));  // alternative 4
  }
  size_t end = pos;
  constexpr size_t kNone = std::string_view::npos;
  size_t last_line_break = kNone;
  for (; end < size && (type(end) == kSpace || type(end) == kLineBreak); ++end)
    if (type(end) == kLineBreak) last_line_break = end;
  if (end < size && type(end) == kNonAscii) return kUndecided;     // perhaps more (Unicode) whitespace
  if (last_line_break != kNone) return last_line_break + 1 - pos;  // alternative 5
  if (end == size || end - pos == 1) return end - pos;             // 6 at the end, or 7
  return end - pos - 1;                                            // 6: the last space stays with the next word
}

}  // namespace

std::string translate_whitespace_escapes(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 128);
  bool in_class = false;
  size_t pos = 0;
  while (pos < pattern.size()) {
    const char c = pattern[pos];
    if (c == '\\' && pos + 1 < pattern.size()) {
      const char escaped = pattern[pos + 1];
      if (escaped == 'Q') {  // \Q...\E is literal text: copy it untouched
        const size_t end = pattern.find("\\E", pos + 2);
        const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(pos, stop - pos));
        pos = stop;
        continue;
      }
      if (escaped == 's') {
        if (!in_class) out.push_back('[');
        out.append(kWhiteSpaceSet);
        if (!in_class) out.push_back(']');
      } else if (escaped == 'S' && !in_class) {
        out.append("[^").append(kWhiteSpaceSet).push_back(']');
      } else {
        // \S inside a class has no set form PCRE2 could take there; it is left to PCRE2 (it differs
        // from Oniguruma only at U+180E).
        out.append(pattern.substr(pos, 2));
      }
      pos += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      ++pos;
      if (pos < pattern.size() && pattern[pos] == '^') out.push_back(pattern[pos++]);
      if (pos < pattern.size() && pattern[pos] == ']') out.push_back(pattern[pos++]);  // literal ']'
      continue;
    }
    if (in_class && c == '[' && pos + 1 < pattern.size() && pattern[pos + 1] == ':') {
      const size_t end = pattern.find(":]", pos + 2);
      const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
      out.append(pattern.substr(pos, stop - pos));
      pos = stop;
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
    ++pos;
  }
  return out;
}

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(std::string pattern, const std::string& origin, bool ascii_shortcut)
    : pattern_(std::move(pattern)), compiled_(std::make_unique<Compiled>()) {
  ascii_shortcut_ = ascii_shortcut && pattern_ == kQwen2Pattern;
  const std::string translated = translate_whitespace_escapes(pattern_);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error_code, &error_offset, nullptr);
  if (compiled_->code == nullptr)
    throw ConfigError(origin + ": the regular expression '" + pattern_ + "' does not compile: " +
                      pcre2_message(error_code) + " (at offset " + std::to_string(error_offset) + ")");
  // Without JIT (a PCRE2 built without it) the interpreter gives the same matches, only slower.
  compiled_->jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text, std::vector<Piece>& pieces) const {
  if (text.empty()) return;
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr));
  if (!match) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t size = text.size();
  size_t start = 0;    // where the next search begins
  size_t covered = 0;  // end of the last piece emitted
  while (start < size) {
    if (ascii_shortcut_ && start == covered) {
      const size_t length = qwen2_ascii_match(text, start);
      if (length != kUndecided) {
        pieces.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(length)});
        covered = start += length;
        continue;
      }
    }
    // The caller validated the UTF-8 once; PCRE2 would otherwise re-check the whole subject on
    // every call, quadratic in the text length.
    const int rc =
        compiled_->jit
            ? pcre2_jit_match(compiled_->code, subject, size, start, PCRE2_NO_UTF_CHECK, match.get(), nullptr)
            : pcre2_match(compiled_->code, subject, size, start, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw InvalidArgument("pre-tokenizer regular expression failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t match_begin = ovector[0];
    const size_t match_end = ovector[1];
    if (match_end == match_begin) {
      // An empty match yields no piece; step over one whole character.
      start = match_end + 1;
      while (start < size && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
      continue;
    }
    if (match_begin > covered)
      pieces.push_back({static_cast<uint32_t>(covered), static_cast<uint32_t>(match_begin - covered)});
    pieces.push_back({static_cast<uint32_t>(match_begin), static_cast<uint32_t>(match_end - match_begin)});
    covered = start = match_end;
  }
  if (covered < size) pieces.push_back({static_cast<uint32_t>(covered), static_cast<uint32_t>(size - covered)});
}

}  // namespace qwen2audio::text
