// The compute ceilings MFU is reported against: the throughput of the instruction a GEMM path
// multiplies with, measured on this machine, on the pool's threads, while the caller waits.
// `seal bench` measures the one its GEMMs use right after its timed steps, so the figure and the
// steps meet the same machine state (a shared VM's speed moves from minute to minute, so a
// datasheet number or one measured at install time would misstate MFU).
//
// Each thread runs independent accumulator chains of the instruction on registers only (no memory
// traffic; 16 chains, 12 under AVX2's 16 registers), enough to cover its latency on every x86 core
// we run on, so the loop issues at the instruction's full rate. FLOPs count multiplies and adds: a
// 512-bit FMA is 32, a 256-bit one 16, a 512-bit vdpbf16ps 64 (16 lanes x 2 products x 2), an AMX
// tdpbf16ps on 16 x 32 tiles 16 x 16 x 32 x 2. bench/peak.c measures the same instructions
// standalone for `npm run bench`.
#pragma once
#include <cstdint>
#include <string>

namespace sealkit::cpu {

enum class PeakKind {
  Fp32Fma,  // vfmadd231ps: zmm under AVX-512, ymm under AVX2 (the f32 kernels' width)
  Bf16Dot,  // vdpbf16ps zmm (AVX512-BF16): the bf16 GEMMs' products where AMX is off
  AmxBf16,  // tdpbf16ps (AMX-BF16): the bf16 GEMMs' products where amx_tiles_on()
};

const char* peak_kind_name(PeakKind kind);
// The kind named `name` ("fp32_fma", "bf16_dot", "amx_bf16"); false if none is.
bool parse_peak_kind(const std::string& name, PeakKind& kind);

// Why this CPU (at the active ISA) cannot run `kind`'s loop; empty if it can.
std::string peak_unsupported(PeakKind kind);

struct PeakMeasurement {
  double gflops = 0;  // the best trial: all threads' FLOPs over the span from the first start to the last end
  int threads = 0;    // threads that ran it (the pool's)
  int trials = 0;     // trials that counted (each thread ran its own share on its own thread)
};

// Runs `trials` trials of about `trial_seconds` each on every thread of the global pool and
// returns the best. Throws std::invalid_argument where peak_unsupported(kind) is not empty, and
// std::runtime_error if no trial ran one share per thread (a pool thread never came to run).
PeakMeasurement measure_peak(PeakKind kind, double trial_seconds, int trials);

}  // namespace sealkit::cpu
