#include "kernels/cpu/filterbank.h"

#include <limits>
#include <stdexcept>
#include <string>

namespace qwen2audio::kernels {
namespace {

struct Rows {
  int num_filters;
  float floor;
  const int* first_bin;
  const int* span;
  const size_t* offset;
  const float* weights;
};

template <int kLanes>
[[gnu::always_inline]] inline float compute_body(const Rows& rows, const float* power, float* out,
                                                 std::ptrdiff_t out_stride, int count) {
  using L = Lanes<kLanes>;
  using Floats = typename L::Floats;
  const Floats floor = Floats{} + rows.floor;
  Floats largest = Floats{} + -std::numeric_limits<float>::infinity();
  for (int m = 0; m < rows.num_filters; ++m) {
    const float* weight = rows.weights + rows.offset[m];
    const float* bin = power + static_cast<size_t>(rows.first_bin[m]) * kLanes;
    Floats sum{};
    for (int k = 0; k < rows.span[m]; ++k) sum += L::load(bin + static_cast<size_t>(k) * kLanes) * weight[k];
    const Floats value = L::log10(L::max(sum, floor));
    float* row = out + m * out_stride;
    if (count == kLanes) {
      L::store_unaligned(row, value);
      largest = L::max(largest, value);
    } else {
      for (int lane = 0; lane < count; ++lane) {
        row[lane] = value[lane];
        largest[0] = value[lane] > largest[0] ? value[lane] : largest[0];
      }
    }
  }
  return L::horizontal_max(largest);
}

// Sixteen lanes only come from an AVX-512 machine and eight from one with AVX2 at least.
[[gnu::target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2")]] float compute16(const Rows& rows,
                                                                                    const float* power, float* out,
                                                                                    std::ptrdiff_t out_stride,
                                                                                    int count) {
  return compute_body<16>(rows, power, out, out_stride, count);
}

[[gnu::target("avx2,fma,bmi2")]] float compute8(const Rows& rows, const float* power, float* out,
                                                std::ptrdiff_t out_stride, int count) {
  return compute_body<8>(rows, power, out, out_stride, count);
}

float compute4(const Rows& rows, const float* power, float* out, std::ptrdiff_t out_stride, int count) {
  return compute_body<4>(rows, power, out, out_stride, count);
}

float compute2(const Rows& rows, const float* power, float* out, std::ptrdiff_t out_stride, int count) {
  return compute_body<2>(rows, power, out, out_stride, count);
}

}  // namespace

LogFilterbank::LogFilterbank(const float* weights, int num_filters, int num_bins, float floor, int lanes)
    : lanes_(lanes), num_bins_(num_bins), floor_(floor) {
  if (lanes != 2 && lanes != 4 && lanes != 8 && lanes != 16)
    throw std::invalid_argument("LogFilterbank: lanes must be 2, 4, 8 or 16, got " + std::to_string(lanes));
  if (num_filters < 1 || num_bins < 1)
    throw std::invalid_argument("LogFilterbank: need at least one filter and one bin, got " +
                                std::to_string(num_filters) + " x " + std::to_string(num_bins));
  if (!(floor > 0.0f) || !(floor <= std::numeric_limits<float>::max()))
    throw std::invalid_argument("LogFilterbank: floor must be positive and finite");
  for (int m = 0; m < num_filters; ++m) {
    const float* row = weights + static_cast<size_t>(m) * num_bins;
    int first = 0, last = -1;
    for (int k = 0; k < num_bins; ++k) {
      if (row[k] != 0.0f) {
        if (last < 0) first = k;
        last = k;
      }
    }
    // An all-zero row (possible with more filters than bins) keeps an empty span: its energy is 0.
    first_bin_.push_back(last < 0 ? 0 : first);
    span_.push_back(last < 0 ? 0 : last - first + 1);
    offset_.push_back(weights_.size());
    for (int k = first; k <= last; ++k) weights_.push_back(row[k]);
  }
}

float LogFilterbank::compute(const float* power, float* out, std::ptrdiff_t out_stride, int count) const {
  if (count < 1 || count > lanes())
    throw std::invalid_argument("LogFilterbank: count " + std::to_string(count) + " outside 1.." +
                                std::to_string(lanes()));
  const Rows rows{num_filters(), floor_, first_bin_.data(), span_.data(), offset_.data(), weights_.data()};
  switch (lanes_) {
    case 16:
      return compute16(rows, power, out, out_stride, count);
    case 8:
      return compute8(rows, power, out, out_stride, count);
    case 4:
      return compute4(rows, power, out, out_stride, count);
    default:
      return compute2(rows, power, out, out_stride, count);
  }
}

}  // namespace qwen2audio::kernels
