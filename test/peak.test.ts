// The measured peaks MFU is reported against (native measurePeak, native/cpu/peak.h) and the
// choice of which one a benchmark uses (lib/bench/peak-reference.ts).
//
// Oracle for the FLOP accounting: a real f32 GEMM timed on the same threads. A GEMM cannot run
// faster than the FMA it is made of, so its GFLOP/s must stay below the FP32 FMA peak (a loop that
// counted half its FLOPs would fail here), and a blocked GEMM of this size reaches a good share of
// it (a loop that counted twice its FLOPs would put the GEMM under that share).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpuPeakKind, gpuDatasheet, peakReference } from '../lib/bench/peak-reference.js';
import { native } from '../lib/native.js';
import { keepingThreads } from './helpers/threads.js';

const addon = native();
const info = addon.info();
const hasFma = info.isa === 'avx2' || info.isa === 'avx512' || info.isa === 'avx512bf16';
const fmaTest = hasFma ? test : test.skip;

fmaTest('measurePeak: FP32 FMA GFLOP/s on every pool thread, one share per thread', () => {
  keepingThreads(() => {
    for (const threads of [1, 2]) {
      const n = addon.setThreads(threads);
      const m = addon.measurePeak('fp32_fma', { trialMs: 5, trials: 3 });
      assert.is(m.kind, 'fp32_fma');
      assert.is(m.threads, n);
      assert.ok(m.trials >= 1 && m.trials <= 3, `trials ${m.trials}`);
      assert.ok(Number.isFinite(m.gflops) && m.gflops > 1 && m.gflops < 1e5, `${m.gflops} GFLOP/s`);
    }
  });
});

fmaTest('measurePeak: a timed f32 GEMM stays below the FP32 FMA peak and reaches a share of it', () => {
  keepingThreads(() => {
    addon.setThreads(1);
    const M = 256, N = 256, K = 512;
    const A = new Float32Array(M * K).map((_, i) => ((i * 7919) % 13) / 13 - 0.5);
    const B = new Float32Array(K * N).map((_, i) => ((i * 104729) % 17) / 17 - 0.5);
    const gemmGflops = () => {
      const r = addon.opRun('gemm_bench', 'f32', { M, N, K, A, B, C: new Float32Array(M * N), iters: 7 }) as unknown as { times: Float64Array };
      const best = Math.min(...r.times);
      return (2 * M * N * K) / best / 1e9;
    };
    // Best of a few of each, alternating: the shared machine's speed moves between calls.
    let gemm = 0, peak = 0;
    for (let i = 0; i < 3; i++) {
      gemm = Math.max(gemm, gemmGflops());
      peak = Math.max(peak, addon.measurePeak('fp32_fma', { trialMs: 10, trials: 3 }).gflops);
    }
    assert.ok(gemm <= 1.1 * peak, `GEMM ${gemm.toFixed(1)} GFLOP/s above the FMA peak ${peak.toFixed(1)}`);
    // Instrumented builds slow the GEMM's loads, not the register-only peak loop.
    if (!info.sanitized) assert.ok(gemm >= 0.2 * peak, `GEMM ${gemm.toFixed(1)} GFLOP/s under a fifth of the FMA peak ${peak.toFixed(1)}`);
  });
});

(info.isa === 'avx512bf16' ? test : test.skip)('measurePeak: vdpbf16ps under AVX512-BF16', () => {
  const m = addon.measurePeak('bf16_dot', { trialMs: 5, trials: 2 });
  assert.is(m.kind, 'bf16_dot');
  assert.ok(Number.isFinite(m.gflops) && m.gflops > 1, `${m.gflops} GFLOP/s`);
});

test('measurePeak: unknown kinds, bad options and instructions this CPU lacks are errors that say so', () => {
  assert.throws(() => addon.measurePeak('fp64' as 'fp32_fma'), /unknown kind 'fp64' \(fp32_fma\|bf16_dot\|amx_bf16\)/);
  assert.throws(() => addon.measurePeak('fp32_fma', { trials: 0 }), /options\.trials must be an integer in \[1, 100\]/);
  assert.throws(() => addon.measurePeak('fp32_fma', { trials: 2.5 }), /options\.trials must be an integer/);
  assert.throws(() => addon.measurePeak('fp32_fma', { trialMs: -1 }), /options\.trialMs/);
  if (!info.amx) assert.throws(() => addon.measurePeak('amx_bf16'), /measurePeak\(amx_bf16\): the bf16 GEMMs do not run on AMX tiles/);
  if (info.isa !== 'avx512bf16') assert.throws(() => addon.measurePeak('bf16_dot'), /vdpbf16ps needs AVX512-BF16/);
});

test('cpuPeakKind: the instruction each storage multiplies with at each ISA', () => {
  assert.is(cpuPeakKind({ isa: 'avx512bf16', amx: false }, 'bf16'), 'bf16_dot');
  assert.is(cpuPeakKind({ isa: 'avx512bf16', amx: true }, 'bf16'), 'amx_bf16');
  assert.is(cpuPeakKind({ isa: 'avx512bf16', amx: false }, 'f32'), 'fp32_fma');
  assert.is(cpuPeakKind({ isa: 'avx512', amx: false }, 'bf16'), 'fp32_fma');  // bf16 widened into f32 FMAs
  assert.is(cpuPeakKind({ isa: 'avx2', amx: false }, 'bf16'), 'fp32_fma');
  assert.is(cpuPeakKind({ isa: 'scalar', amx: false }, 'f32'), null);
});

test('gpuDatasheet: dense bf16 peaks by GPU name, none for an unknown one', () => {
  assert.is(gpuDatasheet('NVIDIA H100 80GB HBM3')?.bf16_tflops, 989);
  assert.is(gpuDatasheet('NVIDIA H100 PCIe')?.bf16_tflops, 756);
  assert.is(gpuDatasheet('NVIDIA H200')?.hbm_tbs, 4.8);
  assert.is(gpuDatasheet('NVIDIA A100-SXM4-80GB')?.hbm_tbs, 2.039);
  assert.is(gpuDatasheet('NVIDIA GeForce RTX 4090'), null);
});

test('peakReference: measured on the CPU where the ISA has one, a reason where not', () => {
  const ref = peakReference(addon, 'cpu', 'bf16');
  if (hasFma) {
    assert.ok('gflops' in ref, JSON.stringify(ref));
    if ('gflops' in ref) {
      assert.is(ref.kind, cpuPeakKind(info, 'bf16'));
      assert.is(ref.source, 'measured');
      assert.match(ref.basis, /on \d+ threads?, measured/);
    }
  } else {
    assert.ok('none' in ref);
  }
  const gpu = peakReference(addon, 'cuda', 'bf16');
  if (!info.gpus?.length) assert.ok('none' in gpu && /no GPU name/.test(gpu.none), JSON.stringify(gpu));
});

test.run();
