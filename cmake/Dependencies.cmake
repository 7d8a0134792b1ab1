# Libraries the engine links beyond the core set: each found through pkg-config or its CMake
# package, as Debian ships them.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SNDFILE REQUIRED IMPORTED_TARGET sndfile)
pkg_check_modules(SOXR REQUIRED IMPORTED_TARGET soxr)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# ICU for Unicode normalization (NFC) in the tokenizer.
pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc)
# Debian's dnnl CMake package insists on OpenCL headers for its GPU runtime, which the CPU engine
# never uses; the library and its header are all we need.
find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp REQUIRED)
find_library(DNNL_LIBRARY dnnl REQUIRED)
target_include_directories(qwen2audio_engine SYSTEM PUBLIC ${DNNL_INCLUDE_DIR})
target_link_libraries(qwen2audio_engine PUBLIC PkgConfig::SNDFILE PkgConfig::SOXR PkgConfig::PCRE2 PkgConfig::ICU
  ${DNNL_LIBRARY})
