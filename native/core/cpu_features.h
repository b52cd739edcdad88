// Which instruction-set level the hot CPU kernels use. Chosen once at load from CPUID; the whole
// addon is compiled for the baseline x86-64 so it runs anywhere, and only functions marked with
// a target attribute use wider instructions.
#pragma once

namespace sealkit {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

const char* isa_name(Isa isa);
Isa detect_isa();
// The level kernels dispatch on: detect_isa(), lowered by the SEALKIT_ISA environment variable
// (scalar|avx2|avx512|avx512bf16) for testing the fallbacks; never raised above what the CPU has.
Isa active_isa();
void set_active_isa(Isa isa);
// The CPU's vendor and family (CPUID leaf 1, extended family added as the SDM and AMD's APM say):
// for the few tuning choices measured to go opposite ways on different microarchitectures.
struct CpuModel {
  bool amd = false, intel = false;
  int family = 0, model = 0;
};
const CpuModel& cpu_model();
// Whether kernels may use AVX-512 (F, BW, VL, DQ) at this level.
inline bool has_avx512(Isa isa) { return isa >= Isa::Avx512; }

}  // namespace sealkit
