#pragma once

// The accumulating dot-product instructions of AVX512-VNNI, AVX-VNNI and AVX512-BF16, for kernels
// compiled with those targets (include after <immintrin.h>, inside their target region). GCC 12
// keeps the intrinsics' accumulator in one register and computes into another, copying every
// accumulator twice per product (a panel tile's inner loop had 26 moves beside its 12 products; the
// BF16 gemv tile spilled its accumulators to the stack); written out, the instruction accumulates in
// place. Clang's intrinsics do not need it.
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

// The same product in AVX-VNNI's encoding (VEX), for kernels compiled for AVX2 only: written as asm
// for every compiler, so that nothing else in such a kernel can become a VNNI instruction (it also
// serves CPUs without any), and with "{vex}" (its braces escaped from GCC's asm dialect syntax),
// without which the assembler picks the EVEX encoding of AVX512-VNNI, an invalid instruction on CPUs
// that have only AVX-VNNI (Alder Lake and later cores without AVX-512). The "x" operands keep to the
// registers a VEX instruction can name.
[[gnu::always_inline]] inline void dpbusd_vex(__m256i& acc, __m256i a, __m256i b) {
  asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
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
