// The int4 gemv tile on 256-bit integer dot products, shared by the AVX2 and AVX-512 files. Each
// includes it inside its own `#pragma GCC target` region and anonymous namespace, after
// <immintrin.h> and gemv_internal.h, so every tier compiles its own copy for its own instructions.
// Not a public header (it has no include guard on purpose: one inclusion per file).
//
// One step handles a 32-element block: its 16 bytes of codes become 32 unsigned bytes in element
// order ([low nibbles | high nibbles]), multiplied with the group's int8 activations and summed in
// fours into eight int32 lanes (pmaddubsw + pmaddwd, or one vpdpbusd with VNNI), exactly, across
// the whole group. At the end of a group its integer sum is converted once and scaled by the weight
// and activation scales; the codes' offset of 8 comes off through the activations' level sums.

template <bool Vnni>
inline __m256i int4_block_dot(__m256i sum, __m256i codes, __m256i activations) {
  if constexpr (Vnni) {
    return _mm256_dpbusd_epi32(sum, codes, activations);
  } else {
    const __m256i pairs = _mm256_maddubs_epi16(codes, activations);  // <= 2 * 15 * 127: no saturation
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
}

inline __m256i int4_block_codes(const uint8_t* bytes) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

inline float int4_horizontal_sum(__m256 value) {
  const __m128 folded = _mm_add_ps(_mm256_castps256_ps128(value), _mm256_extractf128_ps(value, 1));
  const __m128 pairs = _mm_add_ps(folded, _mm_movehl_ps(folded, folded));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// The scale of group `group` for activation row `row` and weight row `column`, and the offset
// term it multiplies (8 * the activations' level sum).
inline float int4_group_scale(const Problem& p, int64_t row, int64_t column, int64_t group) {
  return p.w.scales[column * p.w.scales_ld + group] * p.x_scales[row * p.ldx_groups + group];
}
inline float int4_group_offset(const Problem& p, int64_t row, int64_t group) {
  return 8.0f * static_cast<float>(p.x_level_sums[row * p.ldx_groups + group]);
}

template <int R, int C, bool Vnni>
void int4_tile(const Problem& p, int64_t row0, int64_t column) {
  const auto* base = static_cast<const uint8_t*>(p.w.data);
  const int64_t row_bytes = p.w.ld / 2;
  __m256 total[R][C];
  float correction[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      total[r][c] = _mm256_setzero_ps();
      correction[r][c] = 0.0f;
    }
  const int64_t group_size = p.w.group_size;
  for (int64_t start = 0, group = 0; start < p.k; start += group_size, ++group) {
    const int64_t end = std::min(p.k, start + group_size);
    __m256i sum[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sum[r][c] = _mm256_setzero_si256();
    for (int64_t i = start; i < end; i += 32) {
      __m256i activations[R];
      for (int r = 0; r < R; ++r)
        activations[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.x_q + (row0 + r) * p.ldx_q + i));
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        const uint8_t* bytes = base + (column + c) * row_bytes + (i >> 1);
        if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(bytes) + p.prefetch, _MM_HINT_T0);
        const __m256i codes = int4_block_codes(bytes);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) sum[r][c] = int4_block_dot<Vnni>(sum[r][c], codes, activations[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const float offset = int4_group_offset(p, row0 + r, group);
      for (int c = 0; c < C; ++c) {
        const float scale = int4_group_scale(p, row0 + r, column + c, group);
        total[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][c]), _mm256_set1_ps(scale), total[r][c]);
        correction[r][c] += scale * offset;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) p.store(row0 + r, column + c, int4_horizontal_sum(total[r][c]) - correction[r][c]);
}

// Rows in passes of R (the remainder one at a time), columns in tiles of 4.
template <int R, bool Vnni>
void int4_range(const Problem& p, int64_t begin, int64_t end) {
  int64_t column = begin;
  auto rows = [&]<int Columns>() {
    int64_t row = 0;
    for (; row + R <= p.m; row += R) int4_tile<R, Columns, Vnni>(p, row, column);
    for (; row < p.m; ++row) int4_tile<1, Columns, Vnni>(p, row, column);
  };
  for (; column + 4 <= end; column += 4) rows.template operator()<4>();
  for (; column < end; ++column) rows.template operator()<1>();
}
