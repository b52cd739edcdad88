// GEMM benchmark: the engine's f32 GEMM (native/cpu/gemm.cc) on the training shapes of a
// SmolLM2-135M-sized decoder, in the three orientations training uses, at 1 and 2 threads, with
// OpenBLAS sgemm (through NumPy) measured in the same run as the peer.
//
//   npx tsx bench/gemm.ts [--threads 1,2] [--no-peer] [--python python3]
//
// Orientations for C[M,N] (+)= op(A) op(B): NT = x W^T (forward, B stored [N,K]), NN = dy W (input
// gradient, B stored [K,N]), TN = dy^T x (weight gradient, A stored [K,M]). The lm_head shape runs
// with a bf16 B in every orientation (the engine widens it while packing; the peer has no bf16
// GEMM and multiplies the f32 copy). Timing happens natively (opRun('gemm_bench') returns each
// call's seconds), so JS overhead is not measured; each row is the median over its calls.
//
// A second table (CPUs with AVX512-BF16) times the bf16-weight GEMMs of training, forward NT and
// input gradient NN at all four training shapes with a bf16 B, on the bf16 path (isa avx512bf16: A
// rounded to bf16, f32 accumulation) with AMX tiles where the CPU has them and with vdpbf16ps
// (SEALKIT_AMX=0), and on the f32 path they replace (isa avx512: B widened while packing), all
// three in turn per shape in the same run. --only-bf16 skips the first table and the peer.
//
// A third table times LoRA's narrow-result GEMMs (rank 16 against SmolLM2's widths: xa = x A^T is
// NT, dxa = dy B is NN, dB = dy^T xa and dA = dxa^T x are TN) on the low-rank kernels (native/cpu/gemm_lowrank.cc)
// and on the packed path it replaces (SEALKIT_LOWRANK=0), alternating. --only-lowrank runs only it.
// Prints the tables, then one JSON object as the last line.
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { median } from '../lib/bench/median.js';
import { randomF32, toBf16 } from '../lib/bench/operands.js';
import { native } from '../lib/native.js';

type Orient = 'NT' | 'NN' | 'TN';
interface Row {
  M: number;
  N: number;
  K: number;
  orient: Orient;
  bDtype: 'f32' | 'bf16';
  threads: number;
  isa: string;
  engine_gflops: number;
  engine_calls: number;
  peer_gflops: number | null;
}

const { values: opts } = parseArgs({
  options: {
    threads: { type: 'string', default: '1,2' },
    'no-peer': { type: 'boolean', default: false },
    python: { type: 'string', default: 'python3' },
    'only-bf16': { type: 'boolean', default: false },
    'only-lowrank': { type: 'boolean', default: false },
  },
});

const SHAPES: { M: number; N: number; K: number; bDtype: 'f32' | 'bf16' }[] = [
  { M: 1024, N: 576, K: 576, bDtype: 'f32' },
  { M: 1024, N: 1536, K: 576, bDtype: 'f32' },
  { M: 1024, N: 576, K: 1536, bDtype: 'f32' },
  { M: 1024, N: 49152, K: 576, bDtype: 'bf16' },
];
const ORIENTS: Orient[] = ['NT', 'NN', 'TN'];
const LORA_RANK = 16;
const LOWRANK_SHAPES: { M: number; N: number; K: number; orient: Orient; what: string }[] = [576, 1536].flatMap((w) => [
  { M: 1024, N: LORA_RANK, K: w, orient: 'NT' as const, what: `xa = x A^T, in ${w}` },
  { M: 1024, N: LORA_RANK, K: w, orient: 'NN' as const, what: `dxa = dy B, out ${w}` },
  { M: w, N: LORA_RANK, K: 1024, orient: 'TN' as const, what: `dB = dy^T xa, out ${w}` },
  { M: LORA_RANK, N: w, K: 1024, orient: 'TN' as const, what: `dA = dxa^T x, in ${w}` },
]);
const threadCounts = opts.threads.split(',').map(Number);
if (threadCounts.some((t) => !Number.isInteger(t) || t < 1)) throw new Error(`--threads: expected e.g. 1,2, got '${opts.threads}'`);

const addon = native();

function engineGflops(M: number, N: number, K: number, orient: Orient, bDtype: 'f32' | 'bf16'): { gflops: number; calls: number } {
  const transA = orient === 'TN', transB = orient === 'NT';
  const A = randomF32(M * K, 1);
  const Bf = randomF32(N * K, 2);
  const B = bDtype === 'bf16' ? toBf16(Bf) : Bf;
  const args = { M, N, K, transA, transB, A, B, bDtype };
  // One timed call (after the kernel's own warm-up) sizes the run to ~0.6 s, 3..20 calls.
  const probe = addon.opRun('gemm_bench', 'f32', { ...args, iters: 1 }).times as Float64Array;
  const iters = Math.min(20, Math.max(3, Math.ceil(0.6 / probe[0]!)));
  const times = addon.opRun('gemm_bench', 'f32', { ...args, iters }).times as Float64Array;
  return { gflops: (2 * M * N * K) / median(Array.from(times)) / 1e9, calls: iters };
}

