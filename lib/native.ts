// Loads the native addon (node-gyp-build finds build/Release, build/Debug or prebuilds/) and gives
// it a typed face. SEALKIT_NATIVE_PATH points at another build (the sanitizer build uses it).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface NativeInfo {
  isa: string;
  isaDetected: string;
  threads: number;
  /** Pool runs of split training passes (a small model's step as two lanes of sequences, one per
   * thread) that the lane done first helped the other with, since the addon loaded; SEALKIT_LANE_HELP=0
   * turns the help off. */
  laneHelpRuns: number;
  /** x86 CPUID vendor, family and model (0 elsewhere): a few kernel choices depend on them. */
  cpu: { vendor: 'amd' | 'intel' | 'other'; family: number; model: number };
  /** How decoding's few-rows GEMMs prefetch weights: 'nta' (the non-temporal hint, one block ahead;
   * the default on AMD Zen 5) or 'l2' (32 rows ahead into L2; elsewhere); SEALKIT_FEW_ROWS_NTA=1|0 forces. */
  decodePrefetch: 'nta' | 'l2';
  /** Whether bf16 GEMMs run on AMX tiles: the CPU has AMX-BF16, the OS grants the tile state and
   * SEALKIT_AMX is not 0 (else AVX512-BF16's vdpbf16ps, or f32 products below it). */
  amx: boolean;
  /** Whether decoding's bf16 GEMMs of 2-16 rows (batched decoding) run on AMX tiles, streaming each
   * weight once (else vdpbf16ps); SEALKIT_AMX_FEW_ROWS=0 keeps them on vdpbf16ps. */
  decodeRowsOnAmx: boolean;
  /** Whether decoding's bf16 GEMMs of 2-16 rows read the weights' packed vdpbf16ps strips (the bits of
   * the packed GEMM; under AVX512-BF16 where bf16 GEMMs do not run on AMX tiles) rather than the
   * weights' rows; SEALKIT_FEW_ROWS_PACKED=0 or SEALKIT_PACKED_WEIGHTS=0 keeps the rows. */
  decodeRowsPacked: boolean;
  /** Whether decoding's one-row bf16 GEMMs can read 12-bit coded copies of the weights (lossless, the
   * bits of the bf16 rows; AVX512-BF16 with AVX512-VBMI, SEALKIT_CODED_WEIGHTS not 0). A model codes its
   * weights when they are over twice the last-level cache (SEALKIT_CODED_WEIGHTS=1 forces it, 0 never). */
  codedWeights: boolean;
  /** Whether a bf16 model's attention multiplies in bf16 (vdpbf16ps, f32 sums): AVX512-BF16 on a CPU
   * whose vdpbf16ps issues at its FMA's rate (AMD Zen 4/5), head sizes a multiple of 16, and
   * SEALKIT_ATTENTION_BF16 not 0; else attention's products stay f32. */
  attentionBf16: boolean;
  cuda: boolean;
  backends: string[];
  sanitized: boolean;
  /** CUDA builds: the GPUs visible, and why none are when the list is empty. */
  gpus?: { index: number; name: string; memoryBytes: number; computeCapability: string }[];
  gpuError?: string;
}

/** The addon's exports. Model handles are opaque objects owned by lib/model. */
export interface NativeAddon {
  info(): NativeInfo;
  setThreads(n: number): number;
  setIsa(name: string): string;
  /**
   * The throughput (GFLOP/s) of one instruction on every thread of the pool, measured now
   * (native/cpu/peak.h): the peak MFU is reported against. Blocks for about trials x trialMs
   * (defaults 3 x 20 ms); throws where this CPU cannot run `kind`.
   */
  measurePeak(kind: 'fp32_fma' | 'bf16_dot' | 'amx_bf16', options?: { trialMs?: number; trials?: number }): { kind: string; gflops: number; threads: number; trials: number };
  /** Runs one kernel directly (tests and benchmarks): see native/addon/op_binding.cc. */
  opRun(name: string, dtype: 'f32' | 'f64', args: Record<string, unknown>): Record<string, Float32Array | Float64Array | number>;
  // Model bindings are declared in lib/model/native-model.ts.
  [key: string]: unknown;
}

const require = createRequire(import.meta.url);
let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  if (cached) return cached;
  const root = fileURLToPath(new URL('..', import.meta.url));
  const override = process.env.SEALKIT_NATIVE_PATH;
  try {
    cached = (override ? require(override) : require('node-gyp-build')(root)) as NativeAddon;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`sealkit: cannot load the native addon (${why}). Build it with \`npm run build:native\`.`);
  }
  return cached;
}
