// Decode GEMV benchmark: what bounds y = x W^T at decoding's row counts. The engine's few-rows path
// (native/cpu/gemm.cc: bf16 W streamed straight into vdpbf16ps under AVX512-BF16, or widened in
// registers into f32 FMAs under plain AVX-512) runs on a 576-wide bf16 W at 1-16 rows of x, with W
// in L2, in L3 and far larger than the caches, alternating, on the thread count given. Against the
// same run's peak of the instruction that path multiplies with (bench/peak.c: vdpbf16ps, or FP32 FMA):
//  - memory-bound rows stream W faster in cache than from memory, and their time hardly grows with
//    the row count;
//  - compute-bound rows stream W at the same rate in and out of cache, and their time grows with the
//    row count (each row is 2 FLOPs per weight).
//
//   npx tsx bench/gemv.ts [--threads 2] [--rows 1,2,4,8,16] [--rounds 3] [--json]
//
// Timing happens natively (opRun('gemm_bench') returns each call's seconds); each cell is the
// median over rounds of each round's median call. Prints a table, then one JSON object as the last
// line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from '../lib/bench/median.js';
import { buildPeak } from '../lib/bench/peak.js';
import { native } from '../lib/native.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values: opts } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    rows: { type: 'string', default: '1,2,4,8,16' },
    rounds: { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
  },
});
const threads = Number(opts.threads);
const rounds = Number(opts.rounds);
const rowCounts = opts.rows.split(',').map(Number);
if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads: expected a positive integer, got '${opts.threads}'`);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: expected a positive integer, got '${opts.rounds}'`);
if (rowCounts.some((m) => !Number.isInteger(m) || m < 1 || m > 16)) throw new Error(`--rows: expected row counts in 1..16, got '${opts.rows}'`);

const addon = native();
const isa = addon.info().isaDetected;
if (isa !== 'avx512bf16' && isa !== 'avx512') {
  console.log(`skip: the few-rows path needs AVX-512 (this CPU: ${isa})`);
  process.exit(0);
}
// The peak that bounds the path: vdpbf16ps products under AVX512-BF16, f32 FMAs otherwise.
const PEAK = isa === 'avx512bf16' ? { key: 'bf16_dot', label: 'vdpbf16ps' } : { key: 'fp32_fma', label: 'FP32 FMA' };
addon.setThreads(threads);

const K = 576;  // SmolLM2-135M's hidden size: the q/k/v/o, gate/up and LM-head GEMVs' width
// Where W lives between calls: each thread's share in its core's L2 (~440 KB a thread), in L3
// (8.8 MB in all), or in memory (127 MB, far past any L3 here).
const PLACES = [
  { name: 'L2', N: 384 * threads },
  { name: 'L3', N: 7680 },
  { name: 'memory', N: 110_592 },
] as const;
type Place = (typeof PLACES)[number];

/** The path's peak (PEAK) on `threads` threads (GFLOP/s, best of trials), or null without cc. */
function pathPeak(): number | null {
  const dir = mkdtempSync(join(os.tmpdir(), 'sealkit-gemv-'));
  try {
    const exe = join(dir, 'peak');
    if (!buildPeak(ROOT, exe).ok) return null;
    const r = spawnSync(exe, ['--threads', String(threads), '--trials', '5', '--ms', '100', '--stream-mib', '256'], { encoding: 'utf8' });
    const last = r.stdout?.trim().split('\n').pop();
    if (r.status !== 0 || !last) return null;
    const j = JSON.parse(last) as Record<string, { best: number } | undefined>;
    return Math.max(j[`${PEAK.key}_gflops_nt`]?.best ?? 0, (j[`${PEAK.key}_gflops_1t`]?.best ?? 0) * threads) || null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const weights = new Map<number, Uint16Array>();
function weightsOf(N: number): Uint16Array {
  let w = weights.get(N);
  if (!w) {
    w = new Uint16Array(N * K);
    for (let i = 0; i < w.length; i++) w[i] = 0x3c00 + (i % 97);  // bf16 values near 0.008
    weights.set(N, w);
  }
  return w;
}

/** Median seconds of one y = x W^T call (M rows, W N x K bf16). */
function timeCall(M: number, N: number): number {
  const A = Float32Array.from({ length: M * K }, (_, i) => ((i % 13) - 6) / 7);
  const args = { M, N, K, transA: false, transB: true, lda: K, ldb: K, ldc: N, alpha: 1, beta: 0, A, B: weightsOf(N), bDtype: 'bf16', C: new Float32Array(M * N) };
  const probe = (addon.opRun('gemm_bench', 'f32', { ...args, iters: 1 }).times as Float64Array)[0]!;
  const iters = Math.min(200, Math.max(5, Math.ceil(0.3 / probe)));
  return median(Array.from(addon.opRun('gemm_bench', 'f32', { ...args, iters }).times as Float64Array));
}

const peakBefore = pathPeak();
const samples = new Map<string, number[]>();
for (let r = 0; r < rounds; r++)
  for (const M of rowCounts)
    for (const p of PLACES) {
      const key = `${M}/${p.name}`;
      samples.set(key, [...(samples.get(key) ?? []), timeCall(M, p.N)]);
    }
const peakAfter = pathPeak();
const peak = peakBefore === null && peakAfter === null ? null : Math.max(peakBefore ?? 0, peakAfter ?? 0);

interface Cell { seconds: number; w_gb_s: number; gflops: number; peak_share: number | null }
const rows = rowCounts.map((M) => {
  const cell = (p: Place): Cell => {
    const seconds = median(samples.get(`${M}/${p.name}`)!);
    const gflops = (2 * M * p.N * K) / seconds / 1e9;
    return { seconds, w_gb_s: (p.N * K * 2) / seconds / 1e9, gflops, peak_share: peak ? gflops / peak : null };
  };
  const cells = Object.fromEntries(PLACES.map((p) => [p.name, cell(p)])) as Record<Place['name'], Cell>;
  return { rows: M, ...cells, memory_over_l2: cells.memory.w_gb_s / cells.L2.w_gb_s };
});

const pct = (x: number | null) => (x === null ? '—' : `${(100 * x).toFixed(0)}%`);
console.log(`decode GEMV, y = x W^T, bf16 W ${K} wide, isa ${isa}: ${threads} thread(s), ${rounds} round(s), medians`);
console.log(`${PEAK.label} peak (bench/peak.c, before/after): ${peakBefore?.toFixed(0) ?? '—'} / ${peakAfter?.toFixed(0) ?? '—'} GFLOP/s`);
const head = PLACES.map((p) => `${`W in ${p.name} (${((p.N * K * 2) / 1e6).toFixed(1)} MB)`.padEnd(29)}`).join(' | ');
console.log(`rows | ${head} | memory / L2`);
console.log(`     | ${PLACES.map(() => 'GB/s  GFLOP/s  of peak'.padStart(29)).join(' | ')} |`);
for (const r of rows) {
  const cells = PLACES.map((p) => {
    const c = r[p.name];
    return `${c.w_gb_s.toFixed(1).padStart(11)} ${c.gflops.toFixed(0).padStart(8)} ${pct(c.peak_share).padStart(8)}`;
  });
  console.log(`${String(r.rows).padStart(4)} | ${cells.join(' | ')} | ${r.memory_over_l2.toFixed(2).padStart(11)}`);
}
console.log('memory / L2 near 1, with GFLOP/s at a steady share of the peak: compute-bound rows; well below 1: memory-bound rows.');
console.log(JSON.stringify({ bench: 'gemv', isa, threads, rounds, K, peak: PEAK.key, peak_gflops: peak, rows }));
