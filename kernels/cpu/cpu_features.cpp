#include "kernels/cpu/cpu_features.h"

#include <cpuid.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>
#include <utility>

namespace qwen2audio::kernels {
namespace {

struct Registers {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Registers cpuid(uint32_t leaf, uint32_t subleaf) {
  Registers r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return {};
  return r;
}

bool bit(uint32_t value, int index) { return (value >> index) & 1u; }

bool request_tile_permission() {
  constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
  return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
}

uint64_t read_xcr0() {
  uint32_t low = 0, high = 0;
  __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return (static_cast<uint64_t>(high) << 32) | low;
}

std::string trimmed(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t begin = 0;
  while (begin < text.size() && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  return text.substr(begin);
}

CpuFeatures detect() {
  CpuFeatures f;
  const Registers base = cpuid(0, 0);
  char vendor[13] = {};
  std::memcpy(vendor, &base.ebx, 4);
  std::memcpy(vendor + 4, &base.edx, 4);
  std::memcpy(vendor + 8, &base.ecx, 4);
  f.vendor = vendor;
  const uint32_t max_extended = cpuid(0x80000000u, 0).eax;
  if (max_extended >= 0x80000004u) {
    char brand[49] = {};
    for (uint32_t i = 0; i < 3; ++i) {
      const Registers r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + size_t{16} * i, &r, 16);
    }
    f.brand = trimmed(brand);
  }

  const Registers leaf1 = cpuid(1, 0);
  const bool osxsave = bit(leaf1.ecx, 27);
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;
  const bool zmm_saved = ymm_saved && (xcr0 & 0xE0) == 0xE0;
  const bool tiles_saved = (xcr0 & 0x60000) == 0x60000;
  if (base.eax < 7 || !ymm_saved) return f;

  const Registers leaf7 = cpuid(7, 0);
  const Registers leaf7_1 = cpuid(7, 1);
  const bool avx = bit(leaf1.ecx, 28);
  f.avx2 = avx && bit(leaf7.ebx, 5);
  f.fma = avx && bit(leaf1.ecx, 12);
  f.f16c = avx && bit(leaf1.ecx, 29);
  f.avx_vnni = f.avx2 && bit(leaf7_1.eax, 4);
  if (zmm_saved) {
    f.avx512f = bit(leaf7.ebx, 16);
    f.avx512dq = f.avx512f && bit(leaf7.ebx, 17);
    f.avx512bw = f.avx512f && bit(leaf7.ebx, 30);
    f.avx512vl = f.avx512f && bit(leaf7.ebx, 31);
    f.avx512_vnni = f.avx512f && bit(leaf7.ecx, 11);
    f.avx512_bf16 = f.avx512f && bit(leaf7_1.eax, 5);
  }
  // Linux saves the tile registers only for processes that ask (arch_prctl, since 5.16); a kernel
  // that refuses leaves the tiles faulting, so they count as absent.
  if (tiles_saved && bit(leaf7.edx, 24) && request_tile_permission()) {
    f.amx_tile = true;
    f.amx_bf16 = f.amx_tile && bit(leaf7.edx, 22);
    f.amx_int8 = f.amx_tile && bit(leaf7.edx, 25);
  }
  return f;
}

Isa detect_best_isa() {
  if (const char* cap = std::getenv("QWEN2AUDIO_MAX_ISA"))
    if (const std::optional<Isa> limit = isa_from_name(cap)) return widest_isa_up_to(*limit);
  return widest_isa();
}

bool read_int(const std::string& path, int& value) {
  std::ifstream stream(path);
  return static_cast<bool>(stream >> value);
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  switch (isa) {
    case Isa::Scalar:
      return true;
    case Isa::Avx2:
      return avx2;
    case Isa::Avx2Vnni:
      return avx2 && f.avx_vnni;
    case Isa::Avx512:
      return avx512;
    case Isa::Avx512Vnni:
      return avx512 && f.avx512_vnni;
    case Isa::Avx512Bf16:
      return avx512 && f.avx512_vnni && f.avx512_bf16;
    case Isa::Amx:
      return avx512 && f.avx512_vnni && f.avx512_bf16 && f.amx_int8 && f.amx_bf16;
  }
  return false;
}

Isa widest_isa_up_to(Isa limit) {
  Isa widest = Isa::Scalar;
  for (Isa candidate : kIsaTiers)
    if (static_cast<int>(candidate) <= static_cast<int>(limit) && isa_supported(candidate)) widest = candidate;
  return widest;
}

Isa widest_isa() { return widest_isa_up_to(Isa::Amx); }

Isa best_isa() {
  static const Isa best = detect_best_isa();
  return best;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx2Vnni:
      return "avx2_vnni";
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx512Vnni:
      return "avx512_vnni";
    case Isa::Avx512Bf16:
      return "avx512_bf16";
    case Isa::Amx:
      return "amx";
  }
  return "unknown";
}

std::optional<Isa> isa_from_name(std::string_view name) {
  for (Isa isa : kIsaTiers)
    if (name == isa_name(isa)) return isa;
  return std::nullopt;
}

int physical_core_count() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  const int logical = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return logical;
  std::set<std::pair<int, int>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    const std::string topology = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    int package = 0, core = 0;
    if (!read_int(topology + "physical_package_id", package) || !read_int(topology + "core_id", core))
      return CPU_COUNT(&allowed);
    cores.emplace(package, core);
  }
  return cores.empty() ? logical : static_cast<int>(cores.size());
}

std::string cpu_description() {
  const CpuFeatures& f = cpu_features();
  std::string flags;
  auto add = [&flags](bool present, const char* name) {
    if (!present) return;
    if (!flags.empty()) flags += ' ';
    flags += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx_vnni, "avx_vnni");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx512_bf16, "avx512_bf16");
  add(f.amx_bf16, "amx_bf16");
  add(f.amx_int8, "amx_int8");
  return (f.brand.empty() ? f.vendor : f.brand) + " (" + (flags.empty() ? "no vector extensions" : flags) +
         "; kernels: " + isa_name(best_isa()) + ")";
}

}  // namespace qwen2audio::kernels
