#pragma once

// CUDA compute kernels of the engine. Like kernels/cpu they know nothing of Qwen2-Audio: device
// pointers, shapes and strides (in elements). Every function enqueues on `stream` and returns at
// once; launch errors are reported as std::runtime_error naming the kernel. Activations between
// layers are float32; what feeds a GEMM is BF16 (the weights' dtype, what tensor cores take).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen2audio::kernels::cuda {

using bf16 = __nv_bfloat16;

// ---- normalisation (one block per row, float32 statistics) --------------------------------------
// out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight
void rms_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, float eps, bf16* out,
              int64_t ld_out, cudaStream_t stream);
void rms_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, float eps, float* out,
              int64_t ld_out, cudaStream_t stream);
// out[r, :] = (x[r, :] - mean) * rsqrt(var + eps) * weight + bias   (biased variance, as torch)
void layer_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, bf16* out, int64_t ld_out, cudaStream_t stream);
void layer_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* out, int64_t ld_out, cudaStream_t stream);

// ---- elementwise ----------------------------------------------------------------------------------
// Float32 rows to BF16 (round to nearest even), each with its row stride.
void to_bf16(const float* x, int64_t ld_x, int64_t rows, int64_t n, bf16* out, int64_t ld_out, cudaStream_t stream);
// y[r, c] += x[r, c]
void add_rows(float* y, int64_t ld_y, const float* x, int64_t ld_x, int64_t rows, int64_t n, cudaStream_t stream);
// x[r, c] += bias[c]
void add_bias(float* x, int64_t ld, int64_t rows, int64_t n, const float* bias, cudaStream_t stream);
// out[r, c] = gelu(x[r, c] + bias[c]) with the exact (erf) GELU; bias may be null.
void bias_gelu(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* bias, bf16* out, int64_t ld_out,
               cudaStream_t stream);
// The same, float32 out, plus addend[r, c] when addend is non-null (the encoder's positional table
// after its second convolution; addend row stride = n).
void bias_gelu(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* bias, const float* addend,
               float* out, int64_t ld_out, cudaStream_t stream);
// out[r, c] = silu(gate[r, c]) * up[r, c] with gate and up anywhere (each with its row stride).
void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, int64_t rows, int64_t n, bf16* out,
              int64_t ld_out, cudaStream_t stream);
void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, int64_t rows, int64_t n, float* out,
              int64_t ld_out, cudaStream_t stream);
// out[r, :] = (x[2r, :] + x[2r + 1, :]) / 2 for r < rows / 2 (AvgPool1d(2, 2) over time, rows even
// or the last odd row dropped, as torch does).
void avg_pool_pairs(const float* x, int64_t rows, int64_t n, float* out, cudaStream_t stream);

// ---- rotary embedding -----------------------------------------------------------------------------
// Rotary embedding tables of any frequencies (scaled RoPE variants included), as kernels/cpu/rope.cpp's
// rope_tables forms them: cos/sin [rows, half] of float(positions[r]) * inverse_frequencies[i].
// positions, inverse_frequencies: device memory.
void rope_tables(const int64_t* positions, int64_t rows, const float* inverse_frequencies, int64_t half, float* cos,
                 float* sin, cudaStream_t stream);
// Rotate-half RoPE in place from such tables (row r of x by table row r).
void apply_rope(float* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
                cudaStream_t stream);

// ---- KV cache -------------------------------------------------------------------------------------
// Copies keys and values of `steps` new tokens per batch row (source row b * steps + t, head g at
// column g * head_dim, row stride ld) into the BF16 cache, layout [batch, kv_heads, capacity,
// head_dim]: cache + b * batch_stride + g * head_stride + (start + t) * head_dim.
void store_kv(const float* k, const float* v, int64_t ld, int64_t batch, int64_t steps, int64_t kv_heads,
              int64_t head_dim, bf16* k_cache, bf16* v_cache, int64_t batch_stride, int64_t head_stride, int64_t start,
              cudaStream_t stream);

// ---- attention ------------------------------------------------------------------------------------
// softmax(q k^T * scale + mask) v with grouped-query attention (head h reads kv head
// h / (num_heads / num_kv_heads)); same semantics as kernels/cpu/attention.h:
//   q[b, t, h, :]   at q + b * q_batch_stride + t * q_row_stride + h * head_dim (float32)
//   k[b, g, s, :]   at k + b * kv_batch_stride + g * kv_head_stride + s * kv_row_stride (BF16; v alike)
//   out[b, t, h, :] at out + b * out_batch_stride + t * out_row_stride + h * head_dim (BF16)
// With `causal`, query t sits at key index kv_len - q_len + t and sees keys up to it;
// key_mask[b * key_mask_stride + s] == 0 (device bytes; null: all visible) hides key s from row b.
// Hidden keys are skipped (never weighted by zero), and a query that sees no key gets zeros.
// Flash-style: key/value tiles staged in shared memory, online softmax in float32, nothing of
// size kv_len materialised; the same kernel serves the encoder (1500 frames, bidirectional), the
// causal prefill and one-token decode. head_dim: any multiple of 8 up to 256.
struct AttentionArgs {
  int64_t batch = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  const float* q = nullptr;
  int64_t q_batch_stride = 0;
  int64_t q_row_stride = 0;
  const bf16* k = nullptr;
  const bf16* v = nullptr;
  int64_t kv_batch_stride = 0;
  int64_t kv_head_stride = 0;
  int64_t kv_row_stride = 0;
  bf16* out = nullptr;
  int64_t out_batch_stride = 0;
  int64_t out_row_stride = 0;
  float scale = 1.0f;
  bool causal = false;
  const uint8_t* key_mask = nullptr;
  int64_t key_mask_stride = 0;
  // Optional device scratch for decode steps (q_len <= 4): with attention_workspace_floats(...)
  // floats, long rows are split across blocks (all SMs busy); without it, one block per query
  // walks the whole row (correct, slower). One workspace serves one call at a time on its stream.
  float* workspace = nullptr;
  int64_t workspace_floats = 0;
};
void attention(const AttentionArgs& args, cudaStream_t stream);
// Workspace that lets every decode call of this shape split its keys (0 when q_len > 4: prefill
// needs none); independent of kv_len, so it can be allocated once per session.
int64_t attention_workspace_floats(int64_t batch, int64_t q_len, int64_t num_heads, int64_t head_dim);

// ---- convolution stem -----------------------------------------------------------------------------
// im2col for Conv1d(kernel 3, padding 1, `stride`): input element (c, t) at
// input + c * channel_stride + t * frame_stride (float32); cols [out_frames, channels * 3] BF16 with
// cols[t, c * 3 + j] = input(c, t * stride + j - 1), zero outside [0, frames); out_frames =
// (frames - 1) / stride + 1. A GEMM with the conv weight viewed as [out_channels, channels * 3]
// (torch's [out, in, k] layout) then gives the convolution.
void im2col_k3(const float* input, int64_t channels, int64_t frames, int64_t channel_stride, int64_t frame_stride,
               int64_t stride, bf16* cols, cudaStream_t stream);

}  // namespace qwen2audio::kernels::cuda
