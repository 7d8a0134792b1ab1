#pragma once

#include <memory>

#include "backend/ops.h"
#include "kernels/cpu/gemm.h"

namespace qwen2audio::backend {

// The ops on the CPU, over kernels/cpu: float32 activations in host memory, weights used where they
// lie (the mapped checkpoint, or the packed copies the WeightStore owns), products through the one
// kernels::linear of every weight format. Each call runs on the calling thread's OpenMP threads.
class CpuOps final : public Ops {
 public:
  explicit CpuOps(kernels::GemmOptions options = {});

  kernels::Gemm& gemm() { return gemm_; }
  const kernels::Gemm& gemm() const { return gemm_; }

  std::string description() const override { return "cpu"; }
  size_t weight_bytes() const override { return 0; }
  std::unique_ptr<Memory> allocate(size_t bytes) override;
  DType dtype_for(Role) const override { return DType::F32; }
  std::unique_ptr<LinearWeights> load_linear(const std::vector<kernels::Linear>& parts) override;
  std::unique_ptr<Constant> load_constant(const float* host, int64_t rows, int64_t cols) override;
  std::unique_ptr<KVStorage> make_kv_storage(int64_t, int64_t, int64_t, int64_t, DType) override { return nullptr; }
  Mat stage_in(Workspace& ws, const float* host, int64_t rows, int64_t cols, int slot) override;
  Mat stage_out(Workspace& ws, float* host, int64_t rows, int64_t cols, int slot) override;
  void finish_out(Workspace& ws, const Mat& staged, float* host) override;

  // The defaults of Ops::linear, for calls through a CpuOps.
  void linear(Workspace& ws, const LinearWeights& weights, const Mat& x, const Mat& y, bool accumulate = false,
              kernels::Activation activation = kernels::Activation::None) override;
  void rms_norm(Workspace& ws, const Mat& x, const Constant& weight, float eps, const Mat& out) override;
  void layer_norm(Workspace& ws, const Mat& x, const Constant& weight, const Constant& bias, float eps,
                  const Mat& out) override;
  void silu_mul(Workspace& ws, const Mat& gate, const Mat& up, const Mat& out) override;
  void add(Workspace& ws, const Mat& y, const Mat& x) override;
  void copy(Workspace& ws, const Mat& src, const Mat& dst) override;
  void zero(Workspace& ws, const Mat& dst) override;
  RopeAngles rope_angles(Workspace& ws, const int64_t* positions, int64_t rows, const Constant& inverse_frequencies,
                         int cos_slot, int sin_slot) override;
  void rope(Workspace& ws, const Mat& x, int64_t heads, int64_t head_dim, const RopeAngles& angles) override;
  void conv3_columns(Workspace& ws, const Mat& input, int64_t channels, int64_t frames, int64_t channel_stride,
                     int64_t frame_stride, int64_t stride, const Mat& cols) override;
  void avg_pool_pairs(Workspace& ws, const Mat& x, const Mat& out) override;
  void packed_attention(Workspace& ws, const PackedAttention& args) override;
  void cached_attention(Workspace& ws, KVCache& cache, int64_t layer, const Mat& q, const Mat& k, const Mat& v,
                        int64_t heads, const CacheWrite& write, const Mat& out) override;

 private:
  kernels::Gemm gemm_;
};

}  // namespace qwen2audio::backend
