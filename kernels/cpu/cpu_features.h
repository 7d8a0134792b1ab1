#pragma once

#include <optional>
#include <string>
#include <string_view>

// What the CPU we run on can do, read once with cpuid (and xgetbv: an instruction set counts only
// when the OS saves its registers). Kernels are compiled for several instruction sets with
// __attribute__((target)) / #pragma GCC target and pick one at run time, so one binary (the
// portable x86-64-v2 build included) runs everywhere and uses AVX-512/AMX where present.
namespace qwen2audio::kernels {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx_vnni = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx_tile = false;  // and the OS lets this process use the tile registers (asked for at detection)
  bool amx_bf16 = false;
  bool amx_int8 = false;
  std::string vendor;
  std::string brand;
};

const CpuFeatures& cpu_features();

// Tiers of kernel variants, in the order QWEN2AUDIO_MAX_ISA caps them:
//   Avx2       AVX2 + FMA + F16C (Haswell, Zen 1+)
//   Avx2Vnni   Avx2 + AVX-VNNI, VNNI's integer dot product at 256 bits (Alder Lake and later client
//              cores without AVX-512): its integer panels; every other kernel runs its Avx2 variant
//   Avx512     AVX-512 F/BW/VL/DQ (Skylake-SP)
//   Avx512Vnni Avx512 + VNNI (Cascade Lake, Ice Lake, Tiger/Rocket Lake): its integer panels; every
//              other kernel runs its Avx512 variant
//   Avx512Bf16 Avx512Vnni + BF16 (Cooper Lake, Sapphire Rapids, Zen 4)
//   Amx        Avx512Bf16 + AMX-INT8 + AMX-BF16 (Sapphire Rapids): the prefill of quantized weights;
//              every other kernel runs its Avx512Bf16 variant there
// Each tier is a superset of the ones before it except Avx2Vnni, which only Avx2 is below: Avx512
// (Skylake-SP) has no VNNI at all and the tiers above use AVX-512's own. So no kernel above Avx2Vnni
// uses AVX-VNNI, and a CPU may lack Avx2Vnni but have a higher tier (Zen 4).
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx2Vnni = 2, Avx512 = 3, Avx512Vnni = 4, Avx512Bf16 = 5, Amx = 6 };
// Every tier, in that order.
inline constexpr Isa kIsaTiers[] = {Isa::Scalar,     Isa::Avx2,       Isa::Avx2Vnni, Isa::Avx512,
                                    Isa::Avx512Vnni, Isa::Avx512Bf16, Isa::Amx};

// Whether this CPU runs `isa` (whatever the cap below): tests run every tier it does.
bool isa_supported(Isa isa);
// The best tier this CPU supports, ignoring the cap.
Isa widest_isa();
// The best tier this CPU supports at or below `limit` (Avx2Vnni's place in the order means a CPU can
// lack a tier below one it has).
Isa widest_isa_up_to(Isa limit);
// The best tier this CPU supports, capped by the environment variable QWEN2AUDIO_MAX_ISA (scalar,
// avx2, avx2_vnni, avx512, avx512_vnni, avx512_bf16, amx) when set: a way to run and compare the
// slower paths on a fast machine. Read once.
Isa best_isa();
const char* isa_name(Isa isa);
// Floats per vector of the lane kernels (norms, activations, RoPE, attention, the DFT), which are
// compiled once per width from one templated body: 4 for the scalar tier (the x86-64 baseline's
// SSE), 8 for AVX2, 16 for the AVX-512 tiers.
inline int float_lanes(Isa isa) { return isa >= Isa::Avx512 ? 16 : isa >= Isa::Avx2 ? 8 : 4; }
std::optional<Isa> isa_from_name(std::string_view name);

// Physical cores this process may run on (hyper-threads share one core's vector units, so compute
// threads beyond this only contend); falls back to the logical CPU count when the topology is
// unreadable.
int physical_core_count();

// One line for benchmarks and bug reports, e.g. "AMD EPYC (avx2 fma f16c)".
std::string cpu_description();

}  // namespace qwen2audio::kernels
