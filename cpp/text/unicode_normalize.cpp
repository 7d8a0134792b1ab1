#include "text/unicode_normalize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <climits>
#include <string>

#include "runtime/errors.h"

namespace qwen2audio::text {
namespace {

const icu::Normalizer2& nfc_instance() {
  UErrorCode status = U_ZERO_ERROR;
  // ICU owns this immutable singleton; it is safe to use from any thread.
  const icu::Normalizer2* instance = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || instance == nullptr)
    throw std::runtime_error(std::string("ICU cannot load its NFC data: ") + u_errorName(status));
  return *instance;
}

bool is_ascii(std::string_view text) {
  for (const char byte : text)
    if (static_cast<unsigned char>(byte) >= 0x80) return false;
  return true;
}

}  // namespace

std::string_view normalize_nfc(std::string_view text, std::string& storage) {
  if (is_ascii(text)) return text;
  // ICU measures strings in int32_t.
  if (text.size() > static_cast<size_t>(INT32_MAX))
    throw InvalidArgument("text of " + std::to_string(text.size()) + " bytes is too long to normalize (limit 2 GiB)");
  const icu::Normalizer2& nfc = nfc_instance();
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (nfc.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  storage.clear();
  storage.reserve(text.size() + text.size() / 8);
  icu::StringByteSink<std::string> sink(&storage);
  nfc.normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) throw InvalidArgument(std::string("NFC normalization failed: ") + u_errorName(status));
  return storage;
}

}  // namespace qwen2audio::text
