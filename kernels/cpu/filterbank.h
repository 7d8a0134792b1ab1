#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cpu/lane_vector.h"

namespace qwen2audio::kernels {

// Log filterbank energies of lanes() frames at once:
//   out[m][frame] = log10(max(sum_k weights[m][k] * power[k][frame], floor)).
// Filterbanks such as the mel bank are banded (each row nonzero on one short run of bins), so each
// row keeps only the span between its first and last nonzero weight: for Whisper's 128 x 201 mel
// bank that is 394 of 25728 weights, and the projection costs almost nothing next to the DFT.
class LogFilterbank {
 public:
  // `weights`: row-major [num_filters][num_bins]. `lanes`: frames per call, 2, 4, 8 or 16, as the
  // RealDftPower feeding it (8 needs AVX2, 16 AVX-512).
  LogFilterbank(const float* weights, int num_filters, int num_bins, float floor, int lanes);

  int lanes() const { return lanes_; }
  int num_filters() const { return static_cast<int>(first_bin_.size()); }
  int num_bins() const { return num_bins_; }

  // `power` (64-byte aligned): num_bins rows of lanes() floats, as RealDftPower writes them.
  // Writes out[m * out_stride + l] for frames l < count (count <= lanes()) and returns the largest
  // value written.
  float compute(const float* power, float* out, std::ptrdiff_t out_stride, int count) const;

 private:
  int lanes_;
  int num_bins_;
  float floor_;
  std::vector<int> first_bin_;  // per row
  std::vector<int> span_;       // per row: bins from first_bin_ on
  std::vector<size_t> offset_;  // per row: start of its weights in weights_
  std::vector<float> weights_;
};

}  // namespace qwen2audio::kernels
