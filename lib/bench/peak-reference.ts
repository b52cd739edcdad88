// The peak a benchmark's MFU is measured against: on the CPU, the throughput of the instruction
// the engine's GEMMs multiply with, measured right then on the same threads (native measurePeak,
// native/cpu/peak.h); on a GPU, its datasheet's dense bf16 rate (there is no portable way to
// measure a tensor-core peak in a few milliseconds).
import type { NativeAddon, NativeInfo } from '../native.js';

export type CpuPeakKind = 'fp32_fma' | 'bf16_dot' | 'amx_bf16';

export interface PeakReference {
  /** The instruction (CPU) or the datasheet figure (GPU) the peak is of. */
  kind: CpuPeakKind | 'gpu_bf16_dense';
  gflops: number;
  /** 'measured' on this machine in this process, or 'datasheet'. */
  source: 'measured' | 'datasheet';
  /** In words: which instruction on how many threads, or which GPU's datasheet. */
  basis: string;
}

const CPU_LABEL: Record<CpuPeakKind, string> = { fp32_fma: 'FP32 FMA', bf16_dot: 'vdpbf16ps', amx_bf16: 'AMX bf16' };

/**
 * The instruction a CPU model stored at `storage` multiplies its GEMMs with: bf16 weights run
 * bf16 products on AMX tiles where NativeInfo.amx, else vdpbf16ps under AVX512-BF16; everything
 * else runs f32 FMAs (bf16 weights widened in registers), scalar code (no peak) below AVX2.
 */
export function cpuPeakKind(info: Pick<NativeInfo, 'isa' | 'amx'>, storage: 'f32' | 'bf16'): CpuPeakKind | null {
  if (storage === 'bf16' && info.isa === 'avx512bf16') return info.amx ? 'amx_bf16' : 'bf16_dot';
  return info.isa === 'avx2' || info.isa === 'avx512' || info.isa === 'avx512bf16' ? 'fp32_fma' : null;
}

/** A GPU's dense bf16 tensor-core peak and memory bandwidth from its name (nvidia-smi's or the CUDA device's). */
export function gpuDatasheet(name: string): { bf16_tflops: number; hbm_tbs: number; basis: string } | null {
  const n = name.toUpperCase();
  if (n.includes('H200')) return { bf16_tflops: 989, hbm_tbs: 4.8, basis: 'H200 SXM: 989 TFLOP/s dense bf16, 4.8 TB/s HBM3e' };
  if (n.includes('H100') && n.includes('PCIE')) return { bf16_tflops: 756, hbm_tbs: 2.0, basis: 'H100 PCIe: 756 TFLOP/s dense bf16, 2.0 TB/s HBM2e' };
  if (n.includes('H100') && n.includes('NVL')) return { bf16_tflops: 835, hbm_tbs: 3.9, basis: 'H100 NVL: 835 TFLOP/s dense bf16, 3.9 TB/s HBM3' };
  if (n.includes('H100')) return { bf16_tflops: 989, hbm_tbs: 3.35, basis: 'H100 SXM5 (80GB HBM3): 989 TFLOP/s dense bf16, 3.35 TB/s HBM3' };
  if (n.includes('A100')) return { bf16_tflops: 312, hbm_tbs: n.includes('80GB') ? 2.039 : 1.555, basis: 'A100: 312 TFLOP/s dense bf16' };
  return null;
}

/**
 * The peak for a benchmark on `device` at `storage`, or why there is none. On the CPU it costs
 * about 0.1 s (five 20 ms trials on every pool thread, the best kept), so call it after the timed
 * steps, never between them.
 */
export function peakReference(addon: NativeAddon, device: 'cpu' | 'cuda', storage: 'f32' | 'bf16'): PeakReference | { none: string } {
  const info = addon.info();
  if (device === 'cuda') {
    const name = info.gpus?.[0]?.name;
    if (!name) return { none: `no GPU name to look up${info.gpuError ? ` (${info.gpuError})` : ''}` };
    if (storage !== 'bf16') return { none: 'MFU on a GPU is against its bf16 tensor-core peak: bench with bf16 storage' };
    const sheet = gpuDatasheet(name);
    if (!sheet) return { none: `unknown GPU '${name}': no peak assumed` };
    return { kind: 'gpu_bf16_dense', gflops: sheet.bf16_tflops * 1000, source: 'datasheet', basis: sheet.basis };
  }
  const kind = cpuPeakKind(info, storage);
  if (!kind) return { none: `the engine runs scalar code at ISA ${info.isa}` };
  try {
    const m = addon.measurePeak(kind, { trialMs: 20, trials: 5 });
    return { kind, gflops: m.gflops, source: 'measured', basis: `${CPU_LABEL[kind]} on ${m.threads} thread${m.threads === 1 ? '' : 's'}, measured` };
  } catch (err) {
    // The benchmark's own figures stand without it.
    return { none: `measuring the ${CPU_LABEL[kind]} peak failed: ${err instanceof Error ? err.message : String(err)}` };
  }
}
