#include "kernels/cpu/quantized_gemm.h"

#include <algorithm>
#include <string>

#include "kernels/cpu/quantized_gemm_internal.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

// A lane adds four products of at most 255 * 128 per step of four elements, so a group of up to
// this many elements sums exactly in int32.
constexpr int64_t kLongestExactGroup = 65536;

}  // namespace

bool quantized_gemm_supported(Isa isa) { return isa >= Isa::Avx512Bf16 && isa_supported(Isa::Avx512Bf16); }

void quantized_gemm(const QuantizedGemmArgs& args, Isa isa) {
  if (args.m < 0 || args.n < 0 || args.k < 0) throw InvalidArgument("quantized_gemm: negative dimension");
  if (args.w.format != WeightFormat::Int8 && args.w.format != WeightFormat::Int4)
    throw InvalidArgument(std::string("quantized_gemm takes int8 or int4 weights, got ") +
                          weight_format_name(args.w.format));
  if (args.k % 32 != 0) throw InvalidArgument("quantized_gemm: k must be a multiple of 32");
  if (args.w.group_size <= 0 || args.w.group_size % 32 != 0 || args.w.scales == nullptr)
    throw InvalidArgument("quantized_gemm: weights need scales per group of a positive multiple of 32 elements");
  if (args.w.ld < args.k || args.ldx < args.k || args.ldy < args.n ||
      args.w.scales_ld < scale_groups(args.k, args.w.group_size))
    throw InvalidArgument("quantized_gemm: leading dimension too small");
  if (std::min(args.k, args.w.group_size) > kLongestExactGroup)
    throw InvalidArgument("quantized_gemm: weight groups longer than " + std::to_string(kLongestExactGroup) +
                          " elements are not supported");
  if (!quantized_gemm_supported(isa))
    throw InvalidArgument(std::string("quantized_gemm needs AVX512-VNNI; the tier asked for is ") + isa_name(isa));
  if (args.m == 0 || args.n == 0) return;
  quantized_gemm_detail::Problem problem;
  problem.m = args.m;
  problem.n = args.n;
  problem.k = args.k;
  problem.x = args.x;
  problem.ldx = args.ldx;
  problem.w = args.w;
  problem.group_size = args.w.group_size;
  problem.groups = scale_groups(args.k, args.w.group_size);
  problem.bias = args.bias;
  problem.y = args.y;
  problem.ldy = args.ldy;
  problem.accumulate = args.accumulate;
  quantized_gemm_detail::run_avx512_vnni(problem);
}

}  // namespace qwen2audio::kernels
