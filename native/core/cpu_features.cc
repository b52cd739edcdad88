#include "cpu_features.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

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