const PEER = `
import json, sys, time
import numpy as np
cases = json.loads(sys.argv[1])
res = []
for c in cases:
    M, N, K, o = c['M'], c['N'], c['K'], c['orient']
    g = np.random.default_rng(0)
    A = g.standard_normal((K, M) if o == 'TN' else (M, K), dtype=np.float32)
    B = g.standard_normal((N, K) if o == 'NT' else (K, N), dtype=np.float32)
    a = A.T if o == 'TN' else A
    b = B.T if o == 'NT' else B
    out = np.empty((M, N), dtype=np.float32)
    np.matmul(a, b, out=out)
    t0 = time.perf_counter(); np.matmul(a, b, out=out); probe = time.perf_counter() - t0
    iters = min(20, max(3, int(0.6 / probe) + 1))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter(); np.matmul(a, b, out=out); ts.append(time.perf_counter() - t0)
    res.append(2 * M * N * K / float(np.median(ts)) / 1e9)
print(json.dumps(res))
`;

/** OpenBLAS sgemm GFLOP/s per case at `threads`, or null when NumPy is not available. */
function peerGflops(cases: { M: number; N: number; K: number; orient: Orient }[], threads: number): (number | null)[] {
  if (opts['no-peer']) return cases.map(() => null);
  const env = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  const r = spawnSync(opts.python, ['-c', PEER, JSON.stringify(cases)], { env, encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) {
    console.error(`peer (NumPy/OpenBLAS) unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
    return cases.map(() => null);
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as number[];
}

interface Bf16Row {
  M: number;
  N: number;
  K: number;
  orient: Orient;
  threads: number;
  amx_gflops: number | null;
  dpbf16_gflops: number;
  f32_gflops: number;
}

/** Whether the bf16 path runs on AMX here: its bits differ from the vdpbf16ps kernel's. */
function amxInUse(): boolean {
  const saved = process.env.SEALKIT_AMX;
  const M = 64, N = 64, K = 512;
  const args = { M, N, K, transB: true, A: randomF32(M * K, 3), B: toBf16(randomF32(N * K, 4)), bDtype: 'bf16' };
  try {
    addon.setIsa('avx512bf16');
    delete process.env.SEALKIT_AMX;
    const a = addon.opRun('gemm', 'f32', args).C as Float32Array;
    process.env.SEALKIT_AMX = '0';
    const b = addon.opRun('gemm', 'f32', args).C as Float32Array;
    return a.some((x, i) => x !== b[i]);
  } finally {
    if (saved === undefined) delete process.env.SEALKIT_AMX;
    else process.env.SEALKIT_AMX = saved;
  }
}

const savedThreads = addon.info().threads;
const savedIsa = addon.info().isa;
const rows: Row[] = [];
const bf16Rows: Bf16Row[] = [];
const hasBf16 = addon.info().isaDetected === 'avx512bf16';
const savedAmxEnv = process.env.SEALKIT_AMX;
const savedLowrankEnv = process.env.SEALKIT_LOWRANK;
interface LowrankRow { M: number; N: number; K: number; orient: Orient; what: string; threads: number; lowrank_gflops: number; packed_gflops: number }
const lowrankRows: LowrankRow[] = [];
const hasAmx = hasBf16 && amxInUse();
try {
  for (const threads of threadCounts) {
    addon.setThreads(threads);
    for (const c of LOWRANK_SHAPES) {
      const runs: { lowrank: number[]; packed: number[] } = { lowrank: [], packed: [] };
      for (let rep = 0; rep < 3; rep++) {
        delete process.env.SEALKIT_LOWRANK;
        runs.lowrank.push(engineGflops(c.M, c.N, c.K, c.orient, 'f32').gflops);
        process.env.SEALKIT_LOWRANK = '0';
        runs.packed.push(engineGflops(c.M, c.N, c.K, c.orient, 'f32').gflops);
      }
      lowrankRows.push({ ...c, threads, lowrank_gflops: median(runs.lowrank), packed_gflops: median(runs.packed) });
    }
  }
  if (savedLowrankEnv === undefined) delete process.env.SEALKIT_LOWRANK;
  else process.env.SEALKIT_LOWRANK = savedLowrankEnv;
  if (hasBf16 && !opts['only-lowrank']) {
    for (const threads of threadCounts) {
      addon.setThreads(threads);
      for (const s of SHAPES) {
        for (const orient of ['NT', 'NN'] as const) {
          addon.setIsa('avx512bf16');
          delete process.env.SEALKIT_AMX;
          const amx = hasAmx ? engineGflops(s.M, s.N, s.K, orient, 'bf16').gflops : null;
          process.env.SEALKIT_AMX = '0';
          const dp = engineGflops(s.M, s.N, s.K, orient, 'bf16').gflops;
          addon.setIsa('avx512');
          const old = engineGflops(s.M, s.N, s.K, orient, 'bf16').gflops;
          bf16Rows.push({ M: s.M, N: s.N, K: s.K, orient, threads, amx_gflops: amx, dpbf16_gflops: dp, f32_gflops: old });
        }
      }
    }
  }
  for (const threads of opts['only-bf16'] || opts['only-lowrank'] ? [] : threadCounts) {
    addon.setThreads(threads);
    const cases = SHAPES.flatMap((s) => ORIENTS.map((orient) => ({ ...s, orient })));
    const peer = peerGflops(cases, threads);
    cases.forEach((c, i) => {
      const e = engineGflops(c.M, c.N, c.K, c.orient, c.bDtype);
      rows.push({ ...c, threads, isa: addon.info().isa, engine_gflops: e.gflops, engine_calls: e.calls, peer_gflops: peer[i] ?? null });
    });
  }
} finally {
  addon.setThreads(savedThreads);
  addon.setIsa(savedIsa);
  if (savedAmxEnv === undefined) delete process.env.SEALKIT_AMX;
  else process.env.SEALKIT_AMX = savedAmxEnv;
  if (savedLowrankEnv === undefined) delete process.env.SEALKIT_LOWRANK;
  else process.env.SEALKIT_LOWRANK = savedLowrankEnv;
}

const fmt = (x: number | null) => (x === null ? '-' : x.toFixed(1));
const header = ['shape MxNxK', 'orient', 'B', 'threads', 'engine GFLOP/s', 'OpenBLAS GFLOP/s', 'engine/peer'];
const body = rows.map((r) => [
  `${r.M}x${r.N}x${r.K}`, r.orient, r.bDtype, String(r.threads), fmt(r.engine_gflops), fmt(r.peer_gflops),
  r.peer_gflops ? (r.engine_gflops / r.peer_gflops).toFixed(2) : '-',
]);
const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
if (rows.length) {
  console.log(`isa ${addon.info().isa}; medians of natively timed calls; peer: OpenBLAS sgemm via NumPy (f32 B)`);
  console.log(line(header));
  for (const b of body) console.log(line(b));
}
if (bf16Rows.length) {
  const h2 = ['shape MxNxK', 'orient', 'threads', 'AMX GFLOP/s', 'vdpbf16ps GFLOP/s', 'f32-path GFLOP/s', 'AMX/f32', 'vdpbf16ps/f32'];
  const b2 = bf16Rows.map((r) => [
    `${r.M}x${r.N}x${r.K}`, r.orient, String(r.threads), fmt(r.amx_gflops), fmt(r.dpbf16_gflops), fmt(r.f32_gflops),
    r.amx_gflops === null ? '-' : (r.amx_gflops / r.f32_gflops).toFixed(2), (r.dpbf16_gflops / r.f32_gflops).toFixed(2),
  ]);
  const w2 = h2.map((h, i) => Math.max(h.length, ...b2.map((b) => b[i]!.length)));
  console.log(`\nbf16 B (AMX ${hasAmx ? 'in use' : 'not available'}): isa avx512bf16 (A rounded to bf16) on AMX and on vdpbf16ps, vs the f32 path (isa avx512, B widened)`);
  console.log(h2.map((c, i) => c.padStart(w2[i]!)).join('  '));
  for (const b of b2) console.log(b.map((c, i) => c.padStart(w2[i]!)).join('  '));
}
if (lowrankRows.length) {
  const h3 = ['LoRA GEMM (r 16)', 'shape MxNxK', 'orient', 'threads', 'low-rank GFLOP/s', 'packed GFLOP/s', 'low-rank/packed'];
  const b3 = lowrankRows.map((r) => [
    r.what, `${r.M}x${r.N}x${r.K}`, r.orient, String(r.threads), fmt(r.lowrank_gflops), fmt(r.packed_gflops), (r.lowrank_gflops / r.packed_gflops).toFixed(2),
  ]);
  const w3 = h3.map((h, i) => Math.max(h.length, ...b3.map((b) => b[i]!.length)));
  console.log(`\nLoRA narrow-result GEMMs, f32: low-rank kernel vs the packed path (SEALKIT_LOWRANK=0); medians of 3 alternating runs`);
  console.log(h3.map((c, i) => c.padStart(w3[i]!)).join('  '));
  for (const b of b3) console.log(b.map((c, i) => c.padStart(w3[i]!)).join('  '));
}
console.log(JSON.stringify({ bench: 'gemm', amx: hasAmx, rows, bf16_rows: bf16Rows, lowrank_rows: lowrankRows }));
