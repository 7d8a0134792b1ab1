#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/lane_vector.h"

namespace qwen2audio::kernels {

enum class DftPrecision { kFloat, kDouble };

// What the compiled kernel reads; built by RealDftPower.
template <typename T>
struct RealDftPlan {
  int length, n1, n2, half1, k2_count;
  const T* window;  // null: none
  const T* stage1;
  const T* twiddle;
  const T* stage2;
};

// Power spectrum |DFT(window * frame)|^2, bins 0..length/2, of lanes() real frames at once.
//
// How: the DFT is split Cooley-Tukey style, length = n1 * n2, into two small dense matrix
// products, with one frame per SIMD lane so every multiply-add serves several frames:
//   stage 1: for each residue r < n2, the n1-point DFT of x[r], x[r + n2], ... (real input, so
//            only its n1/2 + 1 non-redundant outputs);
//   stage 2: each wanted bin k combines the n2 stage-1 outputs of column k mod n1, times the
//            twiddle factors (tabulated).
// Both stages first fold mirrored inputs (i with n - i), which meet the same cosine and opposite
// sines: half the multiply-adds. For length 400 (Whisper) the split is 25 x 16, about 12.6k
// multiply-adds per vector of frames. Any length >= 2 works (a prime length is one direct stage).
//
// Why this and not an FFT library or one big GEMM (one thread, the 3000 frames of a 30 s clip,
// figures in bench/README.md): Eigen's FFT (kissfft) goes one frame at a time and took about
// 5 ms in float and 10 ms in double; a dense DFT-by-GEMM (oneDNN, 3000x400x402) does ~16x the
// arithmetic and took about 14 ms; this kernel, with frames across lanes, every step a full-width
// multiply-add and no shuffles, took about 2 ms in float and 3.6 ms in double on AVX2.
//
// Precision: kDouble (the default) computes in double (half the frames per vector) and rounds only
// the power to float. Float arithmetic leaves rounding noise near 1e-7 of a frame's energy, which
// after log10 reaches ~5e-5 in Whisper features at quiet bins next to loud ones - the size of
// torch's own float error, so the two could sum past the 1e-4 we promise; in double our features
// sit within ~1e-5 of the exact values and the gap to transformers is its own rounding.
class RealDftPower {
 public:
  // `window` (length values) multiplies each frame before the transform; empty means none. `isa`
  // fixes the vector width (tests pass each one the CPU has).
  RealDftPower(int length, const std::vector<float>& window, DftPrecision precision = DftPrecision::kDouble,
               Isa isa = best_isa());

  // Frames per call: the vector width in the chosen precision.
  int lanes() const;
  int length() const { return length_; }
  int num_bins() const { return length_ / 2 + 1; }
  int factor_n1() const { return n1_; }
  int factor_n2() const { return n2_; }
  // Size of the 64-byte aligned workspace `compute` needs.
  size_t workspace_bytes() const;

  // Lane l transforms first[l * frame_stride + i], i < length. `power` (64-byte aligned) receives
  // num_bins() rows of lanes() floats: power[k * lanes() + l] is bin k of frame l.
  void compute(const float* first, std::ptrdiff_t frame_stride, float* power, void* workspace) const;

 private:
  template <typename T>
  struct Tables {
    std::vector<T> window;   // [length], or empty
    std::vector<T> stage1;   // [n1][half1][cos, -sin] of 2 pi i1 k1 / n1
    std::vector<T> twiddle;  // [n1][n2][cos, -sin] of 2 pi k1 i2 / length
    std::vector<T> stage2;   // [n2][k2_count][cos, -sin] of 2 pi i2 k2 / n2
  };
  template <typename T>
  RealDftPlan<T> plan(const Tables<T>& tables) const;

  int length_;
  DftPrecision precision_;
  Isa isa_;
  int n1_ = 1;
  int n2_ = 1;
  int half1_ = 1;  // n1 / 2 + 1 stage-1 outputs per residue
  int k2_count_ = 1;
  Tables<float> tables_float_;
  Tables<double> tables_double_;
};

}  // namespace qwen2audio::kernels
