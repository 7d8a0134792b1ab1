// libFuzzer target: encoding and decoding with Qwen2's real tokenizer (../shared/reference/tokenizer,
// or $QWEN2AUDIO_FUZZ_TOKENIZER_DIR). The first input byte picks the direction:
// - even: the rest is text. Ill-formed UTF-8 must be refused with InvalidArgument; well-formed text
//   must encode to valid ids that decode back to its NFC form (byte-level BPE loses nothing).
// - odd: the rest is a sequence of little-endian 24-bit ids (about half past the vocabulary end).
//   decode either names a bad id or returns well-formed UTF-8, and the incremental decoder's pieces
//   joined equal decode of the same ids, with and without special tokens.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/errors.h"
#include "text/incremental_decoder.h"
#include "text/tokenizer.h"
#include "text/unicode_normalize.h"
#include "text/utf8.h"

namespace {

using qwen2audio::InvalidArgument;
using qwen2audio::text::Tokenizer;

std::shared_ptr<const Tokenizer> tokenizer;

void check(bool condition, const char* what) {
  if (!condition) {
    fprintf(stderr, "fuzz_tokenizer: property violated: %s\n", what);
    std::abort();
  }
}

void fuzz_encode(std::string_view text) {
  std::vector<int32_t> ids;
  try {
    ids = tokenizer->encode(text);
  } catch (const InvalidArgument&) {
    check(qwen2audio::text::find_invalid_utf8(text) != std::string_view::npos, "well-formed text refused");
    return;
  }
  check(qwen2audio::text::find_invalid_utf8(text) == std::string_view::npos, "ill-formed text accepted");
  std::vector<int64_t> wide(ids.begin(), ids.end());
  for (const int64_t id : wide) check(tokenizer->has_id(id), "encode produced an unknown id");
  std::string storage;
  const std::string_view normalized = qwen2audio::text::normalize_nfc(text, storage);
  check(tokenizer->decode(wide) == normalized, "decode(encode(text)) differs from NFC(text)");
  // With special tokens split as text, the round trip still holds.
  ids = tokenizer->encode(text, /*split_special_tokens=*/true);
  wide.assign(ids.begin(), ids.end());
  check(tokenizer->decode(wide) == normalized, "round trip with split_special_tokens failed");
}

void fuzz_decode(const uint8_t* data, size_t size) {
  const int64_t limit = tokenizer->id_limit();
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 3 <= size; i += 3) {
    const int64_t raw = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16);
    // Mostly valid ids, some just past the end, a few negative.
    ids.push_back(raw % (limit + limit / 64) - (data[i] == 0xff ? limit : 0));
  }
  for (const bool skip : {false, true}) {
    std::string whole;
    try {
      whole = tokenizer->decode(ids, skip);
    } catch (const InvalidArgument&) {
      bool any_bad = false;
      for (const int64_t id : ids) any_bad |= !tokenizer->has_id(id);
      check(any_bad, "decode refused valid ids");
      // The incremental decoder refuses the same id and stays usable.
      qwen2audio::text::IncrementalDecoder decoder(tokenizer, skip);
      for (const int64_t id : ids) {
        try {
          decoder.add(id);
        } catch (const InvalidArgument&) {
          check(!tokenizer->has_id(id), "incremental decoder refused a valid id");
        }
      }
      (void)decoder.flush();
      continue;
    }
    check(qwen2audio::text::find_invalid_utf8(whole) == std::string::npos, "decode returned ill-formed UTF-8");
    qwen2audio::text::IncrementalDecoder decoder(tokenizer, skip);
    std::string streamed;
    for (const int64_t id : ids) {
      const std::string piece = decoder.add(id);
      check(qwen2audio::text::find_invalid_utf8(piece) == std::string::npos, "a streamed piece is ill-formed");
      streamed += piece;
    }
    streamed += decoder.flush();
    check(decoder.pending_bytes() == 0, "flush left bytes behind");
    check(streamed == whole, "incremental pieces differ from decode");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* override_dir = std::getenv("QWEN2AUDIO_FUZZ_TOKENIZER_DIR");
  tokenizer = Tokenizer::from_directory(override_dir ? override_dir : QWEN2AUDIO_SHARED_REFERENCE_DIR "/tokenizer");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0)
    fuzz_encode(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  else
    fuzz_decode(data + 1, size - 1);
  return 0;
}
