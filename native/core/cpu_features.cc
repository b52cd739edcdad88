#include "cpu_features.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace sealkit {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

Isa detect_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return Isa::Avx512Bf16;
  if (avx512) return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Scalar;
}

const CpuModel& cpu_model() {
  static const CpuModel m = [] {
    CpuModel r;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return r;
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    r.amd = std::strcmp(vendor, "AuthenticAMD") == 0;
    r.intel = std::strcmp(vendor, "GenuineIntel") == 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return r;
    const int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
    r.family = base_family == 0xf ? base_family + static_cast<int>((a >> 20) & 0xff) : base_family;
    r.model = (base_family == 0xf || base_family == 6) ? base_model | static_cast<int>(((a >> 16) & 0xf) << 4)
                                                       : base_model;
#endif
    return r;
  }();
  return m;
}

static Isa initial_isa() {
  Isa hw = detect_isa();
  if (const char* env = std::getenv("SEALKIT_ISA")) {
    for (Isa cand : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
      if (std::strcmp(env, isa_name(cand)) == 0 && static_cast<int>(cand) <= static_cast<int>(hw)) return cand;
    }
  }
  return hw;
}

static Isa& isa_slot() {
  static Isa isa = initial_isa();
  return isa;
}

Isa active_isa() { return isa_slot(); }

void set_active_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detect_isa())) isa = detect_isa();
  isa_slot() = isa;
}

}  // namespace sealkit
