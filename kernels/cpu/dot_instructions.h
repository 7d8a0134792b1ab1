#pragma once

// The accumulating dot-product instructions of AVX512-VNNI and AVX512-BF16, for kernels compiled
// with those targets (include after <immintrin.h>, inside their target region). GCC 12 keeps the
// intrinsics' accumulator in one register and computes into another, copying every accumulator
// twice per product (a panel tile's inner loop had 26 moves beside its 12 products; the BF16 gemv
// tile spilled its accumulators to the stack); written out, the instruction accumulates in place.
// Clang's intrinsics do not need it.
namespace qwen2audio::kernels {

// acc += four products of the unsigned bytes of `a` and the signed bytes of `b` per int32 lane.
[[gnu::always_inline]] inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
#if defined(__clang__)
  acc = _mm512_dpbusd_epi32(acc, a, b);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#endif
}

[[gnu::always_inline]] inline void dpbusd(__m256i& acc, __m256i a, __m256i b) {
#if defined(__clang__)
  acc = _mm256_dpbusd_epi32(acc, a, b);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#endif
}

// acc += two products of BF16 pairs of `a` and `b` per float32 lane.
[[gnu::always_inline]] inline void dpbf16(__m512& acc, __m512bh a, __m512bh b) {
#if defined(__clang__)
  acc = _mm512_dpbf16_ps(acc, a, b);
#else
  asm("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#endif
}

}  // namespace qwen2audio::kernels
