// Whisper log-mel on the GPU, step for step as cpp/audio/log_mel.cpp: frames of the reflect-padded
// clip times the periodic Hann window (float32 window, product in double), a batched double
// precision real FFT (cuFFT D2Z; float would add torch-sized rounding noise on top of the
// reference's and could pass the 1e-4 we promise), power rounded to float, the banded mel
// projection summed in float, log10 of max(., 1e-10), then max(x, clip max - 8) and (x + 4) / 4.

#include <cufft.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/log_mel.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 1024;
constexpr float kMelFloor = 1e-10f;
constexpr float kDynamicRange = 8.0f;
constexpr double kPi = 3.14159265358979323846;

__global__ void frame_kernel(const float* waveform, int64_t samples, int64_t frames, int64_t n_fft, int64_t hop,
                             const double* window, double* framed) {
  const int64_t count = frames * n_fft, pad = n_fft / 2;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t frame = i / n_fft, n = i % n_fft;
    int64_t index = frame * hop + n - pad;
    if (index < 0) index = -index;
    if (index >= samples) index = 2 * (samples - 1) - index;
    index = min(max(index, int64_t{0}), samples - 1);  // unreachable for samples > n_fft / 2
    framed[i] = static_cast<double>(waveform[index]) * window[n];
  }
}

// out[m, f] = log10(max(sum_k filters[m, k] |X_f[k]|^2, floor)) over row m's nonzero span.
__global__ void mel_kernel(const cufftDoubleComplex* spectrum, int64_t frames, int64_t bins, int64_t mel_bins,
                           const float* filters, const int* first_bin, const int* span, float floor, float* out) {
  const int64_t count = mel_bins * frames;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t m = i / frames, f = i % frames;
    const cufftDoubleComplex* frame = spectrum + f * bins;
    const float* weights = filters + m * bins;
    float sum = 0.0f;
    for (int k = first_bin[m], end = first_bin[m] + span[m]; k < end; ++k) {
      const float power = static_cast<float>(frame[k].x * frame[k].x + frame[k].y * frame[k].y);
      sum += power * weights[k];
    }
    out[i] = log10f(fmaxf(sum, floor));
  }
}

__global__ void __launch_bounds__(kReduceThreads) max_kernel(const float* values, int64_t count, float* result) {
  __shared__ float scratch[32];
  float largest = -INFINITY;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) largest = fmaxf(largest, values[i]);
  largest = detail::warp_max(largest);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = largest;
  __syncthreads();
  if (warp == 0) {
    largest = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : -INFINITY;
    largest = detail::warp_max(largest);
    if (lane == 0) *result = largest;
  }
}

__global__ void finish_kernel(float* values, int64_t count, const float* clip_max, float dynamic_range) {
  const float lowest = *clip_max - dynamic_range;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    values[i] = (fmaxf(values[i], lowest) + 4.0f) * 0.25f;
}

template <typename T>
T* device_alloc(size_t count, const char* what) {
  void* pointer = nullptr;
  detail::check_cuda(cudaMalloc(&pointer, std::max<size_t>(count, 1) * sizeof(T)), what);
  return static_cast<T*>(pointer);
}

}  // namespace

struct LogMel::State {
  int64_t mel_bins = 0, n_fft = 0, hop = 0, bins = 0, max_samples = 0, max_frames = 0;
  double* window = nullptr;
  float* filters = nullptr;
  int* first_bin = nullptr;
  int* span = nullptr;
  double* framed = nullptr;
  cufftDoubleComplex* spectrum = nullptr;
  float* clip_max = nullptr;
  cufftHandle plan = 0;
  bool has_plan = false;

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (has_plan) cufftDestroy(plan);
    cudaFree(window);
    cudaFree(filters);
    cudaFree(first_bin);
    cudaFree(span);
    cudaFree(framed);
    cudaFree(spectrum);
    cudaFree(clip_max);
  }
};

