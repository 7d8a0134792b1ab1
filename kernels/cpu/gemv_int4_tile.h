// The int4 gemv tile on 256-bit integer dot products, shared by the AVX2 and AVX-512 files. Each
// includes it inside its own `#pragma GCC target` region and anonymous namespace, after
// <immintrin.h> and gemv_internal.h, so every tier compiles its own copy for its own instructions.
// Not a public header (it has no include guard on purpose: one inclusion per file).
//
// Activations come interleaved (Problem::x_q_interleaved): each whole 64-element chunk of a group
// holds its elements in the order 0-15, 32-47, 16-31, 48-63. A chunk's 32 bytes of codes then need
// no lane shuffle: their low nibbles are elements 0-15 and 32-47 (one 128-bit lane each), their
// high nibbles 16-31 and 48-63, matching the chunk's first and second 32 activations. Each half is
// multiplied with its activations and summed in pairs into int16 (pmaddubsw), the two halves added
// (at most 4 * 15 * 127 per lane), then summed in pairs into eight int32 lanes (pmaddwd), exactly,
// across the whole group. A group's trailing 32-element block (k or group_size not a multiple of
// 64) keeps its natural order and takes one 16-byte load. At the end of a group its integer sum is
// converted once and scaled by the weight and activation scales; the codes' offset of 8 comes off
// through the activations' level sums.

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

template <int R, int C>
void int4_tile(const Problem& p, int64_t row0, int64_t column) {
  const auto* base = static_cast<const uint8_t*>(p.w.data);
  const int64_t row_bytes = p.w.ld / 2;
  const __m256i nibble = _mm256_set1_epi8(15);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 total[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) total[r][c] = _mm256_setzero_ps();
  const int64_t group_size = p.w.group_size;
  for (int64_t start = 0, group = 0; start < p.k; start += group_size, ++group) {
    const int64_t end = std::min(p.k, start + group_size);
    __m256i sum[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sum[r][c] = _mm256_setzero_si256();
    int64_t i = start;
    // Two chunks (one 64-byte line of each weight row) a step: four pmaddubsw results add up in
    // int16 (at most 8 * 15 * 127) before one pmaddwd widens them.
    for (; i + 128 <= end; i += 128) {
      __m256i activations[R][4];
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 4; ++j)
          activations[r][j] =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.x_q + (row0 + r) * p.ldx_q + i + int64_t{32} * j));
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        const uint8_t* bytes = base + (column + c) * row_bytes + (i >> 1);
        if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(bytes) + p.prefetch, _MM_HINT_T0);
        const __m256i packed0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
        const __m256i packed1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + 32));
        const __m256i low0 = _mm256_and_si256(packed0, nibble);
        const __m256i high0 = _mm256_and_si256(_mm256_srli_epi16(packed0, 4), nibble);
        const __m256i low1 = _mm256_and_si256(packed1, nibble);
        const __m256i high1 = _mm256_and_si256(_mm256_srli_epi16(packed1, 4), nibble);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m256i first = _mm256_add_epi16(_mm256_maddubs_epi16(low0, activations[r][0]),
                                                 _mm256_maddubs_epi16(high0, activations[r][1]));
          const __m256i second = _mm256_add_epi16(_mm256_maddubs_epi16(low1, activations[r][2]),
                                                  _mm256_maddubs_epi16(high1, activations[r][3]));
          sum[r][c] = _mm256_add_epi32(sum[r][c], _mm256_madd_epi16(_mm256_add_epi16(first, second), ones));
        }
      }
    }
    if (i + 64 <= end) {
      __m256i first[R], second[R];
      for (int r = 0; r < R; ++r) {
        const int8_t* x = p.x_q + (row0 + r) * p.ldx_q + i;
        first[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
        second[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32));
      }
      for (int c = 0; c < C; ++c) {
        const __m256i packed =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + (column + c) * row_bytes + (i >> 1)));
        const __m256i low = _mm256_and_si256(packed, nibble);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
        for (int r = 0; r < R; ++r) {
          const __m256i pairs =
              _mm256_add_epi16(_mm256_maddubs_epi16(low, first[r]), _mm256_maddubs_epi16(high, second[r]));
          sum[r][c] = _mm256_add_epi32(sum[r][c], _mm256_madd_epi16(pairs, ones));
        }
      }
      i += 64;
    }
    if (i < end) {
      __m256i activations[R];
      for (int r = 0; r < R; ++r)
        activations[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.x_q + (row0 + r) * p.ldx_q + i));
      for (int c = 0; c < C; ++c) {
        const __m256i codes = int4_block_codes(base + (column + c) * row_bytes + (i >> 1));
        for (int r = 0; r < R; ++r)
          sum[r][c] = _mm256_add_epi32(sum[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(codes, activations[r]), ones));
      }
    }
    for (int r = 0; r < R; ++r) {
      // The offset comes off one lane of the group's sum, before the scale: no scalar chain.
      const __m256i offset =
          _mm256_setr_epi32(8 * p.x_level_sums[(row0 + r) * p.ldx_groups + group], 0, 0, 0, 0, 0, 0, 0);
      for (int c = 0; c < C; ++c) {
        const float scale = int4_group_scale(p, row0 + r, column + c, group);
        total[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum[r][c], offset)), _mm256_set1_ps(scale),
                                      total[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) p.store(row0 + r, column + c, int4_horizontal_sum(total[r][c]));
}

// Rows in passes of R (the remainder one at a time), columns in tiles of 4.
template <int R>
void int4_range(const Problem& p, int64_t begin, int64_t end) {
  int64_t column = begin;
  auto rows = [&]<int Columns>() {
    int64_t row = 0;
    for (; row + R <= p.m; row += R) int4_tile<R, Columns>(p, row, column);
    for (; row < p.m; ++row) int4_tile<1, Columns>(p, row, column);
  };
  for (; column + 4 <= end; column += 4) rows.template operator()<4>();
  for (; column < end; ++column) rows.template operator()<1>();
}