LogMel::LogMel(const float* filters, int64_t mel_bins, int64_t n_fft, int64_t hop_length, int64_t max_samples)
    : state_(std::make_unique<State>()) {
  const char* kernel = "LogMel";
  detail::require(filters != nullptr, kernel, "null filters");
  detail::require(mel_bins >= 1 && mel_bins <= 4096, kernel, "mel_bins must be in 1..4096");
  detail::require(n_fft >= 2 && n_fft <= 65536, kernel, "n_fft must be in 2..65536");
  detail::require(hop_length >= 1, kernel, "hop_length must be positive");
  detail::require(max_samples > n_fft / 2 && max_samples / hop_length >= 1 && max_samples / hop_length <= 0x7fffffff,
                  kernel, "max_samples must exceed n_fft / 2 and give 1..2^31-1 frames");
  State& s = *state_;
  s.mel_bins = mel_bins;
  s.n_fft = n_fft;
  s.hop = hop_length;
  s.bins = n_fft / 2 + 1;
  s.max_samples = max_samples;
  s.max_frames = max_samples / hop_length;

  // torch.hann_window (periodic) in float, as cpp/audio builds it; the DFT widens it to double.
  std::vector<double> window(n_fft);
  for (int64_t n = 0; n < n_fft; ++n)
    window[n] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * kPi * static_cast<double>(n) / n_fft));
  std::vector<int> first_bin(mel_bins), span(mel_bins);
  for (int64_t m = 0; m < mel_bins; ++m) {
    const float* row = filters + m * s.bins;
    int64_t first = 0, last = -1;
    while (first < s.bins && row[first] == 0.0f) ++first;
    for (int64_t k = s.bins - 1; k >= first; --k)
      if (row[k] != 0.0f) {
        last = k;
        break;
      }
    first_bin[m] = static_cast<int>(first < s.bins ? first : 0);
    span[m] = static_cast<int>(last >= first ? last - first + 1 : 0);
  }

  s.window = device_alloc<double>(n_fft, "LogMel: cudaMalloc");
  s.filters = device_alloc<float>(mel_bins * s.bins, "LogMel: cudaMalloc");
  s.first_bin = device_alloc<int>(mel_bins, "LogMel: cudaMalloc");
  s.span = device_alloc<int>(mel_bins, "LogMel: cudaMalloc");
  s.framed = device_alloc<double>(s.max_frames * n_fft, "LogMel: cudaMalloc");
  s.spectrum = device_alloc<cufftDoubleComplex>(s.max_frames * s.bins, "LogMel: cudaMalloc");
  s.clip_max = device_alloc<float>(1, "LogMel: cudaMalloc");
  detail::check_cuda(cudaMemcpy(s.window, window.data(), n_fft * sizeof(double), cudaMemcpyHostToDevice),
                     "LogMel: cudaMemcpy");
  detail::check_cuda(cudaMemcpy(s.filters, filters, mel_bins * s.bins * sizeof(float), cudaMemcpyHostToDevice),
                     "LogMel: cudaMemcpy");
  detail::check_cuda(cudaMemcpy(s.first_bin, first_bin.data(), mel_bins * sizeof(int), cudaMemcpyHostToDevice),
                     "LogMel: cudaMemcpy");
  detail::check_cuda(cudaMemcpy(s.span, span.data(), mel_bins * sizeof(int), cudaMemcpyHostToDevice),
                     "LogMel: cudaMemcpy");
  // Frames past a shorter clip's end still go through the batched FFT (one plan for all lengths);
  // zeroing keeps them finite.
  detail::check_cuda(cudaMemset(s.framed, 0, s.max_frames * n_fft * sizeof(double)), "LogMel: cudaMemset");

  int length = static_cast<int>(n_fft);
  int in_embed = static_cast<int>(n_fft), out_embed = static_cast<int>(s.bins);
  detail::check_cufft(cufftPlanMany(&s.plan, 1, &length, &in_embed, 1, static_cast<int>(n_fft), &out_embed, 1,
                                    static_cast<int>(s.bins), CUFFT_D2Z, static_cast<int>(s.max_frames)),
                      "LogMel: cufftPlanMany");
  s.has_plan = true;
}

LogMel::~LogMel() = default;

int64_t LogMel::mel_bins() const { return state_->mel_bins; }

void LogMel::compute(const float* waveform, int64_t samples, float* out, cudaStream_t stream) {
  State& s = *state_;
  const char* kernel = "LogMel::compute";
  detail::require(samples > s.n_fft / 2 && samples <= s.max_samples, kernel,
                  "samples must be in n_fft / 2 + 1..max_samples, got " + std::to_string(samples));
  const int64_t frame_count = LogMel::frames(samples, s.hop);
  detail::require(frame_count >= 1, kernel, "clip shorter than one hop");
  frame_kernel<<<detail::grid_for(frame_count * s.n_fft, kThreads), kThreads, 0, stream>>>(
      waveform, samples, frame_count, s.n_fft, s.hop, s.window, s.framed);
  detail::check_launch("LogMel: frame_kernel");
  detail::check_cufft(cufftSetStream(s.plan, stream), "LogMel: cufftSetStream");
  detail::check_cufft(cufftExecD2Z(s.plan, s.framed, s.spectrum), "LogMel: cufftExecD2Z");
  const int64_t count = s.mel_bins * frame_count;
  mel_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(
      s.spectrum, frame_count, s.bins, s.mel_bins, s.filters, s.first_bin, s.span, kMelFloor, out);
  detail::check_launch("LogMel: mel_kernel");
  max_kernel<<<1, kReduceThreads, 0, stream>>>(out, count, s.clip_max);
  detail::check_launch("LogMel: max_kernel");
  finish_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(out, count, s.clip_max, kDynamicRange);
  detail::check_launch("LogMel: finish_kernel");
}

}  // namespace qwen2audio::kernels::cuda
